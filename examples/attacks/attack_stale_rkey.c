/*
 * attack_stale_rkey — use an rkey after its owner deregistered the region.
 *
 * The victim gives us a valid key; we prove it works with one READ, then
 * wait while the victim deregisters the region (and registers the same
 * buffer again, under a new key). The old key must now be dead for writes
 * and reads, as a NIC invalidates it at ibv_dereg_mr.
 *
 * Input:  qpn= lid= addr= rkey= len=     then GO after "WAIT dereg"
 * Output: RESULT before_dereg allowed status=IBV_WC_SUCCESS fnv=<hash of the bytes read>
 *         RESULT stale_write refused status=...
 *         RESULT stale_read refused status=...
 */
#include <string.h>

#include "attack_common.h"

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
	mr = ep_reg(e.pd, 4096, rw);
	say_hello(&e, qp, NULL);
	line = hear();
	d = need_dest(line, "");
	addr = need_u64(line, "addr");
	rkey = (uint32_t)need_u64(line, "rkey");
	len = need_u64(line, "len");
	if (len > 4096)
		len = 4096;
	if ((err = qp_connect(qp, &d, rw)))
		setup_failed("qp_connect", err);

	o = rdma(&e, qp, IBV_WR_RDMA_READ, mr->addr, (uint32_t)len, mr->lkey, addr, rkey);
	expect_allowed("before_dereg", o, "fnv=%016llx", (unsigned long long)fnv1a(mr->addr, len));
	if (o != IBV_WC_SUCCESS && (err = qp_reconnect(qp, &d, rw)))
		setup_failed("qp_reconnect", err);

	wait_go("dereg");

	memset(mr->addr, 0xee, len);
	o = rdma(&e, qp, IBV_WR_RDMA_WRITE, mr->addr, (uint32_t)len, mr->lkey, addr, rkey);
	expect_refused("stale_write", o, NULL);
	if ((err = qp_reconnect(qp, &d, rw)))
		setup_failed("qp_reconnect", err);

	memset(mr->addr, 0, len);
	o = rdma(&e, qp, IBV_WR_RDMA_READ, mr->addr, (uint32_t)len, mr->lkey, addr, rkey);
	expect_refused("stale_read", o, NULL);
	if (!all_zero(mr->addr, len))
		result("stale_read_bytes", "BREACH", "fnv=%016llx", (unsigned long long)fnv1a(mr->addr, len));
	attack_exit();
}
