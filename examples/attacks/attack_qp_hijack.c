/*
 * attack_qp_hijack — connect to, or inject into, somebody else's connection.
 *
 * The victim's QP v1 is connected to a third party's QP; v2 and v3 are free.
 * We try to move our own QPs to RTR:
 *   hijack_connected   towards v1 (already connected), by LID, any PSN
 *   hijack_psn         towards v1 by GID, with the PSNs its connection uses
 *   wrong_lid          towards v1's QPN at the third party's LID
 *   guessed_qpn        towards 16 random QPNs at the victim's LID
 *   guessed_gid        towards v2 at a GID next to the victim's
 *   sgid_index         towards v2 with source GID index 1
 *   grh_fiddle_other   towards v2's QPN at the third party's GID, with
 *                      traffic class, flow label and hop limit set
 *   grh_fiddle_exact   (control) towards v2 at the victim's GID with the same
 *                      fiddled GRH: must reach exactly v2, nothing else; the
 *                      victim connects v2 back and we send it a message
 *   second_qp          another QP of ours towards v2, now connected to ours
 *   claim_free         (control) towards v3, which nobody is connected to
 *   claimed            another QP of ours towards v3, already claimed
 * ReDMArk shows that on real fabrics a QPN and PSN are enough to inject into
 * a connection; here the router resolves connections itself and grants each
 * QP one peer.
 *
 * Input:  v1_qpn= v2_qpn= v3_qpn= v_lid= v_gid= (the victim) t_lid= t_gid= (the third
 *         party) psn= (the PSNs of v1's connection)
 * Output: RESULT <case> refused errno=EINVAL ... for each attack above;
 *         RESULT hijack_send ... if a hijacking connection was accepted;
 *         WAIT connect_back qpn=<our QP for v2>, then RESULT grh_send allowed
 */
#include <errno.h>
#include <string.h>

#include "attack_common.h"

static const int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
static struct ep e;
static struct ibv_mr *mr;

/* Tries to connect a fresh QP to `to`; a connection that must be refused
 * and is not is a breach, and then we try to push a message through it. */
static struct ibv_qp *try_connect(const char *name, const struct dest *to, int must_refuse)
{
	struct ibv_qp *qp = ep_create_qp(&e, e.pd);
	int err = qp_connect(qp, to, rw);

	if (!must_refuse) {
		result(name, err ? "failed" : "allowed", "errno=%s", errno_name(err));
		return qp;
	}
	if (err) {
		result(name, "refused", "errno=%s", errno_name(err));
		return qp;
	}
	result(name, "BREACH", "errno=0 connected=1");
	memset(mr->addr, 0x66, 64);
	expect_refused("hijack_send", send_msg(&e, qp, mr->addr, 64, mr->lkey), "via=%s", name);
	return qp;
}

int main(void)
{
	struct dest v1, v2, v3, t, d;
	struct ibv_qp *mine;
	const char *line;
	uint32_t psn;

	attack_init();
	ep_open(&e);
	mr = ep_reg(e.pd, 4096, rw);
	say_hello(&e, ep_create_qp(&e, e.pd), NULL);
	line = hear();
	memset(&v1, 0, sizeof(v1));
	v1.qpn = (uint32_t)need_u64(line, "v1_qpn");
	v1.lid = (uint16_t)need_u64(line, "v_lid");
	need_gid(line, "v_gid", &v1.gid);
	v2 = v1;
	v2.qpn = (uint32_t)need_u64(line, "v2_qpn");
	v3 = v1;
	v3.qpn = (uint32_t)need_u64(line, "v3_qpn");
	memset(&t, 0, sizeof(t));
	t.lid = (uint16_t)need_u64(line, "t_lid");
	need_gid(line, "t_gid", &t.gid);
	psn = (uint32_t)need_u64(line, "psn");

	d = v1;
	d.rq_psn = random_u32() & 0xffffff;
	d.sq_psn = random_u32() & 0xffffff;
	try_connect("hijack_connected", &d, 1);

	d = v1;
	d.use_gid = 1;
	d.rq_psn = psn;
	d.sq_psn = psn;
	try_connect("hijack_psn", &d, 1);

	d = v1;
	d.lid = t.lid;
	try_connect("wrong_lid", &d, 1);

	{
		struct ibv_qp *qp = ep_create_qp(&e, e.pd);
		int refused = 0, tries = 0, err = 0;

		while (tries < 16) {
			d = v1;
			d.qpn = random_u32() & 0xffffff;
			if (d.qpn == v1.qpn || d.qpn == v2.qpn || d.qpn == v3.qpn)
				continue;
			tries++;
			err = qp_reconnect(qp, &d, rw);
			refused += err != 0;
			if (!err)
				break;
		}
		result("guessed_qpn", refused == tries ? "refused" : "BREACH", "errno=%s refused=%d tries=%d",
		       errno_name(err), refused, tries);
	}

	d = v2;
	d.use_gid = 1;
	d.gid.raw[15] ^= 1;
	try_connect("guessed_gid", &d, 1);

	d = v2;
	d.use_gid = 1;
	d.sgid_index = 1;
	try_connect("sgid_index", &d, 1);

	d = v2;
	d.use_gid = 1;
	d.gid = t.gid;
	d.traffic_class = 0xb8;
	d.flow_label = 0xfffff;
	d.hop_limit = 255;
	try_connect("grh_fiddle_other", &d, 1);

	d.gid = v2.gid;
	mine = try_connect("grh_fiddle_exact", &d, 0);
	say("WAIT connect_back qpn=%u", mine->qp_num);
	if (strcmp(hear(), "GO") != 0)
		setup_failed("expected GO", EINVAL);
	memset(mr->addr, 0x5a, 32);
	expect_allowed("grh_send", send_msg(&e, mine, mr->addr, 32, mr->lkey), NULL);

	try_connect("second_qp", &v2, 1);
	try_connect("claim_free", &v3, 0);
	try_connect("claimed", &v3, 1);
	attack_exit();
}
