/*
 * attack_toctou — pull memory away from under the router, and scribble on
 * the rings while it reads them.
 *
 * The library backs our region with a sealed memfd that the router maps
 * too; we find it in /proc/self/fd and try to shrink it (SIGBUS in the
 * router, if it worked), grow it, add a write seal, reopen it with O_TRUNC
 * and punch a hole in it. Then we map fresh anonymous memory over the
 * region's addresses: the router must keep using the pages it was given
 * (as a NIC keeps the pages it pinned), not follow our page tables. Last,
 * the rings: a thread scribbles random words over the send ring of a
 * second QP while we post on it, then we publish a producer index that
 * claims 2^31 requests. The router must answer everything with error
 * completions or ERR, and keep serving.
 *
 * Our region holds (i * 13 + 7) for i in 0..8191 when registered. The
 * victim's region is four pages:
 *   page 0  <- our page 0, written after the memfd attacks
 *   page 1  <- our page 0 again, written after we remapped it (which now
 *              holds 0xbb bytes in our view)
 *   page 2  <- 64 bytes from our page 0 after the hole punch (zeros, if
 *              the punch was allowed)
 *   page 3  <- whatever the ring race carried
 *
 * Input:  qpn= lid= (victim QP for q1)  v2_qpn= v2_lid= (for q2)  addr= rkey=
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <sluice_wire.h>

#include "attack_common.h"

#define PAGE 4096
static const int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

/* The fd of the memfd whose /proc/self/fd link names `name`, or -1. */
static int find_memfd(const char *name)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *de;
	int found = -1;

	while (dir && (de = readdir(dir)) != NULL) {
		char path[300], target[256];
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strstr(target, name)) {
			found = atoi(de->d_name);
			break;
		}
	}
	if (dir)
		closedir(dir);
	return found;
}

/* Our mapping of the memfd named `name` that is `size` bytes long. */
static void *find_mapping(const char *name, unsigned long size)
{
	FILE *maps = fopen("/proc/self/maps", "re");
	char line[512];
	void *found = NULL;

	while (maps && fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && hi - lo == size && strstr(line, name)) {
			found = (void *)lo;
			break;
		}
	}
	if (maps)
		fclose(maps);
	return found;
}

/* Sets the posted-QP hint of `handle` in every session page of this process,
 * as the library does after a post: the router looks at a QP when hinted
 * (a doorbell per QP), so a corrupt index nobody hints is never read. */
static void hint_everywhere(uint32_t handle)
{
	FILE *maps = fopen("/proc/self/maps", "re");
	char line[512];

	while (maps && fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && hi - lo == SLUICE_SESSION_PAGE_SIZE &&
		    strstr(line, "memfd:sluice-session"))
			sluice_hint_posted((struct sluice_session_page *)lo, handle);
	}
	if (maps)
		fclose(maps);
}

static void errno_result(const char *name, int r)
{
	if (r < 0)
		result(name, "refused", "errno=%s", errno_name(errno));
	else
		result(name, "BREACH", "errno=0");
}

static struct ep e;
static struct ibv_qp *q1, *q2;
static struct ibv_mr *mr;
static uint64_t addr;
static uint32_t rkey;

static outcome write_to(uint64_t offset, uint32_t len)
{
	return rdma(&e, q1, IBV_WR_RDMA_WRITE, mr->addr, len, mr->lkey, addr + offset, rkey);
}

/* --- the ring race ---------------------------------------------------------- */

static volatile int stop_scribbling;
static struct sluice_send_wqe *ring;

static void *scribble(void *arg)
{
	uint64_t x = (uintptr_t)arg | 1;

	while (!stop_scribbling) {
		for (int slot = 0; slot < 64; slot++) {
			uint32_t *w = (uint32_t *)&ring[slot];

			for (size_t k = 0; k < 24; k++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				__atomic_store_n(&w[k], (uint32_t)x, __ATOMIC_RELAXED);
			}
		}
	}
	return NULL;
}

/* Posts valid 64-byte writes on q2 while the scribbler runs; returns the
 * first error completion's status (any wr_id: the scribbler may have changed
 * it), or IBV_WC_SUCCESS if every write completed cleanly. */
static outcome ring_race(int *posted)
{
	struct timespec t0, t;
	pthread_t th;
	outcome first = IBV_WC_SUCCESS;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_create(&th, NULL, scribble, (void *)(uintptr_t)t0.tv_nsec);
	for (*posted = 0; *posted < 2000; (*posted)++) {
		struct ibv_sge sge = { .addr = (uintptr_t)mr->addr, .length = 64, .lkey = mr->lkey };
		struct ibv_send_wr wr = { .wr_id = 1, .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE,
					  .send_flags = IBV_SEND_SIGNALED }, *bad;
		struct ibv_wc wc;
		int n = 0;

		wr.wr.rdma.remote_addr = addr + 3 * PAGE;
		wr.wr.rdma.rkey = rkey;
		if (ibv_post_send(q2, &wr, &bad)) {
			first = -EINVAL;
			break;
		}
		for (int spins = 0; spins < 200000 && (n = ibv_poll_cq(e.cq, 1, &wc)) == 0; spins++)
			usleep(5);
		if (n != 1) {
			first = -ETIMEDOUT;
			break;
		}
		if (wc.status != IBV_WC_SUCCESS) {
			first = (outcome)wc.status;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 300000000L)
			break;
	}
	stop_scribbling = 1;
	pthread_join(th, NULL);
	/* Drain the flushes of whatever was still posted. */
	{
		struct ibv_wc wc;

		usleep(20000);
		while (ibv_poll_cq(e.cq, 1, &wc) == 1)
			;
	}
	return first;
}

int main(void)
{
	struct ibv_qp_init_attr deep = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 64, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1 },
	};
	struct sluice_qp_shared *shared;
	struct dest d1, d2;
	const char *line;
	uint8_t *mine;
	char path[64];
	int fd, r, err, posted;
	outcome o;

	attack_init();
	ep_open(&e);
	q1 = ep_create_qp(&e, e.pd);
	deep.send_cq = deep.recv_cq = e.cq;
	q2 = ibv_create_qp(e.pd, &deep);
	if (!q2)
		setup_failed("ibv_create_qp", errno);
	mr = ep_reg(e.pd, 2 * PAGE, rw);
	mine = mr->addr;
	for (int i = 0; i < 2 * PAGE; i++)
		mine[i] = (uint8_t)(i * 13 + 7);
	fd = find_memfd("memfd:sluice-mr");
	if (fd < 0)
		setup_failed("no sluice-mr memfd in /proc/self/fd", ENOENT);
	say_hello(&e, q1, q2);
	line = hear();
	d1 = need_dest(line, "");
	d2 = need_dest(line, "v2_");
	addr = need_u64(line, "addr");
	rkey = (uint32_t)need_u64(line, "rkey");
	if ((err = qp_connect(q1, &d1, rw)) || (err = qp_connect(q2, &d2, rw)))
		setup_failed("qp_connect", err);

	/* The memfd behind our region. */
	errno_result("memfd_shrink", ftruncate(fd, 0));
	errno_result("memfd_grow", ftruncate(fd, 64 * PAGE));
	errno_result("memfd_add_write_seal", fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	r = open(path, O_RDWR | O_TRUNC);
	errno_result("memfd_reopen_truncate", r);
	if (r >= 0)
		close(r);
	expect_allowed("write_after_memfd_attacks", write_to(0, PAGE), NULL);

	/* Our own view of the region replaced by other memory. */
	if (mmap(mine, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
		setup_failed("mmap over the region", errno);
	memset(mine, 0xbb, 2 * PAGE);
	expect_allowed("write_after_remap", write_to(PAGE, PAGE), NULL);

	/* A hole in the memfd: it reads back as zeros, nothing faults. */
	r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE);
	result("memfd_punch_hole", r == 0 ? "allowed" : "refused", "errno=%s", errno_name(r == 0 ? 0 : errno));
	expect_allowed("write_after_punch", write_to(2 * PAGE, 64), NULL);

	/* The rings. */
	ring = find_mapping("memfd:sluice-qp", (unsigned long)sluice_qp_layout(64, 1).size);
	if (!ring)
		setup_failed("no mapping of the deep QP's ring", ENOENT);
	shared = (struct sluice_qp_shared *)ring;
	ring = (struct sluice_send_wqe *)((char *)shared + sluice_qp_layout(64, 1).sq_offset);
	o = ring_race(&posted);
	if (o == IBV_WC_SUCCESS)
		result("ring_race", "allowed", "posted=%d note=no_write_was_hit", posted);
	else
		result("ring_race", "refused", "%s posted=%d", outcome_str(o), posted);

	if ((err = qp_reconnect(q2, &d2, rw)))
		setup_failed("qp_reconnect", err);
	sluice_store_release(&shared->sq.prod, sluice_load_acquire(&shared->sq.prod) + 0x80000000u);
	/* Hint the corrupt QP as a post would (the router may have stopped
	 * looking at it while it was idle); a post on the other QP then rings
	 * the doorbell of a sleeping router. */
	hint_everywhere(q2->handle);
	expect_allowed("write_after_ring_attacks", write_to(3 * PAGE + 2048, 64), NULL);
	{
		enum ibv_qp_state s = qp_state(q2);

		for (int i = 0; i < 300 && s != IBV_QPS_ERR; i++) {
			usleep(10000);
			s = qp_state(q2);
		}
		result("ring_corrupt_index", s == IBV_QPS_ERR ? "refused" : "BREACH", "state=%s",
		       s == IBV_QPS_ERR ? "IBV_QPS_ERR" : "not_ERR");
	}
	attack_exit();
}
