/*
 * ops.c — the one ops table.
 *
 * Most verbs are exported functions, but verbs.h implements several as
 * static inline wrappers that jump through the context: ibv_post_send,
 * ibv_post_recv, ibv_poll_cq, ibv_req_notify_cq, ibv_post_srq_recv,
 * ibv_bind_mw and ibv_dealloc_mw through context->ops, and ibv_query_port
 * (and every extended verb) through the verbs_context. An application
 * compiled against verbs.h reaches the library only through this table for
 * those. A NULL extended op makes its wrapper return EOPNOTSUPP, which is
 * the answer for everything Sluice does not implement.
 */
#define _GNU_SOURCE
#include "internal.h"

/* The subset of rdma-core's verbs_context_ops this library provides. */
struct sluice_context_ops {
	int (*query_port)(struct ibv_context *context, uint8_t port_num,
			  struct ibv_port_attr *port_attr, size_t port_attr_len);
	struct ibv_mw *(*alloc_mw)(struct ibv_pd *pd, enum ibv_mw_type type);
	int (*bind_mw)(struct ibv_qp *qp, struct ibv_mw *mw, struct ibv_mw_bind *mw_bind);
	int (*dealloc_mw)(struct ibv_mw *mw);
	int (*poll_cq)(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc);
	int (*req_notify_cq)(struct ibv_cq *cq, int solicited_only);
	int (*post_srq_recv)(struct ibv_srq *srq, struct ibv_recv_wr *recv_wr,
			     struct ibv_recv_wr **bad_recv_wr);
	int (*post_send)(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr);
	int (*post_recv)(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr);
};

static const struct sluice_context_ops sluice_ops = {
	.query_port = sluice_query_port,
	.alloc_mw = NULL,                 /* ibv_alloc_mw: EOPNOTSUPP */
	.bind_mw = sluice_bind_mw,
	.dealloc_mw = sluice_dealloc_mw,
	.poll_cq = sluice_poll_cq,
	.req_notify_cq = sluice_req_notify_cq,
	.post_srq_recv = sluice_post_srq_recv,
	.post_send = sluice_post_send,
	.post_recv = sluice_post_recv,
};

void sluice_set_ops(struct verbs_context *vctx)
{
	struct ibv_context_ops *ops = &vctx->context.ops;

	vctx->query_port = sluice_ops.query_port;
	ops->alloc_mw = sluice_ops.alloc_mw;
	ops->bind_mw = sluice_ops.bind_mw;
	ops->dealloc_mw = sluice_ops.dealloc_mw;
	ops->poll_cq = sluice_ops.poll_cq;
	ops->req_notify_cq = sluice_ops.req_notify_cq;
	ops->post_srq_recv = sluice_ops.post_srq_recv;
	ops->post_send = sluice_ops.post_send;
	ops->post_recv = sluice_ops.post_recv;
}
