/*
 * sluice_sys.h — small C shims for the router: calls whose C shape Swift
 * cannot express directly (fcntl seals, memfds, epoll, signalfd, SCM_RIGHTS control messages,
 * SO_PEERCRED). Each returns -1 and leaves errno set on failure.
 */
#ifndef SLUICE_SYS_H
#define SLUICE_SYS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * A cheap, monotonic cycle counter for charging the data-path scheduler in
 * the router's own time: the TSC on x86-64, the virtual counter on AArch64,
 * CLOCK_MONOTONIC nanoseconds elsewhere. Units differ per machine; the
 * router calibrates them against CLOCK_MONOTONIC at start-up.
 */
#include <time.h>
static inline uint64_t sluice_cycles(void)
{
#if defined(__x86_64__)
	uint32_t lo, hi;
	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
#elif defined(__aarch64__)
	uint64_t v;
	__asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
	return v;
#else
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
}

/* sendmsg() of one datagram with up to 8 fds attached (MSG_NOSIGNAL). */
ssize_t sluice_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/* recvmsg() of one datagram. Received fds (MSG_CMSG_CLOEXEC) are stored in
 * fds[0..*nfds) (at most max_fds, at most 8; extra ones are closed here and
 * *truncated set — callers that must not block on a close pass 8).
 * *truncated is also set when the datagram was larger than cap (MSG_TRUNC),
 * in which case the return value is the datagram's real length. */
ssize_t sluice_recv_fds(int sock, void *buf, size_t cap, int *fds, int max_fds, int *nfds, int *truncated);

/* accept4(SOCK_CLOEXEC|SOCK_NONBLOCK), no address. */
int sluice_accept(int listener);

/* The peer's credentials of a connected unix socket (SO_PEERCRED). */
int sluice_peer_cred(int sock, int32_t *pid, uint32_t *uid, uint32_t *gid);

/* F_GET_SEALS of fd, or -1 (EINVAL for a file that is not a sealable memfd). */
int sluice_get_seals(int fd);

/* F_GET_SEALS bits Sluice requires on a memory-region memfd. */
int sluice_required_mr_seals(void);

/* A memfd of `size` bytes sealed against shrinking, growing and further
 * sealing, close-on-exec. */
int sluice_memfd_sealed(const char *name, uint64_t size);

/* socketpair(AF_UNIX, SOCK_DGRAM), close-on-exec, both ends non-blocking
 * (each end is its own open file description). */
int sluice_dgram_pair(int fds[2]);

/* pipe2(O_CLOEXEC), then O_NONBLOCK on the ends asked for. */
int sluice_pipe(int fds[2], int nonblock_read, int nonblock_write);

/* epoll with a 64-bit tag per fd (epoll_event is packed; kept out of Swift). */
int sluice_epoll_create(void);
int sluice_epoll_add(int epfd, int fd, uint64_t tag);
int sluice_epoll_del(int epfd, int fd);
/* Waits up to timeout_ms (-1: forever); stores the ready tags. */
int sluice_epoll_wait(int epfd, uint64_t *tags, int max, int timeout_ms);

/* Blocks SIGTERM, SIGINT and SIGHUP for this thread and returns a signalfd
 * (non-blocking, close-on-exec) that reports them. */
int sluice_stop_signals_fd(void);
/* Reads every pending signal from such a signalfd; returns a bit set:
 * 1 = SIGTERM or SIGINT (stop), 2 = SIGHUP (reload). */
int sluice_drain_signals(int sfd);
#endif
