/*
 * qp.c — queue pair control verbs: create, modify, query, destroy.
 *
 * The router owns the QP: it mints the QPN, checks every state transition
 * and attribute mask, and publishes the state into the QP's shared page
 * before it replies. This file only converts between ibv_* structs and the
 * wire's fixed layouts; posting work requests lives in datapath.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

static void send_destroy_qp(struct ibv_context *context, uint32_t handle)
{
	struct sluice_handle_req req = { .handle = handle };
	struct sluice_empty_rep rep;

	(void)sluice_call(to_sctx(context), SLUICE_OP_DESTROY_QP, &req, sizeof(req), -1,
			  &rep, sizeof(rep), NULL, 0);
}

static int is_ring_capacity(uint32_t cap)
{
	return cap >= 1 && cap <= SLUICE_MAX_RING && (cap & (cap - 1)) == 0;
}

/* The library trusts the router, but the ring geometry and caps must fit
 * the wire layout, or posting would write past a WQE or the mapping. */
static int reply_fits_wire(const struct sluice_create_qp_rep *rep)
{
	return is_ring_capacity(rep->sq_capacity) && is_ring_capacity(rep->rq_capacity) &&
	       rep->max_send_wr <= rep->sq_capacity && rep->max_recv_wr <= rep->rq_capacity &&
	       rep->max_send_sge <= SLUICE_MAX_SGE && rep->max_recv_sge <= SLUICE_MAX_SGE &&
	       rep->max_inline_data <= SLUICE_MAX_INLINE &&
	       rep->ring_size >= sluice_qp_layout(rep->sq_capacity, rep->rq_capacity).size;
}

SLUICE_EXPORT struct ibv_qp *ibv_create_qp(struct ibv_pd *pd,
					   struct ibv_qp_init_attr *init_attr)
{
	struct ibv_context *context = pd->context;
	struct sluice_create_qp_req req = { 0 };
	struct sluice_create_qp_rep rep;
	struct sluice_qp_layout layout;
	struct sluice_qp *sqp;
	void *ring;
	int err, fd;

	if (!init_attr || init_attr->srq || !init_attr->send_cq || !init_attr->recv_cq ||
	    init_attr->send_cq->context != context || init_attr->recv_cq->context != context) {
		errno = EINVAL;
		return NULL;
	}
	if (init_attr->qp_type != IBV_QPT_RC) {
		errno = EOPNOTSUPP;       /* RC only, for now */
		return NULL;
	}
	sqp = calloc(1, sizeof(*sqp));
	if (!sqp) {
		errno = ENOMEM;
		return NULL;
	}
	req.pd = pd->handle;
	req.send_cq = init_attr->send_cq->handle;
	req.recv_cq = init_attr->recv_cq->handle;
	req.qp_type = init_attr->qp_type;
	req.max_send_wr = init_attr->cap.max_send_wr;
	req.max_recv_wr = init_attr->cap.max_recv_wr;
	req.max_send_sge = init_attr->cap.max_send_sge;
	req.max_recv_sge = init_attr->cap.max_recv_sge;
	req.max_inline_data = init_attr->cap.max_inline_data;
	req.sq_sig_all = init_attr->sq_sig_all ? 1 : 0;
	err = sluice_call(to_sctx(context), SLUICE_OP_CREATE_QP, &req, sizeof(req), -1,
			  &rep, sizeof(rep), &fd, 1);
	if (err)
		goto fail;
	if (!reply_fits_wire(&rep)) {
		close(fd);
		send_destroy_qp(context, rep.handle);
		err = EIO;
		goto fail;
	}
	ring = mmap(NULL, rep.ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	err = errno;
	close(fd);                        /* the mapping keeps the memfd alive */
	if (ring == MAP_FAILED) {
		send_destroy_qp(context, rep.handle);
		goto fail;
	}
	layout = sluice_qp_layout(rep.sq_capacity, rep.rq_capacity);
	pthread_spin_init(&sqp->sq_lock, PTHREAD_PROCESS_PRIVATE);
	pthread_spin_init(&sqp->rq_lock, PTHREAD_PROCESS_PRIVATE);
	sqp->shared = ring;
	sqp->ring_size = rep.ring_size;
	sqp->sq = (struct sluice_send_wqe *)((char *)ring + layout.sq_offset);
	sqp->rq = (struct sluice_recv_wqe *)((char *)ring + layout.rq_offset);
	sqp->sq_cap = rep.sq_capacity;
	sqp->rq_cap = rep.rq_capacity;
	sqp->sq_prod = sluice_load_acquire(&sqp->shared->sq.prod);
	sqp->rq_prod = sluice_load_acquire(&sqp->shared->rq.prod);
	sqp->cap.max_send_wr = rep.max_send_wr;
	sqp->cap.max_recv_wr = rep.max_recv_wr;
	sqp->cap.max_send_sge = rep.max_send_sge;
	sqp->cap.max_recv_sge = rep.max_recv_sge;
	sqp->cap.max_inline_data = rep.max_inline_data;
	sqp->sq_sig_all = init_attr->sq_sig_all;
	/* ibv_create_qp() reports the caps actually granted. */
	init_attr->cap = sqp->cap;

	sqp->ibv_qp.context = context;
	sqp->ibv_qp.qp_context = init_attr->qp_context;
	sqp->ibv_qp.pd = pd;
	sqp->ibv_qp.send_cq = init_attr->send_cq;
	sqp->ibv_qp.recv_cq = init_attr->recv_cq;
	sqp->ibv_qp.handle = rep.handle;
	sqp->ibv_qp.qp_num = rep.qp_num;
	sqp->ibv_qp.state = IBV_QPS_RESET;
	sqp->ibv_qp.qp_type = IBV_QPT_RC;
	pthread_mutex_init(&sqp->ibv_qp.mutex, NULL);
	pthread_cond_init(&sqp->ibv_qp.cond, NULL);
	{
		struct sluice_context *sctx = to_sctx(pd->context);

		pthread_mutex_lock(&sctx->async_lock);
		sqp->next_in_ctx = sctx->qps;
		sctx->qps = sqp;
		pthread_mutex_unlock(&sctx->async_lock);
	}
	return &sqp->ibv_qp;
fail:
	free(sqp);
	errno = err;
	return NULL;
}

static void ah_to_wire(const struct ibv_ah_attr *ah, struct sluice_ah *w)
{
	memcpy(w->dgid, ah->grh.dgid.raw, sizeof(w->dgid));
	w->flow_label = ah->grh.flow_label;
	w->sgid_index = ah->grh.sgid_index;
	w->hop_limit = ah->grh.hop_limit;
	w->traffic_class = ah->grh.traffic_class;
	w->is_global = ah->is_global;
	w->dlid = ah->dlid;
	w->sl = ah->sl;
	w->src_path_bits = ah->src_path_bits;
	w->static_rate = ah->static_rate;
	w->port_num = ah->port_num;
}

static void ah_from_wire(const struct sluice_ah *w, struct ibv_ah_attr *ah)
{
	memcpy(ah->grh.dgid.raw, w->dgid, sizeof(w->dgid));
	ah->grh.flow_label = w->flow_label;
	ah->grh.sgid_index = w->sgid_index;
	ah->grh.hop_limit = w->hop_limit;
	ah->grh.traffic_class = w->traffic_class;
	ah->is_global = w->is_global;
	ah->dlid = w->dlid;
	ah->sl = w->sl;
	ah->src_path_bits = w->src_path_bits;
	ah->static_rate = w->static_rate;
	ah->port_num = w->port_num;
}

/* Copies only what attr_mask names: the rest of *attr is undefined by the
 * verbs API and must not reach the router as if it meant something. */
static void attr_to_wire(const struct ibv_qp_attr *a, int mask, struct sluice_qp_attr *w)
{
	if (mask & IBV_QP_STATE)
		w->qp_state = a->qp_state;
	if (mask & IBV_QP_CUR_STATE)
		w->cur_qp_state = a->cur_qp_state;
	if (mask & IBV_QP_PATH_MTU)
		w->path_mtu = a->path_mtu;
	if (mask & IBV_QP_QKEY)
		w->qkey = a->qkey;
	if (mask & IBV_QP_RQ_PSN)
		w->rq_psn = a->rq_psn;
	if (mask & IBV_QP_SQ_PSN)
		w->sq_psn = a->sq_psn;
	if (mask & IBV_QP_DEST_QPN)
		w->dest_qp_num = a->dest_qp_num;
	if (mask & IBV_QP_ACCESS_FLAGS)
		w->qp_access_flags = a->qp_access_flags;
	if (mask & IBV_QP_CAP) {
		w->max_send_wr = a->cap.max_send_wr;
		w->max_recv_wr = a->cap.max_recv_wr;
		w->max_send_sge = a->cap.max_send_sge;
		w->max_recv_sge = a->cap.max_recv_sge;
		w->max_inline_data = a->cap.max_inline_data;
	}
	if (mask & IBV_QP_PKEY_INDEX)
		w->pkey_index = a->pkey_index;
	if (mask & IBV_QP_MAX_QP_RD_ATOMIC)
		w->max_rd_atomic = a->max_rd_atomic;
	if (mask & IBV_QP_MAX_DEST_RD_ATOMIC)
		w->max_dest_rd_atomic = a->max_dest_rd_atomic;
	if (mask & IBV_QP_MIN_RNR_TIMER)
		w->min_rnr_timer = a->min_rnr_timer;
	if (mask & IBV_QP_PORT)
		w->port_num = a->port_num;
	if (mask & IBV_QP_TIMEOUT)
		w->timeout = a->timeout;
	if (mask & IBV_QP_RETRY_CNT)
		w->retry_cnt = a->retry_cnt;
	if (mask & IBV_QP_RNR_RETRY)
		w->rnr_retry = a->rnr_retry;
	if (mask & IBV_QP_AV)
		ah_to_wire(&a->ah_attr, &w->ah);
}

SLUICE_EXPORT int ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask)
{
	struct sluice_modify_qp_req req = { .handle = qp->handle,
					    .attr_mask = (uint32_t)attr_mask };
	struct sluice_empty_rep rep;
	int err;

	attr_to_wire(attr, attr_mask, &req.attr);
	/* The router checks the transition and the mask; it has published the
	 * new state in the shared page by the time it replies. */
	err = sluice_call(to_sctx(qp->context), SLUICE_OP_MODIFY_QP, &req, sizeof(req), -1,
			  &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;
	if (attr_mask & IBV_QP_STATE)
		qp->state = attr->qp_state;
	return 0;
}

SLUICE_EXPORT int ibv_query_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask,
			       struct ibv_qp_init_attr *init_attr)
{
	struct sluice_handle_req req = { .handle = qp->handle };
	struct sluice_query_qp_rep rep;
	const struct sluice_qp_attr *w = &rep.attr;
	int err;

	err = sluice_call(to_sctx(qp->context), SLUICE_OP_QUERY_QP, &req, sizeof(req), -1,
			  &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;
	memset(attr, 0, sizeof(*attr));
	attr->qp_state = (enum ibv_qp_state)w->qp_state;
	attr->cur_qp_state = (enum ibv_qp_state)w->cur_qp_state;
	attr->path_mtu = (enum ibv_mtu)w->path_mtu;
	attr->qkey = w->qkey;
	attr->rq_psn = w->rq_psn;
	attr->sq_psn = w->sq_psn;
	attr->dest_qp_num = w->dest_qp_num;
	attr->qp_access_flags = w->qp_access_flags;
	attr->cap.max_send_wr = w->max_send_wr;
	attr->cap.max_recv_wr = w->max_recv_wr;
	attr->cap.max_send_sge = w->max_send_sge;
	attr->cap.max_recv_sge = w->max_recv_sge;
	attr->cap.max_inline_data = w->max_inline_data;
	attr->pkey_index = w->pkey_index;
	attr->sq_draining = w->sq_draining;
	attr->max_rd_atomic = w->max_rd_atomic;
	attr->max_dest_rd_atomic = w->max_dest_rd_atomic;
	attr->min_rnr_timer = w->min_rnr_timer;
	attr->port_num = w->port_num;
	attr->timeout = w->timeout;
	attr->retry_cnt = w->retry_cnt;
	attr->rnr_retry = w->rnr_retry;
	ah_from_wire(&w->ah, &attr->ah_attr);

	memset(init_attr, 0, sizeof(*init_attr));
	init_attr->qp_context = qp->qp_context;
	init_attr->send_cq = qp->send_cq;
	init_attr->recv_cq = qp->recv_cq;
	init_attr->srq = NULL;
	init_attr->cap = attr->cap;
	init_attr->qp_type = qp->qp_type;
	init_attr->sq_sig_all = rep.sq_sig_all ? 1 : 0;

	/* As libibverbs: a query that asks for the state refreshes the cache.
	 * Every other field is filled whatever the mask, as providers do. */
	if (attr_mask & IBV_QP_STATE)
		qp->state = attr->qp_state;
	return 0;
}

SLUICE_EXPORT int ibv_destroy_qp(struct ibv_qp *qp)
{
	struct sluice_qp *sqp = to_sqp(qp);
	struct sluice_handle_req req = { .handle = qp->handle };
	struct sluice_empty_rep rep;
	int err;

	err = sluice_call(to_sctx(qp->context), SLUICE_OP_DESTROY_QP, &req, sizeof(req), -1,
			  &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;
	munmap(sqp->shared, sqp->ring_size);
	pthread_spin_destroy(&sqp->sq_lock);
	pthread_spin_destroy(&sqp->rq_lock);
	{
		struct sluice_context *sctx = to_sctx(qp->context);
		struct sluice_qp **p;

		pthread_mutex_lock(&sctx->async_lock);
		for (p = &sctx->qps; *p; p = &(*p)->next_in_ctx) {
			if (*p == sqp) {
				*p = sqp->next_in_ctx;
				break;
			}
		}
		pthread_mutex_unlock(&sctx->async_lock);
	}
	pthread_cond_destroy(&qp->cond);
	pthread_mutex_destroy(&qp->mutex);
	free(sqp);
	return 0;
}
