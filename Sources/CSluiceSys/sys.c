#define _GNU_SOURCE
#include "sluice_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define SLUICE_SYS_MAX_FDS 8

ssize_t sluice_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	union {
		char buf[CMSG_SPACE(sizeof(int) * SLUICE_SYS_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds < 0 || nfds > SLUICE_SYS_MAX_FDS) {
		errno = EINVAL;
		return -1;
	}
	if (nfds > 0) {
		struct cmsghdr *c;
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n;
}

ssize_t sluice_recv_fds(int sock, void *buf, size_t cap, int *fds, int max_fds, int *nfds, int *truncated)
{
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	union {
		char buf[CMSG_SPACE(sizeof(int) * SLUICE_SYS_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *c;
	ssize_t n;

	*nfds = 0;
	*truncated = 0;
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_TRUNC | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return n;
	if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0)
		*truncated = 1;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		int count, i;
		int *data;
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		data = (int *)CMSG_DATA(c);
		for (i = 0; i < count; i++) {
			int fd;
			memcpy(&fd, &data[i], sizeof(fd));
			if (*nfds < max_fds) {
				fds[(*nfds)++] = fd;
			} else {
				close(fd);
				*truncated = 1;
			}
		}
	}
	return n;
}

int sluice_accept(int listener)
{
	int fd;
	do {
		fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	} while (fd < 0 && errno == EINTR);
	return fd;
}

int sluice_peer_cred(int sock, int32_t *pid, uint32_t *uid, uint32_t *gid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -1;
	*pid = cred.pid;
	*uid = cred.uid;
	*gid = cred.gid;
	return 0;
}

int sluice_get_seals(int fd)
{
	return fcntl(fd, F_GET_SEALS);
}

int sluice_memfd_sealed(const char *name, uint64_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int sluice_dgram_pair(int fds[2])
{
	return socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds);
}

int sluice_pipe(int fds[2], int nonblock_read, int nonblock_write)
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	if (nonblock_read)
		fcntl(fds[0], F_SETFL, O_NONBLOCK);
	if (nonblock_write)
		fcntl(fds[1], F_SETFL, O_NONBLOCK);
	return 0;
}

int sluice_required_mr_seals(void)
{
	return F_SEAL_SHRINK | F_SEAL_GROW;
}

int sluice_epoll_create(void)
{
	return epoll_create1(EPOLL_CLOEXEC);
}

int sluice_epoll_add(int epfd, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = tag };
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int sluice_epoll_del(int epfd, int fd)
{
	return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
}

int sluice_epoll_wait(int epfd, uint64_t *tags, int max, int timeout_ms)
{
	struct epoll_event evs[64];
	int n, i;
	if (max > 64)
		max = 64;
	do {
		n = epoll_wait(epfd, evs, max, timeout_ms);
	} while (n < 0 && errno == EINTR);
	for (i = 0; i < n; i++)
		tags[i] = evs[i].data.u64;
	return n;
}

int sluice_stop_signals_fd(void)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

int sluice_drain_signals(int sfd)
{
	struct signalfd_siginfo info;
	int seen = 0;
	while (read(sfd, &info, sizeof(info)) == (ssize_t)sizeof(info))
		seen |= info.ssi_signo == SIGHUP ? 2 : 1;
	return seen;
}
