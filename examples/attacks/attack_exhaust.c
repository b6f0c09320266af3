/*
 * attack_exhaust — take more of the router than the tenant's quota gives.
 *
 * From two sessions at once (quotas count all of a tenant's sessions), we
 * allocate PDs, register MRs, create CQs and QPs until the router says no,
 * and ask for queues deeper than allowed. A tenant that could do this
 * without bound would starve every other tenant of the router's memory and
 * file descriptors. At the end we free one QP and check that one fits
 * again: the quota is a ceiling, not a trap.
 *
 * Input:  deep_send= deep_recv= deep_cq= (one above the tenant's quotas)
 * Output: RESULT pd|mr|cq|qp refused errno=ENOMEM count=<objects we got>
 *         RESULT mr_too_large refused errno=ENOMEM
 *         RESULT deep_send_queue|deep_recv_queue|huge_send_queue|huge_recv_queue|
 *                deep_cq|huge_cq refused errno=EINVAL
 *         RESULT qp_after_free allowed errno=0
 * ("BREACH count=<n>" if we got LIMIT objects without a refusal.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "attack_common.h"

#define LIMIT 256

static struct ibv_context *open_ctx(void)
{
	struct ibv_device **list;
	struct ibv_context *ctx;
	int n = 0;

	list = ibv_get_device_list(&n);
	if (!list || n < 1)
		setup_failed("ibv_get_device_list", ENODEV);
	ctx = ibv_open_device(list[0]);
	ibv_free_device_list(list);
	if (!ctx)
		setup_failed("ibv_open_device", errno);
	return ctx;
}

static void report(const char *name, int count, int err)
{
	if (count >= LIMIT)
		result(name, "BREACH", "count=%d", count);
	else
		result(name, "refused", "errno=%s count=%d", errno_name(err), count);
}

static struct ibv_qp *qp_of(struct ibv_pd *pd, struct ibv_cq *cq, uint32_t send, uint32_t recv)
{
	struct ibv_qp_init_attr a = {
		.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = send, .max_recv_wr = recv, .max_send_sge = 1, .max_recv_sge = 1 },
	};

	return ibv_create_qp(pd, &a);
}

int main(void)
{
	struct ibv_context *ctx[2];
	struct ibv_pd *pds[LIMIT];
	struct ibv_cq *cqs[LIMIT];
	struct ibv_qp *qps[LIMIT], *qp;
	struct ibv_mr *mr;
	int npd = 0, nmr = 0, ncq = 0, nqp = 0, err = 0;
	uint32_t deep_send, deep_recv, deep_cq;
	char *pages, *large;
	struct ibv_cq *big;
	const char *line;

	attack_init();
	ctx[0] = open_ctx();
	ctx[1] = open_ctx();
	pages = mmap(NULL, LIMIT * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	large = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pages == MAP_FAILED || large == MAP_FAILED)
		setup_failed("mmap", errno);
	say("HELLO");
	line = hear();
	deep_send = (uint32_t)need_u64(line, "deep_send");
	deep_recv = (uint32_t)need_u64(line, "deep_recv");
	deep_cq = (uint32_t)need_u64(line, "deep_cq");

	for (; npd < LIMIT; npd++) {
		if (!(pds[npd] = ibv_alloc_pd(ctx[npd % 2]))) {
			err = errno;
			break;
		}
	}
	report("pd", npd, err);
	if (npd < 2)
		setup_failed("fewer than 2 PDs", err);

	/* One page each, every other page: no two share a backing. */
	for (err = 0; nmr < LIMIT / 2; nmr++) {
		if (!ibv_reg_mr(pds[nmr % 2], pages + 2 * nmr * 4096, 4096, IBV_ACCESS_LOCAL_WRITE)) {
			err = errno;
			break;
		}
	}
	report("mr", nmr < LIMIT / 2 ? nmr : LIMIT, err);

	for (err = 0; ncq < LIMIT; ncq++) {
		if (!(cqs[ncq] = ibv_create_cq(ctx[ncq % 2], 16, NULL, NULL, 0))) {
			err = errno;
			break;
		}
	}
	report("cq", ncq, err);
	if (ncq < 3)
		setup_failed("fewer than 3 CQs", err);
	/* With room for one more CQ, ask for too deep a one. */
	if (ibv_destroy_cq(cqs[--ncq]))
		setup_failed("ibv_destroy_cq", 0);
	big = ibv_create_cq(ctx[0], (int)deep_cq, NULL, NULL, 0);
	result("deep_cq", big ? "BREACH" : "refused", "errno=%s", errno_name(big ? 0 : errno));
	big = ibv_create_cq(ctx[0], 1 << 30, NULL, NULL, 0);
	result("huge_cq", big ? "BREACH" : "refused", "errno=%s", errno_name(big ? 0 : errno));

	for (err = 0; nqp < LIMIT; nqp++) {
		/* A QP's PD and CQs must be of one session. */
		if (!(qps[nqp] = qp_of(pds[nqp % 2], cqs[nqp % 2], 16, 16))) {
			err = errno;
			break;
		}
	}
	report("qp", nqp, err);

	/* With room for one more QP, ask for too deep a queue. */
	if (nqp > 0 && ibv_destroy_qp(qps[--nqp]) == 0) {
		const struct { const char *name; uint32_t send, recv; } deep[] = {
			{ "deep_send_queue", deep_send, 16 },
			{ "deep_recv_queue", 16, deep_recv },
			{ "huge_send_queue", 1u << 20, 16 },
			{ "huge_recv_queue", 16, UINT32_MAX },
		};

		for (size_t i = 0; i < sizeof(deep) / sizeof(deep[0]); i++) {
			qp = qp_of(pds[0], cqs[0], deep[i].send, deep[i].recv);
			result(deep[i].name, qp ? "BREACH" : "refused", "errno=%s", errno_name(qp ? 0 : errno));
			if (qp)
				ibv_destroy_qp(qp);
		}
		qp = qp_of(pds[0], cqs[0], 16, 16);
		result("qp_after_free", qp ? "allowed" : "failed", "errno=%s", errno_name(qp ? 0 : errno));
	}

	/* Registered bytes: one region larger than largestRegionBytes. */
	mr = ibv_reg_mr(pds[0], large, 1 << 20, IBV_ACCESS_LOCAL_WRITE);
	result("mr_too_large", mr ? "BREACH" : "refused", "errno=%s", errno_name(mr ? 0 : errno));
	attack_exit();
}
