#define _GNU_SOURCE
#include "sluice_net.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int sluice_net_epoll_create(void)
{
	return epoll_create1(EPOLL_CLOEXEC);
}

int sluice_net_epoll_set(int epfd, int fd, uint64_t tag, int want_write, int add)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (want_write ? EPOLLOUT : 0), .data.u64 = tag };
	return epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

int sluice_net_epoll_del(int epfd, int fd)
{
	return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
}

int sluice_net_epoll_wait(int epfd, uint64_t *tags, uint32_t *ready, int max, int timeout_ms)
{
	struct epoll_event evs[64];
	if (max > 64)
		max = 64;
	int n = epoll_wait(epfd, evs, max, timeout_ms);
	for (int i = 0; i < n; i++) {
		tags[i] = evs[i].data.u64;
		uint32_t r = 0;
		if (evs[i].events & (EPOLLIN | EPOLLRDHUP))
			r |= 1;
		if (evs[i].events & EPOLLOUT)
			r |= 2;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			r |= 4;
		ready[i] = r;
	}
	return n;
}

/* Parses a literal address into a sockaddr; 0 on success. */
static int address(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		*len = sizeof *v4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		*len = sizeof *v6;
		return 0;
	}
	errno = EINVAL;
	return -1;
}

int sluice_net_listen(const char *host, uint16_t port, uint16_t *bound_port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (address(host, port, &ss, &len) != 0)
		return -1;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 64) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if (bound_port) {
		struct sockaddr_storage got;
		socklen_t glen = sizeof got;
		if (getsockname(fd, (struct sockaddr *)&got, &glen) == 0)
			*bound_port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
								     : ((struct sockaddr_in6 *)&got)->sin6_port);
	}
	return fd;
}

int sluice_net_connect(const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (address(host, port, &ss, &len) != 0)
		return -1;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int sluice_net_connect_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err;
}

int sluice_net_accept(int listener, char *peer, int peer_len)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	int fd = accept4(listener, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return -1;
	if (peer && peer_len > 0) {
		char text[INET6_ADDRSTRLEN] = "?";
		uint16_t port = 0;
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, text, sizeof text);
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, text, sizeof text);
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		}
		snprintf(peer, (size_t)peer_len, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", text, port);
	}
	return fd;
}

int sluice_net_nodelay(int fd)
{
	int one = 1;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int sluice_net_set_timeouts(int fd, int millis)
{
	struct timeval tv = { .tv_sec = millis / 1000, .tv_usec = (millis % 1000) * 1000 };
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
		return -1;
	return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

ssize_t sluice_net_send(int fd, const void *buf, size_t len)
{
	/* sendmsg, not write: MSG_NOSIGNAL, so a peer that hung up cannot kill
	 * the router with SIGPIPE (and sendmsg is on the seccomp allowlist). */
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	return sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

ssize_t sluice_net_send_blocking(int fd, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	return sendmsg(fd, &msg, MSG_NOSIGNAL);
}

int sluice_net_connect_timeout(const char *host, uint16_t port, int millis)
{
	/* Blocking, with SO_SNDTIMEO/SO_RCVTIMEO: Linux bounds a blocking
	 * connect by the send timeout, so no poll(2) is needed. */
	struct sockaddr_storage ss;
	socklen_t len;
	if (address(host, port, &ss, &len) != 0)
		return -1;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (sluice_net_set_timeouts(fd, millis) != 0 || connect(fd, (struct sockaddr *)&ss, len) != 0) {
		int e = errno;
		close(fd);
		errno = e == EINPROGRESS ? ETIMEDOUT : e;
		return -1;
	}
	return fd;
}

int sluice_net_pipe(int fds[2])
{
	return pipe2(fds, O_CLOEXEC | O_NONBLOCK);
}

int sluice_net_enter_netns(int fd)
{
	return setns(fd, CLONE_NEWNET);
}
