/*
 * attack_bounds — reach outside a region with its valid key.
 *
 * The victim grants us one region (addr, len, rkey). We first read all of
 * it (allowed: proof the key is good), then try ranges that stick out by a
 * byte on either side, and ranges whose end wraps around 2^64: with
 * remote_addr = 2^64 - 16 and 64 bytes, a check written as
 * "addr >= start && addr + len <= end" passes, and the copy would run
 * through the router's address space.
 *
 * Input:  qpn= lid= addr= rkey= len=   (len <= 4096)
 * Output: RESULT in_bounds allowed status=IBV_WC_SUCCESS fnv=<hash of the region>
 *         RESULT <case> refused status=...   for each case below
 */
#include <string.h>

#include "attack_common.h"

struct range_case {
	const char *name;
	enum ibv_wr_opcode op;
	int64_t from_start;       /* remote_addr = addr + from_start, or ... */
	uint64_t absolute;        /* ... this address when non-zero */
	int64_t extra_len;        /* length = len + extra_len, or ... */
	uint32_t length;          /* ... this length when non-zero */
};

int main(void)
{
	int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	struct ibv_qp *qp;
	struct ibv_mr *mr;
	uint64_t addr, len;
	uint32_t rkey;
	const char *line;
	struct dest d;
	struct ep e;
	outcome o;
	int err;

	attack_init();
	ep_open(&e);
	qp = ep_create_qp(&e, e.pd);
	mr = ep_reg(e.pd, 8192, rw);
	say_hello(&e, qp, NULL);
	line = hear();
	d = need_dest(line, "");
	addr = need_u64(line, "addr");
	rkey = (uint32_t)need_u64(line, "rkey");
	len = need_u64(line, "len");
	if (len > 4096)
		setup_failed("len above 4096", 0);
	if ((err = qp_connect(qp, &d, rw)))
		setup_failed("qp_connect", err);

	o = rdma(&e, qp, IBV_WR_RDMA_READ, mr->addr, (uint32_t)len, mr->lkey, addr, rkey);
	expect_allowed("in_bounds", o, "fnv=%016llx", (unsigned long long)fnv1a(mr->addr, len));

	const struct range_case cases[] = {
		{ "write_last_byte_out", IBV_WR_RDMA_WRITE, (int64_t)len - 63, 0, 0, 64 },
		{ "write_one_before", IBV_WR_RDMA_WRITE, -1, 0, 0, 64 },
		{ "read_just_past_end", IBV_WR_RDMA_READ, (int64_t)len, 0, 0, 1 },
		{ "read_one_too_long", IBV_WR_RDMA_READ, 0, 0, 1, 0 },
		{ "write_wrapping_2_64", IBV_WR_RDMA_WRITE, 0, UINT64_MAX - 15, 0, 64 },
		{ "read_wrapping_2_64", IBV_WR_RDMA_READ, 0, UINT64_MAX - 7, 0, 16 },
		{ "write_far_away", IBV_WR_RDMA_WRITE, 0, addr + (1ULL << 63), 0, 8 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct range_case *c = &cases[i];
		uint64_t raddr = c->absolute ? c->absolute : addr + (uint64_t)c->from_start;
		uint32_t n = c->length ? c->length : (uint32_t)((int64_t)len + c->extra_len);

		if ((err = qp_reconnect(qp, &d, rw)))
			setup_failed("qp_reconnect", err);
		memset(mr->addr, c->op == IBV_WR_RDMA_WRITE ? 0xee : 0, n);
		o = rdma(&e, qp, c->op, mr->addr, n, mr->lkey, raddr, rkey);
		expect_refused(c->name, o, "remote_addr=0x%llx length=%u", (unsigned long long)raddr, n);
		if (c->op == IBV_WR_RDMA_READ && !all_zero(mr->addr, n))
			result(c->name, "BREACH", "read_bytes=1");
	}
	attack_exit();
}
