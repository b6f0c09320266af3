/*
 * CIBVerbs: libibverbs for the router's verbs backend (pkg-config
 * libibverbs). Only sluice-router links it; the tenant library never does.
 *
 * verbs.h spells several verbs as function-like macros or static inline
 * functions that dispatch through the context's ops table (ibv_query_port,
 * ibv_reg_mr, ibv_post_send, ibv_post_recv, ibv_poll_cq). Swift imports no
 * function-like macro, so each one the backend uses has a plain inline
 * wrapper here that expands it exactly as a C program would.
 */
#ifndef SLUICE_CIBVERBS_SHIM_H
#define SLUICE_CIBVERBS_SHIM_H

#include <infiniband/verbs.h>

static inline int sluice_ibv_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
	return ibv_query_port(ctx, port, attr);
}

static inline struct ibv_mr *sluice_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	return ibv_reg_mr(pd, addr, length, access);
}

static inline int sluice_ibv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	return ibv_post_send(qp, wr, bad);
}

static inline int sluice_ibv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	return ibv_post_recv(qp, wr, bad);
}

static inline int sluice_ibv_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
	return ibv_poll_cq(cq, n, wc);
}

/* The device's name without going through struct ibv_device's fixed array. */
static inline const char *sluice_ibv_device_name(struct ibv_device *dev)
{
	return ibv_get_device_name(dev);
}

#endif
