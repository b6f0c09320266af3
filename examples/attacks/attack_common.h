/*
 * attack_common.h — what the attack programs of examples/attacks share.
 *
 * Each program is a tenant that tries one class of attack through the public
 * verbs API (plus, where the attack needs it, the shared-memory layout of
 * sluice_wire.h, which any tenant can read). They run unmodified on Sluice
 * with LD_PRELOAD=libsluice-verbs.so and SLUICE_SOCKET=<tenant socket>.
 *
 * A line protocol on stdin/stdout lets a test (the victim) coordinate:
 *
 *   program -> test   HELLO lid=<n> gid=<32 hex> qpn=<n> [qpn2=<n> ...]
 *   test -> program   one line of key=value pairs: where to connect, keys, ...
 *   program -> test   WAIT <tag> [key=value ...]   (the test answers GO)
 *   program -> test   RESULT <name> <verdict> [key=value ...]
 *   program -> test   DONE breaches=<n>
 *
 * Verdicts: "refused" (the attack failed, as it must: status= is the
 * completion status, errno= the error of a verb), "BREACH" (the attack
 * succeeded), "allowed"/"failed" for control operations that must succeed,
 * "observed"/"missing" for events. Exit status: 0 when there was no breach,
 * 1 after any breach, 2 when the program could not set its attack up.
 */
#ifndef ATTACK_COMMON_H
#define ATTACK_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <infiniband/verbs.h>

/* One device context with a PD and a CQ: one router session. */
struct ep {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	uint16_t lid;
	union ibv_gid gid;
};

/* The destination of a connection, as ibv_modify_qp to RTR names it. */
struct dest {
	uint32_t qpn;
	uint16_t lid;
	int use_gid;
	union ibv_gid gid;
	uint8_t sgid_index, traffic_class, hop_limit;
	uint32_t flow_label;
	uint32_t rq_psn, sq_psn;
};

/* Outcome of one attempt: >= 0 is an ibv_wc_status, < 0 is -errno (posting
 * failed, or -ETIMEDOUT when no completion came). */
typedef int outcome;

void attack_init(void);
void ep_open(struct ep *e);
struct ibv_qp *ep_create_qp(struct ep *e, struct ibv_pd *pd);
/* A zeroed, page-aligned buffer of len bytes, registered with `access`. */
struct ibv_mr *ep_reg(struct ibv_pd *pd, size_t len, int access);

int qp_connect(struct ibv_qp *qp, const struct dest *d, int access);
int qp_reset(struct ibv_qp *qp);
/* RESET -> INIT -> RTR -> RTS again, after an error moved the QP to ERR. */
int qp_reconnect(struct ibv_qp *qp, const struct dest *d, int access);
enum ibv_qp_state qp_state(struct ibv_qp *qp);

/* Posts one signaled work request and waits for its completion. */
outcome rdma(struct ep *e, struct ibv_qp *qp, enum ibv_wr_opcode op, void *local, uint32_t len,
	     uint32_t lkey, uint64_t raddr, uint32_t rkey);
outcome atomic_op(struct ep *e, struct ibv_qp *qp, enum ibv_wr_opcode op, void *local, uint32_t len,
		  uint32_t lkey, uint64_t raddr, uint32_t rkey, uint64_t compare_add, uint64_t swap);
outcome send_msg(struct ep *e, struct ibv_qp *qp, void *local, uint32_t len, uint32_t lkey);

/* The protocol. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *hear(void);
void wait_go(const char *tag);
uint64_t need_u64(const char *line, const char *key);
/* Reads <prefix>qpn, <prefix>lid and, if present, <prefix>gid. */
struct dest need_dest(const char *line, const char *prefix);
void need_gid(const char *line, const char *key, union ibv_gid *gid);
void say_hello(const struct ep *e, const struct ibv_qp *qp, const struct ibv_qp *qp2);
const char *gid_hex(const union ibv_gid *gid, char out[33]);

/* Verdicts. `name` must be one word. */
void expect_refused(const char *name, outcome o, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void expect_allowed(const char *name, outcome o, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void result(const char *name, const char *verdict, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void breach(void);
const char *outcome_str(outcome o);
const char *errno_name(int err);
__attribute__((noreturn)) void setup_failed(const char *what, int err);
__attribute__((noreturn)) void attack_exit(void);

/* Checks. */
int all_zero(const void *p, size_t n);
uint64_t fnv1a(const void *p, size_t n);
uint32_t random_u32(void);

#endif
