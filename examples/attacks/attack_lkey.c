/*
 * attack_lkey — make the router read or write memory through a bad SGE.
 *
 * The victim lets us WRITE into its region (a valid rkey). The remote side
 * is fine; the local side of each request is not: a forged lkey, an SGE
 * that runs past our region, one that wraps 2^64, the victim's own lkey
 * (leaked to us) with the victim's address, and an lkey of ours from
 * another PD. If any of them passed, the router would copy from memory
 * that is not ours into the victim's region, or from nowhere. The control
 * write, with a correct SGE, lands the bytes (i * 7 + 3) in the first 64
 * bytes of the victim's region; every other byte must stay as it was.
 *
 * Input:  qpn= lid= addr= rkey= len= lkey=<the victim's lkey>
 * Output: RESULT control_write allowed status=IBV_WC_SUCCESS
 *         RESULT forged_lkey|sge_past_region|sge_wrapping_2_64|victims_lkey|
 *                other_pd_lkey|read_into_forged_lkey refused status=...
 */
#include <string.h>

#include "attack_common.h"

static const int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

int main(void)
{
	uint64_t addr, len, vaddr;
	uint32_t rkey, vlkey, forged;
	struct ibv_mr *mr, *other;
	struct ibv_pd *pd2;
	struct ibv_qp *qp;
	uint8_t *mine;
	const char *line;
	struct dest d;
	struct ep e;
	outcome o;
	int err;

	attack_init();
	ep_open(&e);
	qp = ep_create_qp(&e, e.pd);
	mr = ep_reg(e.pd, 4096, rw);
	pd2 = ibv_alloc_pd(e.ctx);
	if (!pd2)
		setup_failed("ibv_alloc_pd", 0);
	other = ep_reg(pd2, 4096, rw);
	mine = mr->addr;
	for (int i = 0; i < 4096; i++)
		mine[i] = (uint8_t)(i * 7 + 3);
	memset(other->addr, 0xee, 4096);
	say_hello(&e, qp, NULL);
	line = hear();
	d = need_dest(line, "");
	addr = need_u64(line, "addr");
	rkey = (uint32_t)need_u64(line, "rkey");
	len = need_u64(line, "len");
	vlkey = (uint32_t)need_u64(line, "lkey");
	vaddr = addr;
	if (len < 2048)
		setup_failed("len below 2048", 0);

	if ((err = qp_connect(qp, &d, rw)))
		setup_failed("qp_connect", err);
	expect_allowed("control_write", rdma(&e, qp, IBV_WR_RDMA_WRITE, mine, 64, mr->lkey, addr, rkey), NULL);

	do {
		forged = random_u32();
	} while (forged == mr->lkey || forged == other->lkey);
	struct {
		const char *name;
		enum ibv_wr_opcode op;
		uint64_t local;
		uint32_t length, lkey;
	} cases[] = {
		{ "forged_lkey", IBV_WR_RDMA_WRITE, (uintptr_t)mine, 64, forged },
		{ "sge_past_region", IBV_WR_RDMA_WRITE, (uintptr_t)mine + 4096 - 32, 64, mr->lkey },
		{ "sge_wrapping_2_64", IBV_WR_RDMA_WRITE, UINT64_MAX - 15, 64, mr->lkey },
		{ "victims_lkey", IBV_WR_RDMA_WRITE, vaddr + 1024, 64, vlkey },
		{ "other_pd_lkey", IBV_WR_RDMA_WRITE, (uintptr_t)other->addr, 64, other->lkey },
		{ "read_into_forged_lkey", IBV_WR_RDMA_READ, (uintptr_t)mine, 64, forged },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if ((err = qp_reconnect(qp, &d, rw)))
			setup_failed("qp_reconnect", err);
		/* Every case writes to (or reads from) the victim's region at +1024. */
		o = rdma(&e, qp, cases[i].op, (void *)(uintptr_t)cases[i].local, cases[i].length, cases[i].lkey,
			 addr + 1024, rkey);
		expect_refused(cases[i].name, o, NULL);
	}
	for (int i = 0; i < 4096; i++)
		if (mine[i] != (uint8_t)(i * 7 + 3)) {
			result("own_region_changed", "BREACH", "offset=%d", i);
			break;
		}
	attack_exit();
}
