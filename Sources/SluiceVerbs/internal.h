/*
 * internal.h — private state of the tenant-side verbs library.
 *
 * Every public verbs object is embedded first in a private struct, the way an
 * rdma-core provider does it, and recovered with a typed down-cast (to_sctx(),
 * to_sqp(), ...) instead of a raw cast. Nothing here crosses to the router:
 * only the structs of sluice_wire.h do.
 */
#ifndef SLUICE_VERBS_INTERNAL_H
#define SLUICE_VERBS_INTERNAL_H

/* memfd_create, eventfd, spinlocks, MSG_CMSG_CLOEXEC: every .c file defines
 * _GNU_SOURCE before its first include, so -std=c11 builds too. */
#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before including any header"
#endif

#include <infiniband/verbs.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice_wire.h"

/* Only the public ibv_* entry points leave the shared object. */
#define SLUICE_EXPORT __attribute__((visibility("default")))

#define sluice_container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

#define SLUICE_DEVICE_NAME "sluice0"
#define SLUICE_FW_VER "sluice 0.1"
#define SLUICE_PORT 1
#define SLUICE_PKEY 0xffff
#define SLUICE_RD_ATOM 16

/* --- device and context ------------------------------------------------ */

/* One device per ibv_get_device_list() call. It lives while the list or any
 * context opened from it refers to it, as libibverbs' verbs_device does. */
struct sluice_device {
	struct ibv_device ibv_dev;
	__be64 guid;                   /* FNV-1a of the socket path, network order */
	unsigned int refcount;         /* list + open contexts (atomic) */
};

/* One context = one session = one connection to the tenant's router socket. */
struct sluice_context {
	struct sluice_device *dev;
	pthread_mutex_t ctl_lock;      /* one control request outstanding */
	uint32_t seq;                  /* under ctl_lock */
	int doorbell_fd;               /* send a datagram to wake the router */
	pthread_mutex_t async_lock;    /* the async ring's consumer, and `qps` */
	uint32_t async_cons;           /* private copy of session->async.cons */
	struct sluice_qp *qps;         /* this context's QPs, for async events */
	int router_gone;               /* the session socket hung up (atomic) */
	struct sluice_session_page *session; /* router_asleep lives here */
	struct sluice_open_rep info;   /* limits, LID, GID from the OPEN reply */
	__be64 guid;
	char socket_path[108];         /* sizeof(sockaddr_un.sun_path) */
	struct verbs_context vctx;     /* ibv_context last, as verbs.h requires */
};

static inline struct sluice_context *to_sctx(struct ibv_context *ctx)
{
	return sluice_container_of(ctx, struct sluice_context, vctx.context);
}

static inline struct sluice_device *to_sdev(struct ibv_device *dev)
{
	return sluice_container_of(dev, struct sluice_device, ibv_dev);
}

/* --- memory ------------------------------------------------------------ */

struct sluice_pd {
	struct ibv_pd ibv_pd;
};

static inline struct sluice_pd *to_spd(struct ibv_pd *pd)
{
	return sluice_container_of(pd, struct sluice_pd, ibv_pd);
}

struct sluice_backing;

struct sluice_mr {
	struct ibv_mr ibv_mr;
	struct sluice_backing *backing; /* under the global backing lock */
	struct sluice_mr *next_in_backing;
	uintptr_t first_page;          /* first page covering addr */
	uint64_t map_length;           /* bytes of pages covering [addr, addr+length) */
};

static inline struct sluice_mr *to_smr(struct ibv_mr *mr)
{
	return sluice_container_of(mr, struct sluice_mr, ibv_mr);
}

/* Drops every MR of a closing context from the process-wide backing
 * registry, so no later overlap sends REMAP_MR through a dead session. */
void sluice_forget_context_mrs(struct sluice_context *sctx);

/* --- completion channels and CQs --------------------------------------- */

struct sluice_cq;

struct sluice_channel {
	struct ibv_comp_channel ibv_chan;
	uint32_t handle;
	pthread_mutex_t lock;          /* guards cqs and each cq's events_taken */
	struct sluice_cq *cqs;
};

static inline struct sluice_channel *to_schan(struct ibv_comp_channel *ch)
{
	return sluice_container_of(ch, struct sluice_channel, ibv_chan);
}

struct sluice_cq {
	struct ibv_cq ibv_cq;
	pthread_spinlock_t lock;       /* poll_cq: single consumer of the ring */
	uint32_t empty_polls;          /* under lock: when to look for a dead router */
	struct sluice_cq_shared *shared;
	struct sluice_cqe *entries;
	uint32_t capacity;             /* power of two */
	uint32_t cons;                 /* private copy of ring.cons, under lock */
	size_t ring_size;
	uint32_t events_taken;         /* shared `events` consumed, under channel lock */
	uint32_t events_handed;        /* events ibv_get_cq_event returned, same lock */
	struct sluice_cq *next_in_channel;
};

static inline struct sluice_cq *to_scq(struct ibv_cq *cq)
{
	return sluice_container_of(cq, struct sluice_cq, ibv_cq);
}

/* --- queue pairs -------------------------------------------------------- */

struct sluice_qp {
	struct ibv_qp ibv_qp;
	pthread_spinlock_t sq_lock;
	pthread_spinlock_t rq_lock;
	struct sluice_qp_shared *shared;
	size_t ring_size;
	struct sluice_send_wqe *sq;
	struct sluice_recv_wqe *rq;
	uint32_t sq_cap, rq_cap;       /* powers of two */
	uint32_t sq_prod, rq_prod;     /* private copies, under the ring's lock */
	struct ibv_qp_cap cap;         /* actual caps from CREATE_QP */
	int sq_sig_all;
	struct sluice_qp *next_in_ctx; /* under the context's async_lock */
};

static inline struct sluice_qp *to_sqp(struct ibv_qp *qp)
{
	return sluice_container_of(qp, struct sluice_qp, ibv_qp);
}

/* --- control path (control.c) ------------------------------------------- */

/* Sends `req` (whose hdr the call fills in) with at most one fd and waits for
 * the reply. On success copies min(reply, rep_size) bytes into `rep` and, if
 * the reply must carry `nfds` fds, stores them in `fds`. Returns 0 or a
 * positive errno: the router's status, or EIO when the session is broken. */
int sluice_call(struct sluice_context *sctx, uint16_t opcode,
		void *req, size_t req_size, int send_fd,
		void *rep, size_t rep_size, int *fds, unsigned int nfds);

/* Connects to `path` and runs OPEN; fills sctx->info, session, doorbell_fd,
 * the context's cmd_fd and its async_fd (the router's async event pipe).
 * Returns 0 or an errno. */
int sluice_session_open(struct sluice_context *sctx, const char *path);

/* Closes the session socket and every fd and mapping OPEN created. */
void sluice_session_close(struct sluice_context *sctx);

/* True when SLUICE_DEBUG=1: refusals are printed to stderr. */
int sluice_debug(void);

/* --- entry points reached through the ops table (ops.c) ----------------- */

int sluice_query_port(struct ibv_context *ctx, uint8_t port_num,
		      struct ibv_port_attr *attr, size_t attr_len);
int sluice_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc);
int sluice_req_notify_cq(struct ibv_cq *cq, int solicited_only);
int sluice_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr,
		     struct ibv_send_wr **bad_wr);
int sluice_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr,
		     struct ibv_recv_wr **bad_wr);
int sluice_post_srq_recv(struct ibv_srq *srq, struct ibv_recv_wr *wr,
			 struct ibv_recv_wr **bad_wr);
int sluice_bind_mw(struct ibv_qp *qp, struct ibv_mw *mw, struct ibv_mw_bind *bind);
int sluice_dealloc_mw(struct ibv_mw *mw);

/* Installs the library's one ops table into a fresh verbs_context. */
void sluice_set_ops(struct verbs_context *vctx);

/* poll_cq looks for a dead router after this many empty polls in a row. */
#define SLUICE_DEAD_ROUTER_POLLS (1u << 16)
/* Whether the router closed this session (checked without blocking). */
int sluice_router_gone(struct sluice_context *sctx);

#endif /* SLUICE_VERBS_INTERNAL_H */
