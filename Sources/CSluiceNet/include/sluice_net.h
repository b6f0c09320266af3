#ifndef SLUICE_NET_H
#define SLUICE_NET_H
/* TCP and epoll helpers for the router-to-router fabric link and the etcd
 * client. Plain C so that Swift never has to lay out struct epoll_event
 * (packed on x86_64) or the sockaddr family by hand. Every call returns -1
 * with errno set on failure. */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* An epoll instance of the fabric's own; the router watches its fd. */
int sluice_net_epoll_create(void);
/* Watches fd for input (and output when want_write) with this tag. */
int sluice_net_epoll_set(int epfd, int fd, uint64_t tag, int want_write, int add);
int sluice_net_epoll_del(int epfd, int fd);
/* Fills tags and, per event, a readiness mask: 1 readable, 2 writable,
 * 4 error or hang-up. Returns the count. */
int sluice_net_epoll_wait(int epfd, uint64_t *tags, uint32_t *ready, int max, int timeout_ms);

/* A non-blocking, close-on-exec TCP listener on host:port ("0.0.0.0",
 * "::", or a literal address). *bound_port receives the port bound (for
 * port 0). */
int sluice_net_listen(const char *host, uint16_t port, uint16_t *bound_port);
/* A non-blocking connect to a literal IPv4/IPv6 address; returns the fd,
 * the connection completes later (writable, then sluice_net_connect_error). */
int sluice_net_connect(const char *host, uint16_t port);
/* The pending error of a non-blocking connect (0 when connected). */
int sluice_net_connect_error(int fd);
/* accept4 non-blocking and close-on-exec; writes the peer as text. */
int sluice_net_accept(int listener, char *peer, int peer_len);
/* TCP_NODELAY on. */
int sluice_net_nodelay(int fd);
/* Blocking-with-timeout I/O for the etcd client thread. */
int sluice_net_set_timeouts(int fd, int millis);
/* Sends without SIGPIPE (sendmsg, MSG_NOSIGNAL, non-blocking). */
ssize_t sluice_net_send(int fd, const void *buf, size_t len);
/* The same, waiting (up to SO_SNDTIMEO) when the socket is full. */
ssize_t sluice_net_send_blocking(int fd, const void *buf, size_t len);
/* A blocking TCP connection whose connect, reads and writes time out. */
int sluice_net_connect_timeout(const char *host, uint16_t port, int millis);
/* A non-blocking, close-on-exec pipe: the etcd thread wakes the loop through it. */
int sluice_net_pipe(int fds[2]);
/* Moves the calling thread into the network namespace open at fd (the bench). */
int sluice_net_enter_netns(int fd);
#endif
