/*
 * cq.c — completion channels, completion queues and completion events.
 *
 * A CQ is a ring in a memfd the router creates; the router produces, the
 * library consumes (datapath.c). A completion channel is the read end of a
 * pipe the router creates and keeps the write end of: when an armed CQ gets
 * a completion the router increments that CQ's shared `events` counter, then
 * writes one byte to the pipe. Each byte read therefore stands for one event
 * of some CQ whose counter is ahead of what the library handed out.
 *
 * Why the router makes the fd, and a pipe: sluice_wire.h first had the
 * library lend an eventfd. An eventfd passed over SCM_RIGHTS shares its open
 * file description, so a tenant could clear O_NONBLOCK and saturate the
 * counter, and the router's next write would block its only thread. With a
 * pipe, the router's write end is a description no tenant holds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* --- completion channels ------------------------------------------------- */

SLUICE_EXPORT struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *context)
{
	struct sluice_msg_hdr req = { 0 };   /* the request is the bare header */
	struct sluice_handle_rep rep;
	struct sluice_channel *sch;
	int err, fd;

	sch = calloc(1, sizeof(*sch));
	if (!sch) {
		errno = ENOMEM;
		return NULL;
	}
	/* The reply carries the channel's fd: the pipe's read end. */
	err = sluice_call(to_sctx(context), SLUICE_OP_CREATE_COMP_CHANNEL,
			  &req, sizeof(req), -1, &rep, sizeof(rep), &fd, 1);
	if (err)
		goto fail;
	pthread_mutex_init(&sch->lock, NULL);
	sch->handle = rep.handle;
	sch->ibv_chan.context = context;
	sch->ibv_chan.fd = fd;
	sch->ibv_chan.refcnt = 0;
	return &sch->ibv_chan;
fail:
	free(sch);
	errno = err;
	return NULL;
}

SLUICE_EXPORT int ibv_destroy_comp_channel(struct ibv_comp_channel *channel)
{
	struct sluice_channel *sch = to_schan(channel);
	struct sluice_handle_req req = { .handle = sch->handle };
	struct sluice_empty_rep rep;
	int busy, err;

	pthread_mutex_lock(&sch->lock);
	busy = sch->cqs != NULL;
	pthread_mutex_unlock(&sch->lock);
	if (busy)
		return EBUSY;             /* as libibverbs: CQs still use it */
	err = sluice_call(to_sctx(channel->context), SLUICE_OP_DESTROY_COMP_CHANNEL,
			  &req, sizeof(req), -1, &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;
	close(channel->fd);
	pthread_mutex_destroy(&sch->lock);
	free(sch);
	return 0;
}

/* --- completion queues ---------------------------------------------------- */

static void send_destroy_cq(struct ibv_context *context, uint32_t handle)
{
	struct sluice_handle_req req = { .handle = handle };
	struct sluice_empty_rep rep;

	(void)sluice_call(to_sctx(context), SLUICE_OP_DESTROY_CQ, &req, sizeof(req), -1,
			  &rep, sizeof(rep), NULL, 0);
}

SLUICE_EXPORT struct ibv_cq *ibv_create_cq(struct ibv_context *context, int cqe,
					   void *cq_context,
					   struct ibv_comp_channel *channel,
					   int comp_vector)
{
	struct sluice_context *sctx = to_sctx(context);
	struct sluice_create_cq_req req = { 0 };
	struct sluice_create_cq_rep rep;
	struct sluice_cq *scq;
	void *ring;
	int err, fd;

	if (cqe < 1 || (uint32_t)cqe > sctx->info.max_cqe ||
	    comp_vector < 0 || comp_vector >= context->num_comp_vectors ||
	    (channel && channel->context != context)) {
		errno = EINVAL;
		return NULL;
	}
	scq = calloc(1, sizeof(*scq));
	if (!scq) {
		errno = ENOMEM;
		return NULL;
	}
	req.cqe = (uint32_t)cqe;
	req.channel = channel ? to_schan(channel)->handle : SLUICE_NO_HANDLE;
	err = sluice_call(sctx, SLUICE_OP_CREATE_CQ, &req, sizeof(req), -1,
			  &rep, sizeof(rep), &fd, 1);
	if (err)
		goto fail;
	/* The ring geometry must be what both sides compute from capacity. */
	if (rep.capacity < 2 || (rep.capacity & (rep.capacity - 1)) ||
	    rep.capacity > SLUICE_MAX_RING || rep.ring_size < sluice_cq_size(rep.capacity)) {
		close(fd);
		send_destroy_cq(context, rep.handle);
		err = EIO;
		goto fail;
	}
	ring = mmap(NULL, rep.ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	err = errno;
	close(fd);                        /* the mapping keeps the memfd alive */
	if (ring == MAP_FAILED) {
		send_destroy_cq(context, rep.handle);
		goto fail;
	}
	pthread_spin_init(&scq->lock, PTHREAD_PROCESS_PRIVATE);
	scq->shared = ring;
	scq->entries = (struct sluice_cqe *)((char *)ring + sluice_cq_entries_offset());
	scq->capacity = rep.capacity;
	scq->ring_size = rep.ring_size;
	scq->cons = sluice_load_acquire(&scq->shared->ring.cons);
	scq->events_taken = sluice_load_acquire(&scq->shared->events);

	scq->ibv_cq.context = context;
	scq->ibv_cq.channel = channel;
	scq->ibv_cq.cq_context = cq_context;
	scq->ibv_cq.handle = rep.handle;
	scq->ibv_cq.cqe = (int)(rep.capacity - 1);
	pthread_mutex_init(&scq->ibv_cq.mutex, NULL);
	pthread_cond_init(&scq->ibv_cq.cond, NULL);

	if (channel) {
		struct sluice_channel *sch = to_schan(channel);

		pthread_mutex_lock(&sch->lock);
		scq->next_in_channel = sch->cqs;
		sch->cqs = scq;
		channel->refcnt++;
		pthread_mutex_unlock(&sch->lock);
	}
	return &scq->ibv_cq;
fail:
	free(scq);
	errno = err;
	return NULL;
}

SLUICE_EXPORT int ibv_destroy_cq(struct ibv_cq *cq)
{
	struct sluice_cq *scq = to_scq(cq);
	struct sluice_handle_req req = { .handle = cq->handle };
	struct sluice_empty_rep rep;
	uint32_t handed_out = 0;
	int err;

	err = sluice_call(to_sctx(cq->context), SLUICE_OP_DESTROY_CQ, &req, sizeof(req),
			  -1, &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;               /* EBUSY while a QP uses it */
	if (cq->channel) {
		struct sluice_channel *sch = to_schan(cq->channel);

		pthread_mutex_lock(&sch->lock);
		for (struct sluice_cq **pp = &sch->cqs; *pp; pp = &(*pp)->next_in_channel) {
			if (*pp == scq) {
				*pp = scq->next_in_channel;
				break;
			}
		}
		cq->channel->refcnt--;
		handed_out = scq->events_handed;
		pthread_mutex_unlock(&sch->lock);
	}
	/* As libibverbs: wait until every event handed out is acknowledged, so
	 * no ibv_ack_cq_events() touches a freed CQ. */
	pthread_mutex_lock(&cq->mutex);
	while ((int32_t)(cq->comp_events_completed - handed_out) < 0)
		pthread_cond_wait(&cq->cond, &cq->mutex);
	pthread_mutex_unlock(&cq->mutex);

	munmap(scq->shared, scq->ring_size);
	pthread_spin_destroy(&scq->lock);
	pthread_cond_destroy(&cq->cond);
	pthread_mutex_destroy(&cq->mutex);
	free(scq);
	return 0;
}

/* --- completion events ---------------------------------------------------- */

SLUICE_EXPORT int ibv_get_cq_event(struct ibv_comp_channel *channel,
				   struct ibv_cq **cq, void **cq_context)
{
	struct sluice_channel *sch = to_schan(channel);

	for (;;) {
		struct sluice_cq *found = NULL;
		char token;
		ssize_t n;

		/* Blocks unless the application made the fd non-blocking, in
		 * which case EAGAIN is its "no event yet". */
		n = read(channel->fd, &token, sizeof(token));
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = EIO;      /* the router closed the channel: session gone */
		if (n != sizeof(token))
			return -1;

		pthread_mutex_lock(&sch->lock);
		for (struct sluice_cq *c = sch->cqs; c; c = c->next_in_channel) {
			uint32_t events = sluice_load_acquire(&c->shared->events);

			if ((int32_t)(events - c->events_taken) > 0) {
				c->events_taken++;
				c->events_handed++;
				found = c;
				break;
			}
		}
		pthread_mutex_unlock(&sch->lock);
		/* No CQ is ahead: the token belonged to a CQ destroyed since.
		 * Wait for the next one. */
		if (found) {
			*cq = &found->ibv_cq;
			*cq_context = found->ibv_cq.cq_context;
			return 0;
		}
	}
}

SLUICE_EXPORT void ibv_ack_cq_events(struct ibv_cq *cq, unsigned int nevents)
{
	pthread_mutex_lock(&cq->mutex);
	cq->comp_events_completed += nevents;
	pthread_cond_signal(&cq->cond);
	pthread_mutex_unlock(&cq->mutex);
}
