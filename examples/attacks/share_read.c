/*
 * share_read — sharing that policy allows works, and only that.
 *
 * Tenant A (the owner) registered a region with REMOTE_READ and both
 * tenants' policies allow `read` between them, nothing else. We (tenant B)
 * read it whole and in pieces, then a byte past either end, then try a
 * WRITE, which neither policy allows on this connection.
 *
 * Input:  qpn= lid= addr= rkey= len=   (len >= 2048, <= 8192)
 * Output: RESULT read_whole|read_head|read_middle|read_tail allowed status=IBV_WC_SUCCESS
 *                offset=<n> length=<n> fnv=<hash of the bytes read>
 *         RESULT read_past_end|read_before_start refused status=...
 *         RESULT write_not_in_policy refused status=...
 */
#include <string.h>

#include "attack_common.h"

static const int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ;
static struct ep e;
static struct ibv_qp *qp;
static struct ibv_mr *mr;
static struct dest d;
static uint64_t addr;
static uint32_t rkey;

static void read_ok(const char *name, uint64_t offset, uint32_t length)
{
	outcome o;

	memset(mr->addr, 0, length);
	o = rdma(&e, qp, IBV_WR_RDMA_READ, mr->addr, length, mr->lkey, addr + offset, rkey);
	expect_allowed(name, o, "offset=%llu length=%u fnv=%016llx", (unsigned long long)offset, length,
		       (unsigned long long)fnv1a(mr->addr, length));
	if (o != IBV_WC_SUCCESS && qp_reconnect(qp, &d, rw))
		setup_failed("qp_reconnect", 0);
}

static void refused(const char *name, enum ibv_wr_opcode op, uint64_t raddr, uint32_t length)
{
	outcome o;

	memset(mr->addr, 0, length);
	o = rdma(&e, qp, op, mr->addr, length, mr->lkey, raddr, rkey);
	expect_refused(name, o, NULL);
	if (op == IBV_WR_RDMA_READ && !all_zero(mr->addr, length))
		result(name, "BREACH", "read_bytes=1");
	if (qp_reconnect(qp, &d, rw))
		setup_failed("qp_reconnect", 0);
}

int main(void)
{
	const char *line;
	uint64_t len;
	int err;

	attack_init();
	ep_open(&e);
	qp = ep_create_qp(&e, e.pd);
	mr = ep_reg(e.pd, 8192 + 1, rw);
	say_hello(&e, qp, NULL);
	line = hear();
	d = need_dest(line, "");
	addr = need_u64(line, "addr");
	rkey = (uint32_t)need_u64(line, "rkey");
	len = need_u64(line, "len");
	if (len < 2048 || len > 8192)
		setup_failed("len outside 2048...8192", 0);
	if ((err = qp_connect(qp, &d, rw)))
		setup_failed("qp_connect", err);

	read_ok("read_whole", 0, (uint32_t)len);
	read_ok("read_head", 0, 256);
	read_ok("read_middle", 1000, 1000);
	read_ok("read_tail", len - 100, 100);
	refused("read_past_end", IBV_WR_RDMA_READ, addr + len - 100, 101);
	refused("read_before_start", IBV_WR_RDMA_READ, addr - 1, 2);
	refused("write_not_in_policy", IBV_WR_RDMA_WRITE, addr, 16);
	attack_exit();
}
