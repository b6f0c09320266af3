/*
 * bystander — a tenant minding its own business while the attacks run.
 *
 * Two sessions with one QP each, connected to each other; each iteration writes a
 * fresh pattern with RDMA WRITE, then SENDs the iteration number, and checks
 * every completion and every byte. It runs until a line "STOP" arrives on
 * stdin, then prints
 *
 *   BYSTANDER ok iterations=<n> maxgap_us=<longest iteration>
 *
 * and exits 0. At the first failed completion or wrong byte it prints
 * "BYSTANDER FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attack_common.h"

#define SIZE 4096

static uint64_t micros(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000 + (uint64_t)t.tv_nsec / 1000;
}

static __attribute__((noreturn)) void fail(uint64_t i, const char *what, outcome o)
{
	say("BYSTANDER FAIL iteration=%llu what=%s %s", (unsigned long long)i, what, outcome_str(o));
	exit(1);
}

static int stop_requested(void)
{
	struct pollfd p = { .fd = 0, .events = POLLIN };

	/* Any input, or its end, stops the loop. */
	return poll(&p, 1, 0) == 1;
}

int main(void)
{
	int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	struct ibv_qp *qa, *qb;
	struct ibv_mr *src, *dst, *msg, *rcv;
	uint64_t i, maxgap = 0, last;
	struct dest da = { 0 }, db = { 0 };
	struct ep e, f;           /* the sender, the receiver */
	int err;

	attack_init();
	alarm(0);                 /* runs as long as the test needs it */
	ep_open(&e);
	ep_open(&f);
	qa = ep_create_qp(&e, e.pd);
	qb = ep_create_qp(&f, f.pd);
	src = ep_reg(e.pd, SIZE, rw);
	msg = ep_reg(e.pd, 8, rw);
	dst = ep_reg(f.pd, SIZE, rw);
	rcv = ep_reg(f.pd, 8, rw);
	da.qpn = qb->qp_num;
	da.lid = f.lid;
	db.qpn = qa->qp_num;
	db.lid = e.lid;
	if ((err = qp_connect(qa, &da, rw)) || (err = qp_connect(qb, &db, rw)))
		setup_failed("qp_connect", err);
	say("READY");

	last = micros();
	for (i = 0; !stop_requested(); i++) {
		uint8_t *s = src->addr, *d = dst->addr;
		struct ibv_sge rs = { .addr = (uintptr_t)rcv->addr, .length = 8, .lkey = rcv->lkey };
		struct ibv_recv_wr rwr = { .wr_id = i, .sg_list = &rs, .num_sge = 1 }, *bad;
		struct ibv_wc wc;
		uint64_t t, deadline;
		outcome o;
		int n;

		for (int k = 0; k < SIZE; k++)
			s[k] = (uint8_t)(i * 31 + (uint64_t)k * 7);
		if ((err = ibv_post_recv(qb, &rwr, &bad)))
			fail(i, "post_recv", -err);
		o = rdma(&e, qa, IBV_WR_RDMA_WRITE, s, SIZE, src->lkey, (uintptr_t)d, dst->rkey);
		if (o != IBV_WC_SUCCESS)
			fail(i, "write", o);
		if (memcmp(s, d, SIZE) != 0)
			fail(i, "written_bytes", 0);
		memcpy(msg->addr, &i, 8);
		o = send_msg(&e, qa, msg->addr, 8, msg->lkey);
		if (o != IBV_WC_SUCCESS)
			fail(i, "send", o);
		/* The receive completion: usually already there. */
		deadline = micros() + 5000000;
		while ((n = ibv_poll_cq(f.cq, 1, &wc)) == 0 && micros() < deadline)
			usleep(20);
		if (n != 1 || wc.status != IBV_WC_SUCCESS || wc.wr_id != i || wc.byte_len != 8)
			fail(i, "recv", n == 1 ? (outcome)wc.status : -1);
		if (memcmp(rcv->addr, &i, 8) != 0)
			fail(i, "received_bytes", 0);
		t = micros();
		if (t - last > maxgap)
			maxgap = t - last;
		last = t;
		usleep(200);      /* leave the machine's cores to the attacks */
	}
	say("BYSTANDER ok iterations=%llu maxgap_us=%llu", (unsigned long long)i, (unsigned long long)maxgap);
	return 0;
}
