/*
 * datapath.c — posting work requests, polling completions, arming CQs.
 *
 * Nothing here makes a system call in steady state: work requests go into
 * the QP's rings and completions come out of the CQ's ring, all in shared
 * memory, with single-producer/single-consumer indices (sluice_wire.h). The
 * only syscall is the doorbell, and only when the router said it sleeps.
 *
 * Where is a work request checked? Here for what the verbs API documents
 * as the caller's error (returned synchronously); in the router for
 * everything else, because it re-reads nothing the tenant wrote.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Sends one doorbell datagram. MSG_NOSIGNAL: a router that died must not
 * raise SIGPIPE in an application that merely posted work; MSG_DONTWAIT: a
 * full doorbell means the router is waking anyway. Only the sleeping-router
 * path pays for this call, never the steady state. */
static void write_doorbell(int fd)
{
	static const uint8_t one = 1;
	ssize_t n;

	do {
		n = send(fd, &one, sizeof(one), MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
}

/* After publishing a producer index of a QP: the posted-QP hint, then the
 * doorbell if the router sleeps. The hint ends with a full fence, which
 * pairs with the router storing router_asleep = 1 and then checking the
 * rings once more before it sleeps: either it sees our new index (and
 * hint), or we see its flag. */
static void posted(struct sluice_qp *sqp)
{
	struct sluice_context *sctx = to_sctx(sqp->ibv_qp.context);

	sluice_hint_posted(sctx->session, sqp->ibv_qp.handle);
	if (sluice_load_relaxed(&sctx->session->router_asleep))
		write_doorbell(sctx->doorbell_fd);
}

/* --- send queue ------------------------------------------------------------ */

static int is_rdma(enum ibv_wr_opcode op)
{
	return op == IBV_WR_RDMA_WRITE || op == IBV_WR_RDMA_WRITE_WITH_IMM ||
	       op == IBV_WR_RDMA_READ;
}

static int is_atomic(enum ibv_wr_opcode op)
{
	return op == IBV_WR_ATOMIC_CMP_AND_SWP || op == IBV_WR_ATOMIC_FETCH_AND_ADD;
}

/* The errors ibv_post_send() documents as the caller's (EINVAL). */
static int check_send_wr(const struct sluice_qp *sqp, const struct ibv_send_wr *wr)
{
	switch (wr->opcode) {
	case IBV_WR_RDMA_WRITE:
	case IBV_WR_RDMA_WRITE_WITH_IMM:
	case IBV_WR_SEND:
	case IBV_WR_SEND_WITH_IMM:
	case IBV_WR_RDMA_READ:
		break;
	case IBV_WR_ATOMIC_CMP_AND_SWP:
	case IBV_WR_ATOMIC_FETCH_AND_ADD:
		/* The original value comes back into the (8-byte) SGE; the
		 * router checks its length and the remote alignment. */
		if (wr->send_flags & IBV_SEND_INLINE)
			return EINVAL;
		break;
	default:
		return EINVAL;            /* MW binds, LSO, ... not supported */
	}
	if (wr->num_sge < 0 || (uint32_t)wr->num_sge > sqp->cap.max_send_sge)
		return EINVAL;
	if (wr->send_flags & IBV_SEND_INLINE) {
		uint64_t total = 0;

		if (wr->opcode == IBV_WR_RDMA_READ)
			return EINVAL;    /* a READ has nothing to send inline */
		for (int i = 0; i < wr->num_sge; i++)
			total += wr->sg_list[i].length;
		if (total > sqp->cap.max_inline_data)
			return EINVAL;
	}
	return 0;
}

static void write_send_wqe(const struct sluice_qp *sqp, struct sluice_send_wqe *wqe,
			   const struct ibv_send_wr *wr)
{
	wqe->wr_id = wr->wr_id;
	wqe->opcode = wr->opcode;
	wqe->send_flags = wr->send_flags | (sqp->sq_sig_all ? IBV_SEND_SIGNALED : 0);
	wqe->imm_data = wr->imm_data;     /* network order, untouched */
	if (is_atomic(wr->opcode)) {
		wqe->rkey = wr->wr.atomic.rkey;
		wqe->remote_addr = wr->wr.atomic.remote_addr;
		wqe->compare_add = wr->wr.atomic.compare_add;
		wqe->swap = wr->wr.atomic.swap;
	} else {
		wqe->rkey = is_rdma(wr->opcode) ? wr->wr.rdma.rkey : 0;
		wqe->remote_addr = is_rdma(wr->opcode) ? wr->wr.rdma.remote_addr : 0;
		wqe->compare_add = 0;
		wqe->swap = 0;
	}
	wqe->reserved = 0;
	if (wr->send_flags & IBV_SEND_INLINE) {
		/* Gathered now: the application may reuse its buffers as soon
		 * as ibv_post_send() returns, and they need no MR. */
		uint32_t off = 0;

		for (int i = 0; i < wr->num_sge; i++) {
			memcpy(wqe->inline_data + off, (const void *)(uintptr_t)wr->sg_list[i].addr,
			       wr->sg_list[i].length);
			off += wr->sg_list[i].length;
		}
		wqe->num_sge = 0;
		wqe->inline_len = off;
	} else {
		for (int i = 0; i < wr->num_sge; i++) {
			wqe->sge[i].addr = wr->sg_list[i].addr;
			wqe->sge[i].length = wr->sg_list[i].length;
			wqe->sge[i].lkey = wr->sg_list[i].lkey;
		}
		wqe->num_sge = (uint32_t)wr->num_sge;
		wqe->inline_len = 0;
	}
}

int sluice_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr)
{
	struct sluice_qp *sqp = to_sqp(qp);
	uint32_t mask = sqp->sq_cap - 1, prod, cons, start;
	int err = 0;

	pthread_spin_lock(&sqp->sq_lock);
	start = prod = sqp->sq_prod;
	cons = sluice_load_acquire(&sqp->shared->sq.cons);
	for (; wr; wr = wr->next) {
		uint32_t state = sluice_load_acquire(&sqp->shared->state);

		/* In ERR the router flushes what is posted with WR_FLUSH_ERR. */
		if (state != IBV_QPS_RTS && state != IBV_QPS_ERR) {
			err = EINVAL;
			break;
		}
		err = check_send_wr(sqp, wr);
		if (err)
			break;
		if (prod - cons >= sqp->sq_cap) {
			cons = sluice_load_acquire(&sqp->shared->sq.cons);
			if (prod - cons >= sqp->sq_cap) {
				err = ENOMEM;
				break;
			}
		}
		write_send_wqe(sqp, &sqp->sq[prod & mask], wr);
		prod++;
	}
	/* Earlier work requests stay posted even when a later one fails. */
	if (prod != start) {
		sqp->sq_prod = prod;
		sluice_store_release(&sqp->shared->sq.prod, prod);
	}
	pthread_spin_unlock(&sqp->sq_lock);
	if (err)
		*bad_wr = wr;
	if (prod != start)
		posted(sqp);
	return err;
}

/* --- receive queue --------------------------------------------------------- */

int sluice_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr)
{
	struct sluice_qp *sqp = to_sqp(qp);
	uint32_t mask = sqp->rq_cap - 1, prod, cons, start;
	int err = 0;

	pthread_spin_lock(&sqp->rq_lock);
	start = prod = sqp->rq_prod;
	cons = sluice_load_acquire(&sqp->shared->rq.cons);
	for (; wr; wr = wr->next) {
		struct sluice_recv_wqe *wqe;

		if (sluice_load_acquire(&sqp->shared->state) == IBV_QPS_RESET ||
		    wr->num_sge < 0 || (uint32_t)wr->num_sge > sqp->cap.max_recv_sge) {
			err = EINVAL;
			break;
		}
		if (prod - cons >= sqp->rq_cap) {
			cons = sluice_load_acquire(&sqp->shared->rq.cons);
			if (prod - cons >= sqp->rq_cap) {
				err = ENOMEM;
				break;
			}
		}
		wqe = &sqp->rq[prod & mask];
		wqe->wr_id = wr->wr_id;
		wqe->num_sge = (uint32_t)wr->num_sge;
		wqe->reserved = 0;
		for (int i = 0; i < wr->num_sge; i++) {
			wqe->sge[i].addr = wr->sg_list[i].addr;
			wqe->sge[i].length = wr->sg_list[i].length;
			wqe->sge[i].lkey = wr->sg_list[i].lkey;
		}
		prod++;
	}
	if (prod != start) {
		sqp->rq_prod = prod;
		sluice_store_release(&sqp->shared->rq.prod, prod);
	}
	pthread_spin_unlock(&sqp->rq_lock);
	if (err)
		*bad_wr = wr;
	if (prod != start)
		posted(sqp);
	return err;
}

/* --- completion queue ------------------------------------------------------ */

int sluice_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc)
{
	struct sluice_cq *scq = to_scq(cq);
	uint32_t mask = scq->capacity - 1, prod, cons;
	int n = 0;

	if (num_entries < 0)
		return -1;
	pthread_spin_lock(&scq->lock);
	cons = scq->cons;
	prod = sluice_load_acquire(&scq->shared->ring.prod);
	for (; n < num_entries && cons != prod; n++, cons++) {
		const struct sluice_cqe e = scq->entries[cons & mask];
		struct ibv_wc *w = &wc[n];

		w->wr_id = e.wr_id;
		w->status = (enum ibv_wc_status)e.status;
		w->opcode = (enum ibv_wc_opcode)e.opcode;
		w->vendor_err = e.vendor_err;
		w->byte_len = e.byte_len;
		w->imm_data = e.imm_data;     /* network order, untouched */
		w->qp_num = e.qp_num;
		w->src_qp = e.src_qp;
		w->wc_flags = e.wc_flags;
		w->pkey_index = (uint16_t)e.pkey_index;
		w->slid = e.slid;
		w->sl = e.sl;
		w->dlid_path_bits = e.dlid_path_bits;
	}
	if (n) {
		scq->cons = cons;
		sluice_store_release(&scq->shared->ring.cons, cons);
		scq->empty_polls = 0;
	} else if (++scq->empty_polls == SLUICE_DEAD_ROUTER_POLLS) {
		/* An application that only polls would wait forever on a router
		 * that died; look at the session socket once in a long while
		 * (a system call per 2^16 empty polls, never when work flows). */
		scq->empty_polls = 0;
		if (sluice_router_gone(to_sctx(cq->context))) {
			pthread_spin_unlock(&scq->lock);
			errno = EIO;
			return -1;
		}
	}
	pthread_spin_unlock(&scq->lock);
	return n;
}

int sluice_router_gone(struct sluice_context *sctx)
{
	struct pollfd p = { .fd = sctx->vctx.context.cmd_fd, .events = POLLIN | POLLRDHUP };

	if (__atomic_load_n(&sctx->router_gone, __ATOMIC_RELAXED))
		return 1;
	/* The router never speaks unasked, so any event on an idle session
	 * socket is its end closing. */
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))) {
		__atomic_store_n(&sctx->router_gone, 1, __ATOMIC_RELAXED);
		return 1;
	}
	return 0;
}

int sluice_req_notify_cq(struct ibv_cq *cq, int solicited_only)
{
	/* The router takes this back to 0 when it fires the one event asked
	 * for (sluice_cq_shared.armed). */
	sluice_store_release(&to_scq(cq)->shared->armed, solicited_only ? 2 : 1);
	return 0;
}
