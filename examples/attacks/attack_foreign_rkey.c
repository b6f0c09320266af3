/*
 * attack_foreign_rkey — use tenant A's valid rkey where it does not belong.
 *
 * We (tenant B) learned the victim's key (leaked, sniffed, or guessed by a
 * colleague). We try it over two connections:
 *   - a QP connected to a third party: the key must not resolve there;
 *   - a QP connected to the victim itself, but to a QP in another of the
 *     victim's protection domains, which does not own the key.
 * An rkey is only valid in the PD of the QP at the other end (IB spec
 * 10.6.3); ReDMArk shows NICs and software stacks that got this wrong.
 *
 * Input:  t_qpn= t_lid= (the third party's QP)  v_qpn= v_lid= (victim QP in
 *         the other PD)  addr= rkey= len= (the victim's region)
 * Output: RESULT via_third_write|via_third_read|other_pd_write|other_pd_read refused status=...
 */
#include <string.h>

#include "attack_common.h"

static void try_key(struct ep *e, struct ibv_qp *qp, const struct dest *d, struct ibv_mr *mr,
		    const char *name, enum ibv_wr_opcode op, uint64_t addr, uint32_t rkey, uint32_t len)
{
	int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	outcome o;
	int err;

	if ((err = qp_reconnect(qp, d, rw)))
		setup_failed("qp_reconnect", err);
	memset(mr->addr, op == IBV_WR_RDMA_WRITE ? 0xee : 0, len);
	o = rdma(e, qp, op, mr->addr, len, mr->lkey, addr, rkey);
	expect_refused(name, o, NULL);
	if (op == IBV_WR_RDMA_READ && !all_zero(mr->addr, len))
		result(name, "BREACH", "read_bytes=1");
}

int main(void)
{
	int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	struct ibv_qp *to_third, *to_victim;
	struct dest third, victim;
	struct ibv_mr *mr;
	uint64_t addr, len;
	uint32_t rkey;
	const char *line;
	struct ep e;

	attack_init();
	ep_open(&e);
	to_third = ep_create_qp(&e, e.pd);
	to_victim = ep_create_qp(&e, e.pd);
	mr = ep_reg(e.pd, 4096, rw);
	say_hello(&e, to_third, to_victim);
	line = hear();
	third = need_dest(line, "t_");
	victim = need_dest(line, "v_");
	addr = need_u64(line, "addr");
	rkey = (uint32_t)need_u64(line, "rkey");
	len = need_u64(line, "len");
	if (len > 4096)
		len = 4096;

	try_key(&e, to_third, &third, mr, "via_third_write", IBV_WR_RDMA_WRITE, addr, rkey, (uint32_t)len);
	try_key(&e, to_third, &third, mr, "via_third_read", IBV_WR_RDMA_READ, addr, rkey, (uint32_t)len);
	try_key(&e, to_victim, &victim, mr, "other_pd_write", IBV_WR_RDMA_WRITE, addr, rkey, (uint32_t)len);
	try_key(&e, to_victim, &victim, mr, "other_pd_read", IBV_WR_RDMA_READ, addr, rkey, (uint32_t)len);
	attack_exit();
}
