/*
 * attack_access — do what a region's (or a QP's) access flags do not allow.
 *
 * The victim registered, and gave us the keys of:
 *   ro  (REMOTE_READ only)          we WRITE to it
 *   nr  (REMOTE_WRITE, no READ)     we READ from it
 *   na  (WRITE|READ, no ATOMIC)     we fetch-and-add and compare-and-swap on it
 *   at  (REMOTE_ATOMIC)             atomics that must work (the control), one
 *                                   unaligned and one with a 4-byte local SGE
 * over a QP whose qp_access_flags allow everything, and a second victim QP
 * whose qp_access_flags allow nothing remote, to which we WRITE into na.
 *
 * Input:  qpn= lid= (victim QP, all rights)  v2_qpn= v2_lid= (no rights)
 *         ro_addr= ro_rkey= nr_addr= nr_rkey= na_addr= na_rkey= at_addr= at_rkey=
 * Output: RESULT write_read_only|read_without_remote_read|fetch_add_without_atomic|
 *                cmp_swap_without_atomic|write_qp_without_access refused status=...
 *         RESULT fetch_add_allowed allowed status=IBV_WC_SUCCESS old=<n>
 *         RESULT cmp_swap_allowed allowed status=IBV_WC_SUCCESS old=<n>
 *         RESULT atomic_unaligned|atomic_short_sge refused status=...
 */
#include <string.h>

#include "attack_common.h"

static struct ep e;
static struct ibv_qp *qp;
static struct dest d;
static struct ibv_mr *mr;
static const int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
		      IBV_ACCESS_REMOTE_ATOMIC;

/* After an error the QP is in ERR: start over. */
static void fresh(struct ibv_qp *q, const struct dest *to)
{
	int err = qp_reconnect(q, to, rw);

	if (err)
		setup_failed("qp_reconnect", err);
}

int main(void)
{
	uint64_t ro_addr, nr_addr, na_addr, at_addr, *local;
	uint32_t ro_rkey, nr_rkey, na_rkey, at_rkey;
	struct ibv_qp *qp2;
	struct dest d2;
	const char *line;
	outcome o;

	attack_init();
	ep_open(&e);
	qp = ep_create_qp(&e, e.pd);
	qp2 = ep_create_qp(&e, e.pd);
	mr = ep_reg(e.pd, 4096, rw);
	local = mr->addr;
	say_hello(&e, qp, qp2);
	line = hear();
	d = need_dest(line, "");
	d2 = need_dest(line, "v2_");
	ro_addr = need_u64(line, "ro_addr");
	ro_rkey = (uint32_t)need_u64(line, "ro_rkey");
	nr_addr = need_u64(line, "nr_addr");
	nr_rkey = (uint32_t)need_u64(line, "nr_rkey");
	na_addr = need_u64(line, "na_addr");
	na_rkey = (uint32_t)need_u64(line, "na_rkey");
	at_addr = need_u64(line, "at_addr");
	at_rkey = (uint32_t)need_u64(line, "at_rkey");

	fresh(qp, &d);
	memset(mr->addr, 0xee, 64);
	o = rdma(&e, qp, IBV_WR_RDMA_WRITE, mr->addr, 64, mr->lkey, ro_addr, ro_rkey);
	expect_refused("write_read_only", o, NULL);

	fresh(qp, &d);
	memset(mr->addr, 0, 64);
	o = rdma(&e, qp, IBV_WR_RDMA_READ, mr->addr, 64, mr->lkey, nr_addr, nr_rkey);
	expect_refused("read_without_remote_read", o, NULL);
	if (!all_zero(mr->addr, 64))
		result("read_without_remote_read_bytes", "BREACH", NULL);

	fresh(qp, &d);
	*local = 0;
	o = atomic_op(&e, qp, IBV_WR_ATOMIC_FETCH_AND_ADD, local, 8, mr->lkey, na_addr, na_rkey, 1, 0);
	expect_refused("fetch_add_without_atomic", o, NULL);

	fresh(qp, &d);
	o = atomic_op(&e, qp, IBV_WR_ATOMIC_CMP_AND_SWP, local, 8, mr->lkey, na_addr, na_rkey, 0, 0x4141414141414141ULL);
	expect_refused("cmp_swap_without_atomic", o, NULL);

	/* The control: with REMOTE_ATOMIC on the region, the same work. */
	fresh(qp, &d);
	*local = 0;
	o = atomic_op(&e, qp, IBV_WR_ATOMIC_FETCH_AND_ADD, local, 8, mr->lkey, at_addr, at_rkey, 5, 0);
	expect_allowed("fetch_add_allowed", o, "old=%llu", (unsigned long long)*local);
	if (o != IBV_WC_SUCCESS)
		fresh(qp, &d);
	{
		uint64_t expected = *local + 5;

		*local = 0;
		o = atomic_op(&e, qp, IBV_WR_ATOMIC_CMP_AND_SWP, local, 8, mr->lkey, at_addr, at_rkey, expected, 0xfeed);
		expect_allowed("cmp_swap_allowed", o, "old=%llu", (unsigned long long)*local);
	}

	fresh(qp, &d);
	o = atomic_op(&e, qp, IBV_WR_ATOMIC_FETCH_AND_ADD, local, 8, mr->lkey, at_addr + 4, at_rkey, 1, 0);
	expect_refused("atomic_unaligned", o, NULL);

	fresh(qp, &d);
	o = atomic_op(&e, qp, IBV_WR_ATOMIC_FETCH_AND_ADD, local, 4, mr->lkey, at_addr, at_rkey, 1, 0);
	expect_refused("atomic_short_sge", o, NULL);

	fresh(qp2, &d2);
	memset(mr->addr, 0xee, 64);
	o = rdma(&e, qp2, IBV_WR_RDMA_WRITE, mr->addr, 64, mr->lkey, na_addr, na_rkey);
	expect_refused("write_qp_without_access", o, NULL);
	attack_exit();
}
