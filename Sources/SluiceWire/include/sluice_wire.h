/*
 * sluice_wire.h — the single source of truth for everything that crosses the
 * boundary between a tenant process (libsluice-verbs.so, C) and the router
 * (Swift): control messages on the SOCK_SEQPACKET session socket, and the
 * layouts of the shared-memory pages and rings.
 *
 * Trust: the router treats every byte a tenant writes here as hostile. Every
 * message is length-checked against the size its opcode defines; every ring
 * entry is copied out of shared memory before it is validated and executed.
 * The tenant library, in turn, trusts the router.
 *
 * Numeric constants that mirror libibverbs (opcodes, statuses, flags, states)
 * carry the same values as <infiniband/verbs.h>, so the router does not need
 * that header; the tenant library asserts the equality at compile time.
 */
#ifndef SLUICE_WIRE_H
#define SLUICE_WIRE_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------- */
/* Control messages                                                        */
/* ---------------------------------------------------------------------- */

#define SLUICE_WIRE_MAGIC   0x45434c53u /* "SLCE" little-endian */
#define SLUICE_WIRE_VERSION 1u
/* Largest control message either side sends; larger ones are refused. */
#define SLUICE_MSG_MAX      1024u
/* Largest number of fds one message carries (SCM_RIGHTS). */
#define SLUICE_MSG_MAX_FDS  3u
/* Replies set this bit on the request's opcode. */
#define SLUICE_REPLY_BIT    0x8000u

/* Every message starts with this header. `length` is the size of the whole
 * message in bytes, header included, and must equal the size defined for
 * `opcode` (requests) exactly. `seq` is chosen by the library and echoed. */
struct sluice_msg_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t opcode;
	uint32_t length;
	uint32_t seq;
};

/* Every reply starts with this. `status` is 0 or a positive errno value with
 * the meaning libibverbs documents for the verb; `reason` is a NUL-terminated
 * human-readable explanation of a refusal (empty on success). */
#define SLUICE_REASON_MAX 96u
struct sluice_reply_hdr {
	struct sluice_msg_hdr hdr;
	int32_t status;
	uint32_t reserved;
	char reason[SLUICE_REASON_MAX];
};

enum sluice_opcode {
	SLUICE_OP_OPEN = 1,            /* first message of a session */
	SLUICE_OP_ALLOC_PD = 2,
	SLUICE_OP_DEALLOC_PD = 3,
	SLUICE_OP_REG_MR = 4,          /* carries 1 fd: the sealed memfd */
	SLUICE_OP_DEREG_MR = 5,
	SLUICE_OP_REMAP_MR = 6,        /* carries 1 fd: a new backing for an MR */
	SLUICE_OP_CREATE_COMP_CHANNEL = 7, /* reply carries 1 fd: a pipe's read end */
	SLUICE_OP_DESTROY_COMP_CHANNEL = 8,
	SLUICE_OP_CREATE_CQ = 9,       /* reply carries 1 fd: the CQ ring memfd */
	SLUICE_OP_DESTROY_CQ = 10,
	SLUICE_OP_CREATE_QP = 11,      /* reply carries 1 fd: the QP ring memfd */
	SLUICE_OP_MODIFY_QP = 12,
	SLUICE_OP_QUERY_QP = 13,
	SLUICE_OP_DESTROY_QP = 14,
	SLUICE_OP_STATUS = 15,         /* operator socket only; reply is JSON text */
	SLUICE_OP_RELOAD_POLICY = 16,  /* operator socket only; reply is a message */
	SLUICE_OP_CLEAR_QUARANTINE = 17, /* operator socket only; sluice_tenant_req */
};

/* Handles are per-session table indices minted by the router; 0 is never a
 * valid handle. */
#define SLUICE_NO_HANDLE 0u

/* --- OPEN -------------------------------------------------------------- */
struct sluice_open_req {
	struct sluice_msg_hdr hdr;
	uint32_t abi_version;          /* SLUICE_WIRE_VERSION */
	uint32_t reserved;
};
/* Reply carries 3 fds, in this order: the session page memfd (map it
 * SLUICE_SESSION_PAGE_SIZE bytes, shared, read-write); the tenant's end of
 * this session's doorbell, a SOCK_DGRAM socket pair (send any datagram,
 * MSG_NOSIGNAL|MSG_DONTWAIT, to wake the router); and the read end of the
 * async event pipe (one byte per event in the session page's async ring; it
 * becomes the context's async_fd). Not eventfds: each end of a pair or pipe
 * is its own open file description, so the tenant cannot clear O_NONBLOCK on
 * the end the router keeps and block it. */
struct sluice_open_rep {
	struct sluice_reply_hdr rep;
	uint8_t gid[16];               /* GID index 0: ::ffff:<virtual IPv4> */
	uint32_t virtual_ipv4;         /* host byte order */
	uint16_t lid;                  /* virtual LID, never 0 */
	uint16_t pkey;                 /* the one P_Key, 0xffff */
	uint32_t max_qp;
	uint32_t max_qp_wr;
	uint32_t max_sge;
	uint32_t max_cq;
	uint32_t max_cqe;
	uint32_t max_mr;
	uint64_t max_mr_size;
	uint32_t max_pd;
	uint32_t max_inline;           /* SLUICE_MAX_INLINE */
	uint32_t active_mtu;           /* enum ibv_mtu */
	uint32_t reserved;
	char tenant[64];               /* the tenant this socket belongs to */
};

/* --- PD ---------------------------------------------------------------- */
struct sluice_handle_req {         /* DEALLOC_PD, DEREG_MR, DESTROY_* , QUERY_QP */
	struct sluice_msg_hdr hdr;
	uint32_t handle;
	uint32_t reserved;
};
struct sluice_alloc_pd_req {
	struct sluice_msg_hdr hdr;
};
struct sluice_handle_rep {         /* ALLOC_PD, CREATE_COMP_CHANNEL */
	struct sluice_reply_hdr rep;
	uint32_t handle;
	uint32_t reserved;
};
struct sluice_empty_rep {          /* DEALLOC_PD, DEREG_MR, REMAP_MR, DESTROY_*, MODIFY_QP */
	struct sluice_reply_hdr rep;
};

/* --- MR ---------------------------------------------------------------- */
/* The library re-backs the pages covering [addr, addr+length) with a memfd
 * sealed with at least F_SEAL_SHRINK|F_SEAL_GROW and sends it. The router
 * maps [fd_offset, fd_offset + map_length) of it; `page_offset` is where addr
 * falls inside that mapping (addr - first covered page + any offset of that
 * page inside the mapping). fd_offset and map_length are page multiples. */
struct sluice_reg_mr_req {
	struct sluice_msg_hdr hdr;
	uint32_t pd;
	uint32_t access;               /* IBV_ACCESS_* */
	uint64_t addr;                 /* tenant virtual address of the buffer */
	uint64_t length;
	uint64_t iova;                 /* remote addresses are relative to this */
	uint64_t fd_offset;
	uint64_t map_length;
	uint64_t page_offset;
};
struct sluice_reg_mr_rep {
	struct sluice_reply_hdr rep;
	uint32_t handle;
	uint32_t lkey;                 /* virtual, minted by the router */
	uint32_t rkey;                 /* virtual, from a CSPRNG */
	uint32_t reserved;
};
/* Re-points an existing MR at a new backing (used when a later registration
 * that overlaps its pages made the library replace the memfd behind them).
 * Same meaning of fields as in REG_MR; the MR's addr and length do not change. */
struct sluice_remap_mr_req {
	struct sluice_msg_hdr hdr;
	uint32_t handle;
	uint32_t reserved;
	uint64_t fd_offset;
	uint64_t map_length;
	uint64_t page_offset;
};

/* --- CQ ---------------------------------------------------------------- */
struct sluice_create_cq_req {
	struct sluice_msg_hdr hdr;
	uint32_t cqe;                  /* requested minimum entries, >= 1 */
	uint32_t channel;              /* comp channel handle or SLUICE_NO_HANDLE */
};
struct sluice_create_cq_rep {
	struct sluice_reply_hdr rep;
	uint32_t handle;
	uint32_t capacity;             /* ring entries (power of two); cqe = capacity - 1 */
	uint64_t ring_size;            /* bytes to map of the CQ memfd */
};

/* --- QP ---------------------------------------------------------------- */
struct sluice_create_qp_req {
	struct sluice_msg_hdr hdr;
	uint32_t pd;
	uint32_t send_cq;
	uint32_t recv_cq;
	uint32_t qp_type;              /* IBV_QPT_RC only for now */
	uint32_t max_send_wr;
	uint32_t max_recv_wr;
	uint32_t max_send_sge;
	uint32_t max_recv_sge;
	uint32_t max_inline_data;
	uint32_t sq_sig_all;
};
struct sluice_create_qp_rep {
	struct sluice_reply_hdr rep;
	uint32_t handle;
	uint32_t qp_num;               /* virtual QPN */
	uint32_t sq_capacity;          /* ring entries (power of two) */
	uint32_t rq_capacity;
	uint32_t max_send_wr;          /* actual caps, as ibv_create_qp reports */
	uint32_t max_recv_wr;
	uint32_t max_send_sge;
	uint32_t max_recv_sge;
	uint32_t max_inline_data;
	uint32_t reserved;
	uint64_t ring_size;            /* bytes to map of the QP memfd */
};

/* Address vector as the wire carries it (mirrors struct ibv_ah_attr). */
struct sluice_ah {
	uint8_t dgid[16];
	uint32_t flow_label;
	uint8_t sgid_index;
	uint8_t hop_limit;
	uint8_t traffic_class;
	uint8_t is_global;
	uint16_t dlid;
	uint8_t sl;
	uint8_t src_path_bits;
	uint8_t static_rate;
	uint8_t port_num;
	uint8_t reserved[2];
};

/* Mirrors struct ibv_qp_attr for the fields Sluice supports. */
struct sluice_qp_attr {
	uint32_t qp_state;
	uint32_t cur_qp_state;
	uint32_t path_mtu;
	uint32_t qkey;
	uint32_t rq_psn;
	uint32_t sq_psn;
	uint32_t dest_qp_num;
	uint32_t qp_access_flags;
	uint32_t max_send_wr;
	uint32_t max_recv_wr;
	uint32_t max_send_sge;
	uint32_t max_recv_sge;
	uint32_t max_inline_data;
	uint16_t pkey_index;
	uint8_t max_rd_atomic;
	uint8_t max_dest_rd_atomic;
	uint8_t min_rnr_timer;
	uint8_t port_num;
	uint8_t timeout;
	uint8_t retry_cnt;
	uint8_t rnr_retry;
	uint8_t sq_draining;
	uint8_t reserved[2];
	struct sluice_ah ah;
};

struct sluice_modify_qp_req {
	struct sluice_msg_hdr hdr;
	uint32_t handle;
	uint32_t attr_mask;            /* IBV_QP_* */
	struct sluice_qp_attr attr;
};
struct sluice_query_qp_rep {
	struct sluice_reply_hdr rep;
	struct sluice_qp_attr attr;
	uint32_t sq_sig_all;
	uint32_t reserved;
};

/* --- STATUS (operator socket) ----------------------------------------- */
struct sluice_status_req {
	struct sluice_msg_hdr hdr;
};
/* CLEAR_QUARANTINE names a tenant (NUL-terminated). */
struct sluice_tenant_req {
	struct sluice_msg_hdr hdr;
	char tenant[64];
};

/* Reply: sluice_reply_hdr followed by up to SLUICE_STATUS_MAX bytes of JSON
 * (no NUL); the reply's hdr.length says how many. The operator socket uses
 * SOCK_SEQPACKET as well, with a larger message limit. */
#define SLUICE_STATUS_MAX 60000u

/* ---------------------------------------------------------------------- */
/* Shared memory                                                           */
/* ---------------------------------------------------------------------- */

#define SLUICE_CACHELINE 64u
#define SLUICE_PAGE 4096u

/* Fixed limits of the wire layout. */
#define SLUICE_MAX_SGE     8u
#define SLUICE_MAX_INLINE  256u
#define SLUICE_MAX_RING    32768u   /* entries per ring, at most */

/* A producer/consumer pair for one single-producer single-consumer ring.
 * Indices run freely (wrap at 2^32); entry i lives in slot i & (capacity-1).
 * Each index is written by one side only, on its own cache line. */
struct sluice_ring_ctrl {
	uint32_t prod;
	uint8_t pad0[SLUICE_CACHELINE - 4];
	uint32_t cons;
	uint8_t pad1[SLUICE_CACHELINE - 4];
};

/* An asynchronous event (ibv_get_async_event) as the router posts it. */
struct sluice_async_event {
	uint32_t event_type;           /* SLUICE_EVENT_* (= IBV_EVENT_*) */
	uint32_t qp_num;               /* virtual QPN of the QP it concerns */
};
#define SLUICE_ASYNC_RING 64u
#define SLUICE_POSTED_QPS 4096u

/* The session page: one per session, created by the router. */
#define SLUICE_SESSION_PAGE_SIZE SLUICE_PAGE
struct sluice_session_page {
	/* Router writes 1 before it sleeps, 0 when it wakes. After publishing
	 * work, the library issues a full fence and, if this reads 1, sends a
	 * datagram on the doorbell. */
	uint32_t router_asleep;
	uint8_t pad[SLUICE_CACHELINE - 4];
	/* Async events: prod by the router, cons by the library. The router
	 * writes the entry, publishes prod, then writes one byte to the async
	 * pipe; a full ring drops the event (the router counts it). */
	struct sluice_ring_ctrl async;
	struct sluice_async_event async_events[SLUICE_ASYNC_RING];
	/* Posted-QP hints, so the router need not look at every idle QP on
	 * every pass (a NIC's per-QP doorbell, without a system call). Bit
	 * (handle - 1) of posted_qps means "the router is looking at this QP".
	 * After publishing a producer index the library fences and, if the
	 * QP's bit is clear, sets it and then posted_summary. The router scans
	 * the bits when it takes a nonzero summary; before it stops looking at
	 * a QP it clears the bit, fences and reads the producer indices once
	 * more. Either the router sees the new index or the library sees the
	 * clear bit. QPs whose handle is above SLUICE_POSTED_QPS are always
	 * looked at. A tenant can only mislead the router about its own QPs. */
	uint32_t posted_summary;
	uint8_t pad1[SLUICE_CACHELINE - 4];
	uint64_t posted_qps[SLUICE_POSTED_QPS / 64];
};

/* A send work request as the library writes it into the send ring. */
struct sluice_sge {
	uint64_t addr;
	uint32_t length;
	uint32_t lkey;
};

struct sluice_send_wqe {
	uint64_t wr_id;
	uint32_t opcode;               /* SLUICE_WR_* (= IBV_WR_*) */
	uint32_t send_flags;           /* SLUICE_SEND_* (= IBV_SEND_*) */
	uint32_t imm_data;             /* network byte order, as the app gave it */
	uint32_t num_sge;              /* 0..SLUICE_MAX_SGE; 0 when inline */
	uint32_t inline_len;           /* bytes used in inline_data when INLINE */
	uint32_t rkey;
	uint64_t remote_addr;
	uint64_t compare_add;          /* atomics: add, or compare for CMP_AND_SWP */
	uint64_t swap;
	uint64_t reserved;
	struct sluice_sge sge[SLUICE_MAX_SGE];
	uint8_t inline_data[SLUICE_MAX_INLINE];
};

struct sluice_recv_wqe {
	uint64_t wr_id;
	uint32_t num_sge;
	uint32_t reserved;
	struct sluice_sge sge[SLUICE_MAX_SGE];
};

/* A completion as the router writes it into the completion ring. */
struct sluice_cqe {
	uint64_t wr_id;
	uint32_t status;               /* SLUICE_WC_* (= IBV_WC_* status) */
	uint32_t opcode;               /* SLUICE_WC_OP_* (= IBV_WC_* opcode) */
	uint32_t vendor_err;
	uint32_t byte_len;
	uint32_t imm_data;             /* network byte order */
	uint32_t qp_num;               /* virtual QPN of the local QP */
	uint32_t src_qp;               /* virtual QPN of the remote QP */
	uint32_t wc_flags;             /* IBV_WC_WITH_IMM, ... */
	uint32_t pkey_index;
	uint16_t slid;
	uint8_t sl;
	uint8_t dlid_path_bits;
};

/* QP memfd: a header page, then the send ring, then the receive ring. */
struct sluice_qp_shared {
	/* Router-published QP state (enum ibv_qp_state). Library reads it to
	 * decide whether posting is allowed; router never reads it back. */
	uint32_t state;
	uint8_t pad[SLUICE_CACHELINE - 4];
	struct sluice_ring_ctrl sq;    /* prod: library, cons: router */
	struct sluice_ring_ctrl rq;    /* prod: library, cons: router */
};

/* CQ memfd: a header page, then the completion ring. */
struct sluice_cq_shared {
	struct sluice_ring_ctrl ring;  /* prod: router, cons: library */
	/* Library stores 1 (next completion) or 2 (next solicited completion) to
	 * request one notification; router atomically takes it back to 0 when it
	 * fires, increments `events`, then writes one byte to the channel's
	 * pipe (CREATE_COMP_CHANNEL's fd): one byte per event. */
	uint32_t armed;
	uint8_t pad0[SLUICE_CACHELINE - 4];
	uint32_t events;               /* router-written, monotonically increasing */
	uint8_t pad1[SLUICE_CACHELINE - 4];
};

struct sluice_qp_layout {
	uint64_t sq_offset;            /* byte offset of send ring entries */
	uint64_t rq_offset;            /* byte offset of receive ring entries */
	uint64_t size;                 /* total bytes, a page multiple */
};

static inline uint64_t sluice_page_round(uint64_t n)
{
	return (n + SLUICE_PAGE - 1) & ~(uint64_t)(SLUICE_PAGE - 1);
}

/* Both sides compute ring placement with these, never from shared data. */
static inline struct sluice_qp_layout sluice_qp_layout(uint32_t sq_cap, uint32_t rq_cap)
{
	struct sluice_qp_layout l;
	l.sq_offset = SLUICE_PAGE;
	l.rq_offset = sluice_page_round(l.sq_offset + (uint64_t)sq_cap * sizeof(struct sluice_send_wqe));
	l.size = sluice_page_round(l.rq_offset + (uint64_t)rq_cap * sizeof(struct sluice_recv_wqe));
	return l;
}

static inline uint64_t sluice_cq_entries_offset(void) { return SLUICE_PAGE; }
static inline uint64_t sluice_cq_size(uint32_t cap)
{
	return sluice_page_round(SLUICE_PAGE + (uint64_t)cap * sizeof(struct sluice_cqe));
}

/* Atomic helpers for shared indices and flags (C11 memory model). */
static inline uint32_t sluice_load_acquire(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline uint32_t sluice_load_relaxed(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void sluice_store_release(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void sluice_store_relaxed(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline uint32_t sluice_exchange(uint32_t *p, uint32_t v)
{
	return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL);
}
static inline uint32_t sluice_fetch_add(uint32_t *p, uint32_t v)
{
	return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
}
/* RDMA atomics on a tenant's 8-byte-aligned word, atomic with respect to
 * the tenant's own CPU atomics on the same word. Return the original value. */
static inline uint64_t sluice_atomic_fetch_add64(uint64_t *p, uint64_t add)
{
	return __atomic_fetch_add(p, add, __ATOMIC_SEQ_CST);
}
static inline uint64_t sluice_atomic_cmp_swap64(uint64_t *p, uint64_t compare, uint64_t swap)
{
	__atomic_compare_exchange_n(p, &compare, swap, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	return compare; /* the value found, whether or not it was swapped */
}
static inline void sluice_fence(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* The library's half of the posted-QP hint (see struct sluice_session_page),
 * after it published a producer index of the QP with this handle. Ends
 * with a full fence after the index store and any hint store, so the
 * caller may then read router_asleep without another. */
static inline void sluice_hint_posted(struct sluice_session_page *page, uint32_t handle)
{
	uint32_t i = handle - 1;
	sluice_fence();
	if (handle == 0 || i >= SLUICE_POSTED_QPS)
		return;
	uint64_t bit = (uint64_t)1 << (i % 64);
	if (!(__atomic_load_n(&page->posted_qps[i / 64], __ATOMIC_RELAXED) & bit)) {
		__atomic_fetch_or(&page->posted_qps[i / 64], bit, __ATOMIC_SEQ_CST);
		__atomic_store_n(&page->posted_summary, 1, __ATOMIC_SEQ_CST);
		sluice_fence();
	}
}

/* The router's half: take the summary (nonzero: some bit was set since). */
static inline uint32_t sluice_hint_take_summary(struct sluice_session_page *page)
{
	if (!__atomic_load_n(&page->posted_summary, __ATOMIC_RELAXED))
		return 0;
	return __atomic_exchange_n(&page->posted_summary, 0, __ATOMIC_SEQ_CST);
}

static inline uint64_t sluice_hint_word(struct sluice_session_page *page, uint32_t word)
{
	return __atomic_load_n(&page->posted_qps[word], __ATOMIC_ACQUIRE);
}

/* Clears (set = 0) or sets (set = 1) the bit of handle; a full barrier. */
static inline void sluice_hint_mark(struct sluice_session_page *page, uint32_t handle, int set)
{
	uint32_t i = handle - 1;
	if (handle == 0 || i >= SLUICE_POSTED_QPS)
		return;
	uint64_t bit = (uint64_t)1 << (i % 64);
	if (set)
		__atomic_fetch_or(&page->posted_qps[i / 64], bit, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_and(&page->posted_qps[i / 64], ~bit, __ATOMIC_SEQ_CST);
}

/* ---------------------------------------------------------------------- */
/* Mirrors of libibverbs constants (checked against verbs.h in the library) */
/* ---------------------------------------------------------------------- */

enum {
	SLUICE_WR_RDMA_WRITE = 0,
	SLUICE_WR_RDMA_WRITE_WITH_IMM = 1,
	SLUICE_WR_SEND = 2,
	SLUICE_WR_SEND_WITH_IMM = 3,
	SLUICE_WR_RDMA_READ = 4,
	SLUICE_WR_ATOMIC_CMP_AND_SWP = 5,
	SLUICE_WR_ATOMIC_FETCH_AND_ADD = 6,
};
enum {
	SLUICE_SEND_FENCE = 1 << 0,
	SLUICE_SEND_SIGNALED = 1 << 1,
	SLUICE_SEND_SOLICITED = 1 << 2,
	SLUICE_SEND_INLINE = 1 << 3,
};
enum {
	SLUICE_WC_SUCCESS = 0,
	SLUICE_WC_LOC_LEN_ERR = 1,
	SLUICE_WC_LOC_QP_OP_ERR = 2,
	SLUICE_WC_LOC_PROT_ERR = 4,
	SLUICE_WC_WR_FLUSH_ERR = 5,
	SLUICE_WC_LOC_ACCESS_ERR = 8,
	SLUICE_WC_REM_INV_REQ_ERR = 9,
	SLUICE_WC_REM_ACCESS_ERR = 10,
	SLUICE_WC_REM_OP_ERR = 11,
	SLUICE_WC_RETRY_EXC_ERR = 12,
	SLUICE_WC_RNR_RETRY_EXC_ERR = 13,
	SLUICE_WC_GENERAL_ERR = 21,
};
enum {
	SLUICE_WC_OP_SEND = 0,
	SLUICE_WC_OP_RDMA_WRITE = 1,
	SLUICE_WC_OP_RDMA_READ = 2,
	SLUICE_WC_OP_COMP_SWAP = 3,
	SLUICE_WC_OP_FETCH_ADD = 4,
	SLUICE_WC_OP_RECV = 1 << 7,
	SLUICE_WC_OP_RECV_RDMA_WITH_IMM = (1 << 7) + 1,
};
enum {
	SLUICE_WC_FLAG_GRH = 1 << 0,
	SLUICE_WC_FLAG_WITH_IMM = 1 << 1,
};
enum {
	SLUICE_ACCESS_LOCAL_WRITE = 1,
	SLUICE_ACCESS_REMOTE_WRITE = 1 << 1,
	SLUICE_ACCESS_REMOTE_READ = 1 << 2,
	SLUICE_ACCESS_REMOTE_ATOMIC = 1 << 3,
	SLUICE_ACCESS_MW_BIND = 1 << 4,
	SLUICE_ACCESS_ZERO_BASED = 1 << 5,
	SLUICE_ACCESS_ON_DEMAND = 1 << 6,
	SLUICE_ACCESS_HUGETLB = 1 << 7,
	SLUICE_ACCESS_RELAXED_ORDERING = 1 << 20,
};
enum {
	SLUICE_QPS_RESET = 0,
	SLUICE_QPS_INIT = 1,
	SLUICE_QPS_RTR = 2,
	SLUICE_QPS_RTS = 3,
	SLUICE_QPS_SQD = 4,
	SLUICE_QPS_SQE = 5,
	SLUICE_QPS_ERR = 6,
};
enum {
	SLUICE_QPT_RC = 2,
};
enum {
	SLUICE_EVENT_QP_FATAL = 1,
};
enum {
	SLUICE_QP_STATE = 1 << 0,
	SLUICE_QP_CUR_STATE = 1 << 1,
	SLUICE_QP_EN_SQD_ASYNC_NOTIFY = 1 << 2,
	SLUICE_QP_ACCESS_FLAGS = 1 << 3,
	SLUICE_QP_PKEY_INDEX = 1 << 4,
	SLUICE_QP_PORT = 1 << 5,
	SLUICE_QP_QKEY = 1 << 6,
	SLUICE_QP_AV = 1 << 7,
	SLUICE_QP_PATH_MTU = 1 << 8,
	SLUICE_QP_TIMEOUT = 1 << 9,
	SLUICE_QP_RETRY_CNT = 1 << 10,
	SLUICE_QP_RNR_RETRY = 1 << 11,
	SLUICE_QP_RQ_PSN = 1 << 12,
	SLUICE_QP_MAX_QP_RD_ATOMIC = 1 << 13,
	SLUICE_QP_ALT_PATH = 1 << 14,
	SLUICE_QP_MIN_RNR_TIMER = 1 << 15,
	SLUICE_QP_SQ_PSN = 1 << 16,
	SLUICE_QP_MAX_DEST_RD_ATOMIC = 1 << 17,
	SLUICE_QP_PATH_MIG_STATE = 1 << 18,
	SLUICE_QP_CAP = 1 << 19,
	SLUICE_QP_DEST_QPN = 1 << 20,
};

/* Layout checks: these sizes are part of the wire ABI. */
_Static_assert(sizeof(struct sluice_msg_hdr) == 16, "msg hdr");
_Static_assert(sizeof(struct sluice_reply_hdr) == 120, "reply hdr");
_Static_assert(sizeof(struct sluice_send_wqe) == 448, "send wqe");
_Static_assert(sizeof(struct sluice_recv_wqe) == 144, "recv wqe");
_Static_assert(sizeof(struct sluice_cqe) == 48, "cqe");
_Static_assert(sizeof(struct sluice_ring_ctrl) == 128, "ring ctrl");
_Static_assert(sizeof(struct sluice_qp_shared) <= SLUICE_PAGE, "qp page");
_Static_assert(sizeof(struct sluice_cq_shared) <= SLUICE_PAGE, "cq page");
_Static_assert(sizeof(struct sluice_session_page) <= SLUICE_SESSION_PAGE_SIZE, "session page");
_Static_assert(sizeof(struct sluice_open_rep) <= SLUICE_MSG_MAX, "open rep");
_Static_assert(sizeof(struct sluice_modify_qp_req) <= SLUICE_MSG_MAX, "modify req");
_Static_assert(sizeof(struct sluice_query_qp_rep) <= SLUICE_MSG_MAX, "query rep");

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_WIRE_H */
