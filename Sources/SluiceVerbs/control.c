/*
 * control.c — the session socket: one request, one reply, fds via SCM_RIGHTS.
 *
 * The library is a marshaller: it fills the wire header, sends, and checks
 * that the reply is the answer to this request. Everything it sends is
 * validated again by the router; the router's answers are trusted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

int sluice_debug(void)
{
	const char *v = getenv("SLUICE_DEBUG");

	return v && strcmp(v, "1") == 0;
}

static const char *opcode_name(uint16_t opcode)
{
	static const char *const names[] = {
		[SLUICE_OP_OPEN] = "OPEN",
		[SLUICE_OP_ALLOC_PD] = "ALLOC_PD",
		[SLUICE_OP_DEALLOC_PD] = "DEALLOC_PD",
		[SLUICE_OP_REG_MR] = "REG_MR",
		[SLUICE_OP_DEREG_MR] = "DEREG_MR",
		[SLUICE_OP_REMAP_MR] = "REMAP_MR",
		[SLUICE_OP_CREATE_COMP_CHANNEL] = "CREATE_COMP_CHANNEL",
		[SLUICE_OP_DESTROY_COMP_CHANNEL] = "DESTROY_COMP_CHANNEL",
		[SLUICE_OP_CREATE_CQ] = "CREATE_CQ",
		[SLUICE_OP_DESTROY_CQ] = "DESTROY_CQ",
		[SLUICE_OP_CREATE_QP] = "CREATE_QP",
		[SLUICE_OP_MODIFY_QP] = "MODIFY_QP",
		[SLUICE_OP_QUERY_QP] = "QUERY_QP",
		[SLUICE_OP_DESTROY_QP] = "DESTROY_QP",
	};

	if (opcode < sizeof(names) / sizeof(names[0]) && names[opcode])
		return names[opcode];
	return "?";
}

static void close_fds(int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static int send_request(int sock, const void *req, size_t size, int send_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = (void *)req, .iov_len = size };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (send_fd >= 0) {
		struct cmsghdr *c;

		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof(cbuf.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &send_fd, sizeof(int));
	}
	do {
		/* MSG_NOSIGNAL: a dead router is EIO for this verb, not SIGPIPE
		 * for the whole application. */
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0 || (size_t)n != size)
		return EIO;
	return 0;
}

/* Receives one message; fills fds[0..*nfds) with what SCM_RIGHTS carried. */
static ssize_t recv_reply(int sock, void *buf, size_t size, int *fds, unsigned int *nfds)
{
	union {
		char buf[CMSG_SPACE(SLUICE_MSG_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf),
	};
	ssize_t n;

	*nfds = 0;
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count && *nfds < SLUICE_MSG_MAX_FDS; i++)
			memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	/* A truncated message or fd list is a broken session, not a reply. */
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		close_fds(fds, *nfds);
		*nfds = 0;
		return -1;
	}
	return n;
}

int sluice_call(struct sluice_context *sctx, uint16_t opcode,
		void *req, size_t req_size, int send_fd,
		void *rep, size_t rep_size, int *fds, unsigned int nfds)
{
	union {
		char bytes[SLUICE_MSG_MAX];
		struct sluice_reply_hdr hdr;
	} buf;
	struct sluice_msg_hdr *h = req;
	int got[SLUICE_MSG_MAX_FDS];
	unsigned int ngot = 0;
	int sock = sctx->vctx.context.cmd_fd;
	int broken = 0, err = 0;
	ssize_t n;

	pthread_mutex_lock(&sctx->ctl_lock);
	h->magic = SLUICE_WIRE_MAGIC;
	h->version = SLUICE_WIRE_VERSION;
	h->opcode = opcode;
	h->length = (uint32_t)req_size;
	h->seq = ++sctx->seq;

	err = send_request(sock, req, req_size, send_fd);
	if (err) {
		broken = 1;
		goto out;
	}
	n = recv_reply(sock, buf.bytes, sizeof(buf.bytes), got, &ngot);
	if (n < (ssize_t)sizeof(struct sluice_reply_hdr) ||
	    buf.hdr.hdr.magic != SLUICE_WIRE_MAGIC ||
	    buf.hdr.hdr.version != SLUICE_WIRE_VERSION ||
	    buf.hdr.hdr.opcode != (opcode | SLUICE_REPLY_BIT) ||
	    buf.hdr.hdr.seq != h->seq ||
	    buf.hdr.hdr.length < sizeof(struct sluice_reply_hdr) ||
	    buf.hdr.hdr.length > (size_t)n) {
		err = EIO;                /* EOF, error, or not our answer */
		broken = 1;
		goto out;
	}
	if (buf.hdr.status != 0) {
		err = buf.hdr.status > 0 ? buf.hdr.status : EIO;
		if (sluice_debug()) {
			buf.hdr.reason[SLUICE_REASON_MAX - 1] = '\0';
			fprintf(stderr, "libsluice-verbs: %s refused: %s: %s\n",
				opcode_name(opcode), strerror(err), buf.hdr.reason);
		}
		goto out;
	}
	if (buf.hdr.hdr.length < rep_size || ngot != nfds) {
		/* A router bug, not a desynchronised stream: fail this verb only. */
		err = EIO;
		if (sluice_debug())
			fprintf(stderr, "libsluice-verbs: %s: incomplete reply from the router\n",
				opcode_name(opcode));
		goto out;
	}
	memcpy(rep, buf.bytes, rep_size);
	for (unsigned int i = 0; i < nfds; i++)
		fds[i] = got[i];
	ngot = 0;
out:
	if (broken) {
		/* Replies are matched by order: after a lost or foreign reply the
		 * stream cannot be trusted, so end the session for good (later
		 * verbs fail fast with EIO; the router reclaims everything). */
		shutdown(sock, SHUT_RDWR);
	}
	pthread_mutex_unlock(&sctx->ctl_lock);
	close_fds(got, ngot);
	if (broken && sluice_debug())
		fprintf(stderr, "libsluice-verbs: %s: no valid reply from the router\n",
			opcode_name(opcode));
	return err;
}

static int connect_socket(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int sock, rc;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	do {
		rc = connect(sock, (struct sockaddr *)&addr, sizeof(addr));
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int e = errno;

		close(sock);
		return -e;
	}
	return sock;
}

int sluice_session_open(struct sluice_context *sctx, const char *path)
{
	struct sluice_open_req req = { .abi_version = SLUICE_WIRE_VERSION };
	int fds[3];
	void *page;
	int sock, err;

	sock = connect_socket(path);
	if (sock < 0) {
		if (sluice_debug())
			fprintf(stderr, "libsluice-verbs: cannot connect to %s: %s\n",
				path, strerror(-sock));
		return -sock;
	}
	sctx->vctx.context.cmd_fd = sock;
	err = sluice_call(sctx, SLUICE_OP_OPEN, &req, sizeof(req), -1,
			  &sctx->info, sizeof(sctx->info), fds, 3);
	if (err) {
		close(sock);
		sctx->vctx.context.cmd_fd = -1;
		return err;
	}
	page = mmap(NULL, SLUICE_SESSION_PAGE_SIZE, PROT_READ | PROT_WRITE,
		    MAP_SHARED, fds[0], 0);
	close(fds[0]);                    /* the mapping keeps the memfd alive */
	if (page == MAP_FAILED) {
		err = errno;
		close(fds[1]);
		close(fds[2]);
		close(sock);
		sctx->vctx.context.cmd_fd = -1;
		return err;
	}
	sctx->session = page;
	sctx->doorbell_fd = fds[1];
	sctx->vctx.context.async_fd = fds[2];
	sctx->info.tenant[sizeof(sctx->info.tenant) - 1] = '\0';
	return 0;
}

void sluice_session_close(struct sluice_context *sctx)
{
	/* Closing the socket ends the session: the router reclaims every
	 * object it owned, so no per-object teardown is sent. */
	if (sctx->session)
		munmap(sctx->session, SLUICE_SESSION_PAGE_SIZE);
	if (sctx->doorbell_fd >= 0)
		close(sctx->doorbell_fd);
	if (sctx->vctx.context.cmd_fd >= 0)
		close(sctx->vctx.context.cmd_fd);
}
