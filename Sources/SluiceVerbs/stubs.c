/*
 * stubs.c — every other verb that takes a Sluice object, refused cleanly.
 *
 * Under LD_PRELOAD the real libibverbs is still loaded: any exported verb
 * left undefined here would run its code on our structs, which it does not
 * know. So each one is defined, and fails the way its man page describes
 * (NULL with errno, or an errno value, or -1), with EOPNOTSUPP as the
 * reason: Sluice supports RC queue pairs only, with no SRQ, AH, multicast,
 * memory window, ECE, import/export or resize.
 */
#define _GNU_SOURCE
#include <errno.h>

#include "internal.h"

/* --- address handles (UD only) ---------------------------------------- */

SLUICE_EXPORT struct ibv_ah *ibv_create_ah(struct ibv_pd *pd, struct ibv_ah_attr *attr)
{
	(void)pd, (void)attr;
	errno = EOPNOTSUPP;
	return NULL;
}

SLUICE_EXPORT int ibv_destroy_ah(struct ibv_ah *ah)
{
	(void)ah;
	return EOPNOTSUPP;
}

SLUICE_EXPORT int ibv_init_ah_from_wc(struct ibv_context *context, uint8_t port_num,
				      struct ibv_wc *wc, struct ibv_grh *grh,
				      struct ibv_ah_attr *ah_attr)
{
	(void)context, (void)port_num, (void)wc, (void)grh, (void)ah_attr;
	errno = EOPNOTSUPP;
	return -1;
}

SLUICE_EXPORT struct ibv_ah *ibv_create_ah_from_wc(struct ibv_pd *pd, struct ibv_wc *wc,
						   struct ibv_grh *grh, uint8_t port_num)
{
	(void)pd, (void)wc, (void)grh, (void)port_num;
	errno = EOPNOTSUPP;
	return NULL;
}

SLUICE_EXPORT int ibv_resolve_eth_l2_from_gid(struct ibv_context *context,
					      struct ibv_ah_attr *attr,
					      uint8_t eth_mac[ETHERNET_LL_SIZE],
					      uint16_t *vid)
{
	(void)context, (void)attr, (void)eth_mac, (void)vid;
	return EOPNOTSUPP;           /* the link layer is InfiniBand */
}

/* --- shared receive queues -------------------------------------------- */

SLUICE_EXPORT struct ibv_srq *ibv_create_srq(struct ibv_pd *pd,
					     struct ibv_srq_init_attr *srq_init_attr)
{
	(void)pd, (void)srq_init_attr;
	errno = EOPNOTSUPP;
	return NULL;
}

SLUICE_EXPORT int ibv_modify_srq(struct ibv_srq *srq, struct ibv_srq_attr *srq_attr,
				 int srq_attr_mask)
{
	(void)srq, (void)srq_attr, (void)srq_attr_mask;
	return EOPNOTSUPP;
}

SLUICE_EXPORT int ibv_query_srq(struct ibv_srq *srq, struct ibv_srq_attr *srq_attr)
{
	(void)srq, (void)srq_attr;
	return EOPNOTSUPP;
}

SLUICE_EXPORT int ibv_destroy_srq(struct ibv_srq *srq)
{
	(void)srq;
	return EOPNOTSUPP;
}

/* ops.post_srq_recv: unreachable without an SRQ, but never left NULL. */
int sluice_post_srq_recv(struct ibv_srq *srq, struct ibv_recv_wr *wr,
			 struct ibv_recv_wr **bad_wr)
{
	(void)srq;
	*bad_wr = wr;
	return EOPNOTSUPP;
}

/* --- memory windows (ops.bind_mw, ops.dealloc_mw) ---------------------- */

int sluice_bind_mw(struct ibv_qp *qp, struct ibv_mw *mw, struct ibv_mw_bind *bind)
{
	(void)qp, (void)mw, (void)bind;
	return EOPNOTSUPP;
}

int sluice_dealloc_mw(struct ibv_mw *mw)
{
	(void)mw;
	return EOPNOTSUPP;
}

/* --- multicast (UD only) ------------------------------------------------ */

SLUICE_EXPORT int ibv_attach_mcast(struct ibv_qp *qp, const union ibv_gid *gid, uint16_t lid)
{
	(void)qp, (void)gid, (void)lid;
	return EOPNOTSUPP;
}

SLUICE_EXPORT int ibv_detach_mcast(struct ibv_qp *qp, const union ibv_gid *gid, uint16_t lid)
{
	(void)qp, (void)gid, (void)lid;
	return EOPNOTSUPP;
}

/* --- CQ and MR changes in place ------------------------------------------ */

SLUICE_EXPORT int ibv_resize_cq(struct ibv_cq *cq, int cqe)
{
	(void)cq, (void)cqe;
	return EOPNOTSUPP;
}

/* The old MR stays valid: IBV_REREG_MR_ERR_INPUT says exactly that. */
SLUICE_EXPORT int ibv_rereg_mr(struct ibv_mr *mr, int flags, struct ibv_pd *pd, void *addr,
			       size_t length, int access)
{
	(void)mr, (void)flags, (void)pd, (void)addr, (void)length, (void)access;
	errno = EOPNOTSUPP;
	return IBV_REREG_MR_ERR_INPUT;
}

SLUICE_EXPORT struct ibv_mr *ibv_reg_dmabuf_mr(struct ibv_pd *pd, uint64_t offset,
					       size_t length, uint64_t iova, int fd,
					       int access)
{
	(void)pd, (void)offset, (void)length, (void)iova, (void)fd, (void)access;
	errno = EOPNOTSUPP;
	return NULL;
}

/* --- extended QP features ------------------------------------------------ */

SLUICE_EXPORT struct ibv_qp_ex *ibv_qp_to_qp_ex(struct ibv_qp *qp)
{
	(void)qp;
	errno = EOPNOTSUPP;          /* no ibv_create_qp_ex, so no extended QPs */
	return NULL;
}

SLUICE_EXPORT int ibv_set_ece(struct ibv_qp *qp, struct ibv_ece *ece)
{
	(void)qp, (void)ece;
	return EOPNOTSUPP;
}

SLUICE_EXPORT int ibv_query_ece(struct ibv_qp *qp, struct ibv_ece *ece)
{
	(void)qp, (void)ece;
	return EOPNOTSUPP;
}

/* 0 = no promise: data may land in any order within a WQE. */
SLUICE_EXPORT int ibv_query_qp_data_in_order(struct ibv_qp *qp, enum ibv_wr_opcode op,
					     uint32_t flags)
{
	(void)qp, (void)op, (void)flags;
	return 0;
}

/* --- sharing objects between processes ----------------------------------- */

SLUICE_EXPORT struct ibv_context *ibv_import_device(int cmd_fd)
{
	(void)cmd_fd;
	errno = EOPNOTSUPP;
	return NULL;
}

SLUICE_EXPORT struct ibv_pd *ibv_import_pd(struct ibv_context *context, uint32_t pd_handle)
{
	(void)context, (void)pd_handle;
	errno = EOPNOTSUPP;
	return NULL;
}

SLUICE_EXPORT void ibv_unimport_pd(struct ibv_pd *pd)
{
	(void)pd;                    /* nothing can have been imported */
}

SLUICE_EXPORT struct ibv_mr *ibv_import_mr(struct ibv_pd *pd, uint32_t mr_handle)
{
	(void)pd, (void)mr_handle;
	errno = EOPNOTSUPP;
	return NULL;
}

SLUICE_EXPORT void ibv_unimport_mr(struct ibv_mr *mr)
{
	(void)mr;
}

SLUICE_EXPORT struct ibv_dm *ibv_import_dm(struct ibv_context *context, uint32_t dm_handle)
{
	(void)context, (void)dm_handle;
	errno = EOPNOTSUPP;
	return NULL;
}

SLUICE_EXPORT void ibv_unimport_dm(struct ibv_dm *dm)
{
	(void)dm;
}
