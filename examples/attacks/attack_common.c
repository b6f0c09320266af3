/*
 * attack_common.c — setup, connection, posting and the line protocol shared
 * by the attack programs (see attack_common.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "attack_common.h"

static int breaches;

void attack_init(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* A program waiting for a test that went away must not hang a run. */
	alarm(60);
}

__attribute__((noreturn)) void setup_failed(const char *what, int err)
{
	say("SETUP failed %s errno=%s", what, errno_name(err));
	exit(2);
}

__attribute__((noreturn)) void attack_exit(void)
{
	say("DONE breaches=%d", breaches);
	exit(breaches ? 1 : 0);
}

void breach(void)
{
	breaches++;
}

/* --- objects ---------------------------------------------------------------- */

void ep_open(struct ep *e)
{
	struct ibv_device **list;
	struct ibv_port_attr port;
	int n = 0;

	memset(e, 0, sizeof(*e));
	list = ibv_get_device_list(&n);
	if (!list || n < 1)
		setup_failed("ibv_get_device_list", errno ? errno : ENODEV);
	e->ctx = ibv_open_device(list[0]);
	ibv_free_device_list(list);
	if (!e->ctx)
		setup_failed("ibv_open_device", errno);
	if (ibv_query_port(e->ctx, 1, &port))
		setup_failed("ibv_query_port", errno);
	e->lid = port.lid;
	if (ibv_query_gid(e->ctx, 1, 0, &e->gid))
		setup_failed("ibv_query_gid", errno);
	e->pd = ibv_alloc_pd(e->ctx);
	if (!e->pd)
		setup_failed("ibv_alloc_pd", errno);
	e->cq = ibv_create_cq(e->ctx, 64, NULL, NULL, 0);
	if (!e->cq)
		setup_failed("ibv_create_cq", errno);
}

struct ibv_qp *ep_create_qp(struct ep *e, struct ibv_pd *pd)
{
	struct ibv_qp_init_attr a = {
		.send_cq = e->cq,
		.recv_cq = e->cq,
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 16, .max_recv_wr = 16, .max_send_sge = 2, .max_recv_sge = 2 },
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &a);

	if (!qp)
		setup_failed("ibv_create_qp", errno);
	return qp;
}

struct ibv_mr *ep_reg(struct ibv_pd *pd, size_t len, int access)
{
	size_t psz = (size_t)sysconf(_SC_PAGESIZE), span = (len + psz - 1) / psz * psz;
	void *buf = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ibv_mr *mr;

	if (buf == MAP_FAILED)
		setup_failed("mmap", errno);
	mr = ibv_reg_mr(pd, buf, len, access);
	if (!mr)
		setup_failed("ibv_reg_mr", errno);
	return mr;
}

/* --- connections ------------------------------------------------------------ */

int qp_connect(struct ibv_qp *qp, const struct dest *d, int access)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.pkey_index = 0,
		.port_num = 1,
		.qp_access_flags = (unsigned int)access,
	};
	int err;

	err = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
	if (err)
		return err;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = d->qpn;
	a.rq_psn = d->rq_psn;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 1;
	a.ah_attr.port_num = 1;
	if (d->use_gid) {
		a.ah_attr.is_global = 1;
		a.ah_attr.grh.dgid = d->gid;
		a.ah_attr.grh.sgid_index = d->sgid_index;
		a.ah_attr.grh.hop_limit = d->hop_limit ? d->hop_limit : 1;
		a.ah_attr.grh.traffic_class = d->traffic_class;
		a.ah_attr.grh.flow_label = d->flow_label;
	} else {
		a.ah_attr.dlid = d->lid;
	}
	err = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				    IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
	if (err)
		return err;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	/* Short transport timeouts: a request to a QP that is not connected
	 * back fails within milliseconds, not seconds. */
	a.timeout = 10;
	a.retry_cnt = 2;
	a.rnr_retry = 2;
	a.sq_psn = d->sq_psn;
	a.max_rd_atomic = 1;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
				     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

int qp_reset(struct ibv_qp *qp)
{
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_RESET };

	return ibv_modify_qp(qp, &a, IBV_QP_STATE);
}

int qp_reconnect(struct ibv_qp *qp, const struct dest *d, int access)
{
	int err = qp_reset(qp);

	return err ? err : qp_connect(qp, d, access);
}

enum ibv_qp_state qp_state(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr i;

	if (ibv_query_qp(qp, &a, IBV_QP_STATE, &i))
		return (enum ibv_qp_state)-1;
	return a.qp_state;
}

/* --- posting ---------------------------------------------------------------- */

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Waits up to 5 s for the completion of wr_id; earlier completions (flushes
 * of an older request) are skipped. */
static outcome post_and_wait(struct ep *e, struct ibv_qp *qp, struct ibv_send_wr *wr)
{
	static uint64_t next_id = 1;
	struct ibv_send_wr *bad = NULL;
	struct ibv_wc wc;
	double deadline = now() + 5;
	int err;

	wr->wr_id = next_id++;
	wr->send_flags |= IBV_SEND_SIGNALED;
	err = ibv_post_send(qp, wr, &bad);
	if (err)
		return -err;
	while (now() < deadline) {
		int n = ibv_poll_cq(e->cq, 1, &wc);

		if (n < 0)
			return -EIO;
		if (n == 0) {
			usleep(50);
			continue;
		}
		if (wc.wr_id == wr->wr_id)
			return (outcome)wc.status;
	}
	return -ETIMEDOUT;
}

outcome rdma(struct ep *e, struct ibv_qp *qp, enum ibv_wr_opcode op, void *local, uint32_t len,
	     uint32_t lkey, uint64_t raddr, uint32_t rkey)
{
	struct ibv_sge sge = { .addr = (uintptr_t)local, .length = len, .lkey = lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = op };

	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	return post_and_wait(e, qp, &wr);
}

outcome atomic_op(struct ep *e, struct ibv_qp *qp, enum ibv_wr_opcode op, void *local, uint32_t len,
		  uint32_t lkey, uint64_t raddr, uint32_t rkey, uint64_t compare_add, uint64_t swap)
{
	struct ibv_sge sge = { .addr = (uintptr_t)local, .length = len, .lkey = lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = op };

	wr.wr.atomic.remote_addr = raddr;
	wr.wr.atomic.rkey = rkey;
	wr.wr.atomic.compare_add = compare_add;
	wr.wr.atomic.swap = swap;
	return post_and_wait(e, qp, &wr);
}

outcome send_msg(struct ep *e, struct ibv_qp *qp, void *local, uint32_t len, uint32_t lkey)
{
	struct ibv_sge sge = { .addr = (uintptr_t)local, .length = len, .lkey = lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND };

	return post_and_wait(e, qp, &wr);
}

/* --- protocol --------------------------------------------------------------- */

void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

char *hear(void)
{
	static char *line;
	static size_t cap;
	ssize_t n = getline(&line, &cap, stdin);

	if (n <= 0) {
		say("SETUP failed stdin closed");
		exit(2);
	}
	line[strcspn(line, "\n")] = '\0';
	return line;
}

void wait_go(const char *tag)
{
	say("WAIT %s", tag);
	if (strcmp(hear(), "GO") != 0) {
		say("SETUP failed expected GO");
		exit(2);
	}
}

/* The value of " key=" in line, or NULL. */
static const char *find_value(const char *line, const char *key)
{
	size_t k = strlen(key);

	for (const char *p = line; (p = strstr(p, key)) != NULL; p += k) {
		if ((p == line || p[-1] == ' ') && p[k] == '=')
			return p + k + 1;
	}
	return NULL;
}

uint64_t need_u64(const char *line, const char *key)
{
	const char *v = find_value(line, key);
	char *end;
	uint64_t n;

	if (!v) {
		say("SETUP failed missing %s", key);
		exit(2);
	}
	n = strtoull(v, &end, 0);
	if (end == v) {
		say("SETUP failed bad %s", key);
		exit(2);
	}
	return n;
}

static int parse_gid(const char *v, union ibv_gid *gid)
{
	for (int i = 0; i < 16; i++) {
		unsigned int b;

		if (sscanf(v + 2 * i, "%2x", &b) != 1)
			return -1;
		gid->raw[i] = (uint8_t)b;
	}
	return 0;
}

void need_gid(const char *line, const char *key, union ibv_gid *gid)
{
	const char *g = find_value(line, key);

	if (!g || parse_gid(g, gid) != 0) {
		say("SETUP failed missing or bad %s", key);
		exit(2);
	}
}

struct dest need_dest(const char *line, const char *prefix)
{
	char key[64];
	struct dest d = { 0 };
	const char *g;

	snprintf(key, sizeof(key), "%sqpn", prefix);
	d.qpn = (uint32_t)need_u64(line, key);
	snprintf(key, sizeof(key), "%slid", prefix);
	d.lid = (uint16_t)need_u64(line, key);
	snprintf(key, sizeof(key), "%sgid", prefix);
	g = find_value(line, key);
	if (g && parse_gid(g, &d.gid) != 0) {
		say("SETUP failed bad %s", key);
		exit(2);
	}
	return d;
}

const char *gid_hex(const union ibv_gid *gid, char out[33])
{
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", gid->raw[i]);
	return out;
}

void say_hello(const struct ep *e, const struct ibv_qp *qp, const struct ibv_qp *qp2)
{
	char g[33];

	if (qp2)
		say("HELLO lid=%u gid=%s qpn=%u qpn2=%u", e->lid, gid_hex(&e->gid, g), qp->qp_num, qp2->qp_num);
	else
		say("HELLO lid=%u gid=%s qpn=%u", e->lid, gid_hex(&e->gid, g), qp->qp_num);
}

/* --- verdicts --------------------------------------------------------------- */

static void vresult(const char *name, const char *verdict, const char *what, const char *fmt, va_list ap)
{
	char extra[512] = "";

	if (fmt && *fmt)
		vsnprintf(extra, sizeof(extra), fmt, ap);
	say("RESULT %s %s%s%s%s%s", name, verdict, what ? " " : "", what ? what : "", *extra ? " " : "", extra);
}

void result(const char *name, const char *verdict, const char *fmt, ...)
{
	va_list ap;

	if (strcmp(verdict, "BREACH") == 0)
		breach();
	va_start(ap, fmt);
	vresult(name, verdict, NULL, fmt, ap);
	va_end(ap);
}

void expect_refused(const char *name, outcome o, const char *fmt, ...)
{
	va_list ap;
	int ok = o != IBV_WC_SUCCESS;

	if (!ok)
		breach();
	va_start(ap, fmt);
	vresult(name, ok ? "refused" : "BREACH", outcome_str(o), fmt, ap);
	va_end(ap);
}

void expect_allowed(const char *name, outcome o, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vresult(name, o == IBV_WC_SUCCESS ? "allowed" : "failed", outcome_str(o), fmt, ap);
	va_end(ap);
}

const char *errno_name(int err)
{
	static char other[32];

	switch (err) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ENODEV: return "ENODEV";
	}
	snprintf(other, sizeof(other), "E%d", err);
	return other;
}

static const char *wc_name(int status)
{
	static const char *names[] = {
		[IBV_WC_SUCCESS] = "IBV_WC_SUCCESS",
		[IBV_WC_LOC_LEN_ERR] = "IBV_WC_LOC_LEN_ERR",
		[IBV_WC_LOC_QP_OP_ERR] = "IBV_WC_LOC_QP_OP_ERR",
		[IBV_WC_LOC_EEC_OP_ERR] = "IBV_WC_LOC_EEC_OP_ERR",
		[IBV_WC_LOC_PROT_ERR] = "IBV_WC_LOC_PROT_ERR",
		[IBV_WC_WR_FLUSH_ERR] = "IBV_WC_WR_FLUSH_ERR",
		[IBV_WC_MW_BIND_ERR] = "IBV_WC_MW_BIND_ERR",
		[IBV_WC_BAD_RESP_ERR] = "IBV_WC_BAD_RESP_ERR",
		[IBV_WC_LOC_ACCESS_ERR] = "IBV_WC_LOC_ACCESS_ERR",
		[IBV_WC_REM_INV_REQ_ERR] = "IBV_WC_REM_INV_REQ_ERR",
		[IBV_WC_REM_ACCESS_ERR] = "IBV_WC_REM_ACCESS_ERR",
		[IBV_WC_REM_OP_ERR] = "IBV_WC_REM_OP_ERR",
		[IBV_WC_RETRY_EXC_ERR] = "IBV_WC_RETRY_EXC_ERR",
		[IBV_WC_RNR_RETRY_EXC_ERR] = "IBV_WC_RNR_RETRY_EXC_ERR",
		[IBV_WC_LOC_RDD_VIOL_ERR] = "IBV_WC_LOC_RDD_VIOL_ERR",
		[IBV_WC_REM_INV_RD_REQ_ERR] = "IBV_WC_REM_INV_RD_REQ_ERR",
		[IBV_WC_REM_ABORT_ERR] = "IBV_WC_REM_ABORT_ERR",
		[IBV_WC_INV_EECN_ERR] = "IBV_WC_INV_EECN_ERR",
		[IBV_WC_INV_EEC_STATE_ERR] = "IBV_WC_INV_EEC_STATE_ERR",
		[IBV_WC_FATAL_ERR] = "IBV_WC_FATAL_ERR",
		[IBV_WC_RESP_TIMEOUT_ERR] = "IBV_WC_RESP_TIMEOUT_ERR",
		[IBV_WC_GENERAL_ERR] = "IBV_WC_GENERAL_ERR",
	};

	if (status >= 0 && (size_t)status < sizeof(names) / sizeof(names[0]) && names[status])
		return names[status];
	return "IBV_WC_UNKNOWN";
}

const char *outcome_str(outcome o)
{
	static char buf[64];

	if (o >= 0)
		snprintf(buf, sizeof(buf), "status=%s", wc_name(o));
	else
		snprintf(buf, sizeof(buf), "errno=%s", errno_name(-o));
	return buf;
}

/* --- checks ----------------------------------------------------------------- */

int all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

/* FNV-1a, 64 bits: the tests compute the same over the victim's bytes. */
uint64_t fnv1a(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint32_t random_u32(void)
{
	uint32_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != sizeof(v))
		setup_failed("getrandom", errno);
	return v;
}
