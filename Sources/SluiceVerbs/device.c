/*
 * device.c — the one virtual device, sessions, and the query verbs.
 *
 * A tenant sees exactly one device, sluice0, with one active InfiniBand port.
 * Every number that identifies it on the fabric (LID, GID) and every limit
 * comes from the router's OPEN reply; only the GUID is computed here, from
 * the socket path, so that ibv_get_device_guid() needs no session.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

/* The router's socket for this tenant; NULL when the operator mounted none. */
static const char *socket_path(void)
{
	const char *path = getenv("SLUICE_SOCKET");

	return path && *path ? path : NULL;
}

/* FNV-1a: stable across runs, so the GUID of a tenant's device never moves. */
static __be64 guid_of(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	return htobe64(h);
}

static void device_put(struct sluice_device *dev)
{
	if (__atomic_sub_fetch(&dev->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		free(dev);
}

SLUICE_EXPORT struct ibv_device **ibv_get_device_list(int *num_devices)
{
	static int warned;
	const char *path = socket_path();
	struct ibv_device **list;
	struct sluice_device *dev;

	if (num_devices)
		*num_devices = 0;
	if (!path) {
		if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
			fprintf(stderr, "libsluice-verbs: SLUICE_SOCKET is not set; no RDMA devices\n");
		list = calloc(1, sizeof(*list));
		if (!list)
			errno = ENOMEM;
		return list;
	}
	list = calloc(2, sizeof(*list));
	dev = calloc(1, sizeof(*dev));
	if (!list || !dev) {
		free(list);
		free(dev);
		errno = ENOMEM;
		return NULL;
	}
	dev->ibv_dev.node_type = IBV_NODE_CA;
	dev->ibv_dev.transport_type = IBV_TRANSPORT_IB;
	strcpy(dev->ibv_dev.name, SLUICE_DEVICE_NAME);
	strcpy(dev->ibv_dev.dev_name, SLUICE_DEVICE_NAME);
	/* dev_path/ibdev_path stay empty: there is no sysfs node behind it. */
	dev->guid = guid_of(path);
	dev->refcount = 1;
	list[0] = &dev->ibv_dev;
	if (num_devices)
		*num_devices = 1;
	return list;
}

SLUICE_EXPORT void ibv_free_device_list(struct ibv_device **list)
{
	if (!list)
		return;
	for (struct ibv_device **d = list; *d; d++)
		device_put(to_sdev(*d));
	free(list);
}

SLUICE_EXPORT const char *ibv_get_device_name(struct ibv_device *device)
{
	return device->name;
}

SLUICE_EXPORT __be64 ibv_get_device_guid(struct ibv_device *device)
{
	return to_sdev(device)->guid;
}

/* There is no kernel device behind sluice0, hence no kernel index. */
SLUICE_EXPORT int ibv_get_device_index(struct ibv_device *device)
{
	(void)device;
	return -1;
}

SLUICE_EXPORT struct ibv_context *ibv_open_device(struct ibv_device *device)
{
	const char *path = socket_path();
	struct sluice_context *sctx;
	struct ibv_context *ctx;
	int err;

	if (!device) {
		errno = EINVAL;
		return NULL;
	}
	/* Read again on every open: one process may hold sessions to several
	 * sockets (the integration tests do, via setenv). */
	if (!path) {
		errno = ENODEV;
		return NULL;
	}
	if (strlen(path) >= sizeof(sctx->socket_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	sctx = calloc(1, sizeof(*sctx));
	if (!sctx) {
		errno = ENOMEM;
		return NULL;
	}
	ctx = &sctx->vctx.context;
	ctx->cmd_fd = -1;
	ctx->async_fd = -1;
	sctx->doorbell_fd = -1;
	pthread_mutex_init(&sctx->ctl_lock, NULL);
	pthread_mutex_init(&sctx->async_lock, NULL);
	strcpy(sctx->socket_path, path);
	sctx->guid = guid_of(path);

	/* The session also brings the async event pipe: async_fd. */
	err = sluice_session_open(sctx, path);
	if (err)
		goto fail;

	/* A provider-style extended context, so the static inline verbs in
	 * verbs.h find query_port (and NULL, i.e. EOPNOTSUPP, elsewhere). */
	sctx->vctx.sz = sizeof(struct verbs_context);
	ctx->abi_compat = __VERBS_ABI_IS_EXTENDED;
	ctx->device = device;
	ctx->num_comp_vectors = 1;
	pthread_mutex_init(&ctx->mutex, NULL);
	sluice_set_ops(&sctx->vctx);

	sctx->dev = to_sdev(device);
	__atomic_add_fetch(&sctx->dev->refcount, 1, __ATOMIC_ACQ_REL);
	return ctx;
fail:
	pthread_mutex_destroy(&sctx->async_lock);
	pthread_mutex_destroy(&sctx->ctl_lock);
	free(sctx);
	errno = err;
	return NULL;
}

SLUICE_EXPORT int ibv_close_device(struct ibv_context *context)
{
	struct sluice_context *sctx = to_sctx(context);

	sluice_forget_context_mrs(sctx);
	sluice_session_close(sctx);
	close(context->async_fd);
	pthread_mutex_destroy(&context->mutex);
	pthread_mutex_destroy(&sctx->async_lock);
	pthread_mutex_destroy(&sctx->ctl_lock);
	device_put(sctx->dev);
	free(sctx);
	return 0;
}

/* One byte on async_fd per event the router put in the session page's
 * async ring (sluice_wire.h). Blocks like libibverbs unless the application
 * made async_fd non-blocking (then EAGAIN). An event for a QP this process
 * destroyed meanwhile is skipped. */
SLUICE_EXPORT int ibv_get_async_event(struct ibv_context *context,
				      struct ibv_async_event *event)
{
	struct sluice_context *sctx = to_sctx(context);

	for (;;) {
		struct sluice_async_event e;
		struct sluice_qp *qp;
		uint32_t prod;
		uint8_t token;
		ssize_t n = read(context->async_fd, &token, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO; /* the router is gone */
			return -1;
		}
		pthread_mutex_lock(&sctx->async_lock);
		prod = sluice_load_acquire(&sctx->session->async.prod);
		if (prod == sctx->async_cons) {
			pthread_mutex_unlock(&sctx->async_lock);
			continue;
		}
		e = sctx->session->async_events[sctx->async_cons & (SLUICE_ASYNC_RING - 1)];
		sctx->async_cons++;
		sluice_store_release(&sctx->session->async.cons, sctx->async_cons);
		for (qp = sctx->qps; qp; qp = qp->next_in_ctx)
			if (qp->ibv_qp.qp_num == e.qp_num)
				break;
		pthread_mutex_unlock(&sctx->async_lock);
		if (!qp)
			continue;
		memset(event, 0, sizeof(*event));
		event->element.qp = &qp->ibv_qp;
		event->event_type = (enum ibv_event_type)e.event_type;
		return 0;
	}
}

SLUICE_EXPORT void ibv_ack_async_event(struct ibv_async_event *event)
{
	struct ibv_qp *qp;

	if (event->event_type != IBV_EVENT_QP_FATAL)
		return;
	qp = event->element.qp;
	pthread_mutex_lock(&qp->mutex);
	qp->events_completed++;
	pthread_cond_signal(&qp->cond);
	pthread_mutex_unlock(&qp->mutex);
}

SLUICE_EXPORT int ibv_query_device(struct ibv_context *context,
				   struct ibv_device_attr *attr)
{
	const struct sluice_context *sctx = to_sctx(context);
	const struct sluice_open_rep *info = &sctx->info;

	memset(attr, 0, sizeof(*attr));
	snprintf(attr->fw_ver, sizeof(attr->fw_ver), "%s", SLUICE_FW_VER);
	attr->node_guid = sctx->guid;
	attr->sys_image_guid = sctx->guid;
	attr->max_mr_size = info->max_mr_size;
	attr->page_size_cap = SLUICE_PAGE;
	attr->max_qp = (int)info->max_qp;
	attr->max_qp_wr = (int)info->max_qp_wr;
	attr->max_sge = (int)info->max_sge;
	attr->max_sge_rd = (int)info->max_sge;
	attr->max_cq = (int)info->max_cq;
	attr->max_cqe = (int)info->max_cqe;
	attr->max_mr = (int)info->max_mr;
	attr->max_pd = (int)info->max_pd;
	attr->max_qp_rd_atom = SLUICE_RD_ATOM;
	attr->max_qp_init_rd_atom = SLUICE_RD_ATOM;
	attr->max_res_rd_atom = (int)info->max_qp * SLUICE_RD_ATOM;
	/* Atomics are atomic with respect to every access through the device
	 * (the router uses CPU atomics, but a hardware backend need not). */
	attr->atomic_cap = IBV_ATOMIC_HCA;
	attr->max_pkeys = 1;
	attr->phys_port_cnt = 1;
	return 0;
}

static void fill_port_attr(const struct sluice_context *sctx, struct ibv_port_attr *attr)
{
	const struct sluice_open_rep *info = &sctx->info;

	memset(attr, 0, sizeof(*attr));
	attr->state = IBV_PORT_ACTIVE;
	attr->max_mtu = IBV_MTU_4096;
	attr->active_mtu = (enum ibv_mtu)info->active_mtu;
	attr->gid_tbl_len = 1;
	attr->max_msg_sz = info->max_mr_size > UINT32_MAX ? UINT32_MAX
							   : (uint32_t)info->max_mr_size;
	attr->pkey_tbl_len = 1;
	attr->lid = info->lid;
	attr->max_vl_num = 1;             /* VL0 only */
	attr->active_width = 2;           /* 4X */
	attr->active_speed = 32;          /* EDR: a nominal 100 Gb/s */
	attr->phys_state = 5;             /* LinkUp */
	attr->link_layer = IBV_LINK_LAYER_INFINIBAND;
}

/* verbs_context->query_port: what the ibv_query_port() macro calls. */
int sluice_query_port(struct ibv_context *context, uint8_t port_num,
		      struct ibv_port_attr *attr, size_t attr_len)
{
	struct ibv_port_attr full;

	if (port_num != SLUICE_PORT)
		return EINVAL;
	fill_port_attr(to_sctx(context), &full);
	memset(attr, 0, attr_len);
	memcpy(attr, &full, attr_len < sizeof(full) ? attr_len : sizeof(full));
	return 0;
}

/* The exported symbol: what callers that cannot use the macro reach (old
 * binaries, and Swift, which imports no function-like macros). Like
 * libibverbs, it fills the whole current struct; the parentheses keep
 * verbs.h's macro from expanding the name. */
SLUICE_EXPORT int (ibv_query_port)(struct ibv_context *context, uint8_t port_num,
				   struct _compat_ibv_port_attr *port_attr)
{
	return sluice_query_port(context, port_num, (struct ibv_port_attr *)port_attr,
				 sizeof(struct ibv_port_attr));
}

SLUICE_EXPORT int ibv_query_gid(struct ibv_context *context, uint8_t port_num,
				int index, union ibv_gid *gid)
{
	if (port_num != SLUICE_PORT || index != 0) {
		errno = EINVAL;
		return -1;
	}
	memcpy(gid->raw, to_sctx(context)->info.gid, sizeof(gid->raw));
	return 0;
}

/* Private to rdma-core (IBVERBS_PRIVATE_34, no public prototype), yet Debian's
 * ibv_devinfo calls it, and the real one would read our context as a kernel
 * one. The type is rdma-core's enum ibv_gid_type_sysfs, whose
 * IBV_GID_TYPE_SYSFS_IB_ROCE_V1 (0) covers InfiniBand GIDs. */
int ibv_query_gid_type(struct ibv_context *context, uint8_t port_num,
		       unsigned int index, int *type);

SLUICE_EXPORT int ibv_query_gid_type(struct ibv_context *context, uint8_t port_num,
				     unsigned int index, int *type)
{
	(void)context;
	if (port_num != SLUICE_PORT || index != 0) {
		errno = EINVAL;
		return -1;
	}
	*type = 0;
	return 0;
}

static void fill_gid_entry(struct ibv_context *context, void *entry, size_t entry_size)
{
	struct ibv_gid_entry e = {
		.gid_index = 0,
		.port_num = SLUICE_PORT,
		.gid_type = IBV_GID_TYPE_IB,
		.ndev_ifindex = 0,
	};

	memcpy(e.gid.raw, to_sctx(context)->info.gid, sizeof(e.gid.raw));
	memset(entry, 0, entry_size);
	memcpy(entry, &e, sizeof(e));
}

SLUICE_EXPORT int _ibv_query_gid_ex(struct ibv_context *context, uint32_t port_num,
				    uint32_t gid_index, struct ibv_gid_entry *entry,
				    uint32_t flags, size_t entry_size)
{
	if (flags || entry_size < sizeof(*entry) || port_num != SLUICE_PORT ||
	    gid_index != 0)
		return EINVAL;
	fill_gid_entry(context, entry, entry_size);
	return 0;
}

SLUICE_EXPORT ssize_t _ibv_query_gid_table(struct ibv_context *context,
					   struct ibv_gid_entry *entries,
					   size_t max_entries, uint32_t flags,
					   size_t entry_size)
{
	if (flags || entry_size < sizeof(*entries) || max_entries < 1)
		return -EINVAL;
	fill_gid_entry(context, entries, entry_size);
	return 1;
}

SLUICE_EXPORT int ibv_query_pkey(struct ibv_context *context, uint8_t port_num,
				 int index, __be16 *pkey)
{
	(void)context;
	if (port_num != SLUICE_PORT || index != 0) {
		errno = EINVAL;
		return -1;
	}
	*pkey = htobe16(SLUICE_PKEY);
	return 0;
}

SLUICE_EXPORT int ibv_get_pkey_index(struct ibv_context *context, uint8_t port_num,
				     __be16 pkey)
{
	(void)context;
	if (port_num != SLUICE_PORT) {
		errno = EINVAL;
		return -1;
	}
	if (pkey != htobe16(SLUICE_PKEY)) {
		errno = ENOENT;
		return -1;
	}
	return 0;
}
