/*
 * memory.c — protection domains and zero-copy memory registration.
 *
 * ibv_reg_mr() re-backs the pages covering the buffer with a sealed memfd
 * mapped MAP_SHARED|MAP_FIXED over the same addresses, then hands the memfd
 * to the router: the application keeps its pointers, and the router reads
 * and writes the very same pages. No named shared memory is involved.
 *
 * Backings are process-wide, because two MRs (possibly in different
 * contexts) may cover the same page and a page can only be backed once.
 * Registry invariant: backings are disjoint page ranges; each lists the MRs
 * that use its memfd. Lock order: backing_lock, then a context's ctl_lock.
 *
 * One exception: pages that already are a MAP_SHARED mapping of a memfd
 * sealed against shrinking and growing, which this process holds open, are
 * registered in place with that memfd and its offset (see
 * shared_memfd_window()). Re-backing them would silently end the sharing
 * with whoever else maps the memfd: this is what a Sluice router on the
 * verbs backend, itself a tenant of another router, registers (its mapping
 * of its own tenant's memory).
 *
 * Known limits, inherent in re-backing: a store another thread makes to the
 * covered pages in the instant between their copy and their re-mapping is
 * lost (see rebase_pages()), and so is an RDMA write the router lands in an
 * older MR while a new overlapping registration replaces its backing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"

#define SLUICE_MEMFD_NAME "sluice-mr"

struct sluice_backing {
	uintptr_t start, end;          /* page-aligned, [start, end) */
	int fd;                        /* the memfd mapped over [start, end) */
	int prot;                      /* PROT_* of that mapping */
	struct sluice_mr *mrs;
	struct sluice_backing *next;
};

static pthread_mutex_t backing_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sluice_backing *backings;

static uintptr_t page_size(void)
{
	static uintptr_t size;

	if (!size)
		size = (uintptr_t)sysconf(_SC_PAGESIZE);
	return size;
}

/* --- protection domains --------------------------------------------------- */

SLUICE_EXPORT struct ibv_pd *ibv_alloc_pd(struct ibv_context *context)
{
	struct sluice_alloc_pd_req req = { 0 };
	struct sluice_handle_rep rep;
	struct sluice_pd *spd;
	int err;

	spd = calloc(1, sizeof(*spd));
	if (!spd) {
		errno = ENOMEM;
		return NULL;
	}
	err = sluice_call(to_sctx(context), SLUICE_OP_ALLOC_PD, &req, sizeof(req), -1,
			  &rep, sizeof(rep), NULL, 0);
	if (err) {
		free(spd);
		errno = err;
		return NULL;
	}
	spd->ibv_pd.context = context;
	spd->ibv_pd.handle = rep.handle;
	return &spd->ibv_pd;
}

SLUICE_EXPORT int ibv_dealloc_pd(struct ibv_pd *pd)
{
	struct sluice_handle_req req = { .handle = pd->handle };
	struct sluice_empty_rep rep;
	int err;

	err = sluice_call(to_sctx(pd->context), SLUICE_OP_DEALLOC_PD, &req, sizeof(req),
			  -1, &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;               /* EBUSY while MRs or QPs use it */
	free(to_spd(pd));
	return 0;
}

/* --- the page range behind a buffer --------------------------------------- */

/* Reads the protection of [start, end) from /proc/self/maps. The range must
 * be fully mapped (EFAULT), readable (EFAULT), uniformly protected (EINVAL)
 * and private, or shared only with an earlier Sluice backing (EINVAL): a
 * shared mapping of somebody else's file or memory would silently stop
 * being shared once re-backed. */
static int range_protection(uintptr_t start, uintptr_t end, int *prot)
{
	static const char ours[] = "/memfd:" SLUICE_MEMFD_NAME " (deleted)";
	char perms[5] = "", first[5] = "";
	uintptr_t cursor = start;
	size_t cap = 0;
	char *line = NULL;
	int err = EFAULT;
	FILE *maps;

	maps = fopen("/proc/self/maps", "re");
	if (!maps)
		return errno;
	while (cursor < end && getline(&line, &cap, maps) > 0) {
		unsigned long lo, hi;
		int path_at = 0;
		char *path;

		if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &lo, &hi, perms, &path_at) < 3)
			continue;
		if (hi <= cursor)
			continue;
		if (lo > cursor)
			break;            /* a hole: EFAULT */
		path = line + path_at;
		path[strcspn(path, "\n")] = '\0';
		if (!first[0])
			memcpy(first, perms, sizeof(first));
		if (perms[0] != 'r') {
			err = EFAULT;
			goto out;
		}
		if (memcmp(perms, first, 3) != 0 ||
		    (perms[3] == 's' && strcmp(path, ours) != 0)) {
			err = EINVAL;
			goto out;
		}
		cursor = hi;
	}
	if (cursor >= end) {
		*prot = PROT_READ | (first[1] == 'w' ? PROT_WRITE : 0) |
			(first[2] == 'x' ? PROT_EXEC : 0);
		err = 0;
	}
out:
	if (err && sluice_debug())
		fprintf(stderr, "libsluice-verbs: cannot re-back %#lx-%#lx: %s\n",
			(unsigned long)start, (unsigned long)end,
			err == EFAULT ? "not fully mapped and readable"
				      : "mixed protection or foreign shared mapping");
	free(line);
	fclose(maps);
	return err;
}

/* An empty memfd of `len` bytes, sealed so that its size can never change:
 * the router checks these seals, because a memfd that could shrink under
 * its mapping would SIGBUS the router. */
static int sealed_memfd(size_t len, int *fd_out)
{
	int fd, err;

	fd = memfd_create(SLUICE_MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return errno;
	if (ftruncate(fd, (off_t)len) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		err = errno;
		close(fd);
		return err;
	}
	*fd_out = fd;
	return 0;
}

/* Copies the pages [start, start+len) into fd, then maps fd over them.
 *
 * Whatever is stored to those pages between the copy and the mapping is
 * lost, so nothing that is still needed afterwards may be written in
 * between: every piece of bookkeeping happens before or after this call.
 * That also keeps the caller's own stack frames intact when the buffer
 * lives on this thread's stack. Other threads get no such guarantee: a
 * store they make to these pages inside this short window is lost.
 *
 * pwrite reads the pages in the kernel, so an unreadable page is EFAULT
 * here, with the application's memory still untouched. It is issued as a
 * raw syscall on purpose: the copy covers whole pages, including bytes the
 * application never allocated, which a sanitizer's pwrite interceptor
 * would report as an overflow. */
static int rebase_pages(uintptr_t start, size_t len, int prot, int fd)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = syscall(SYS_pwrite64, fd, (const char *)start + done, len - done,
				    (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		done += (size_t)n;
	}
	if (mmap((void *)start, len, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
		return errno;
	return 0;
}

/* --- registration --------------------------------------------------------- */

static int send_reg_mr(struct sluice_mr *smr, unsigned int access, uint64_t iova,
		       int fd, uint64_t fd_offset)
{
	struct ibv_mr *mr = &smr->ibv_mr;
	struct sluice_reg_mr_req req = {
		.pd = mr->pd->handle,
		.access = access,
		.addr = (uintptr_t)mr->addr,
		.length = mr->length,
		.iova = iova,
		.fd_offset = fd_offset,
		.map_length = smr->map_length,
		.page_offset = (uintptr_t)mr->addr - smr->first_page,
	};
	struct sluice_reg_mr_rep rep;
	int err;

	err = sluice_call(to_sctx(mr->context), SLUICE_OP_REG_MR, &req, sizeof(req), fd,
			  &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;
	mr->handle = rep.handle;
	mr->lkey = rep.lkey;
	mr->rkey = rep.rkey;
	return 0;
}

/* Tells the router that `smr` now lives in `b`. The router's old mapping of
 * the replaced memfd no longer aliases the application's pages, so a
 * failure here can only be reported, not repaired. */
static void send_remap_mr(struct sluice_mr *smr, const struct sluice_backing *b)
{
	struct ibv_mr *mr = &smr->ibv_mr;
	struct sluice_remap_mr_req req = {
		.handle = mr->handle,
		.fd_offset = smr->first_page - b->start,
		.map_length = smr->map_length,
		.page_offset = (uintptr_t)mr->addr - smr->first_page,
	};
	struct sluice_empty_rep rep;
	int err;

	err = sluice_call(to_sctx(mr->context), SLUICE_OP_REMAP_MR, &req, sizeof(req), b->fd,
			  &rep, sizeof(rep), NULL, 0);
	if (err && sluice_debug())
		fprintf(stderr, "libsluice-verbs: MR %p lost its backing: %s\n",
			mr->addr, strerror(err));
}

/* As the kernel's ib_umem_get() would: a writable MR needs writable pages,
 * or the router's writes would land in memory the application made
 * read-only. */
static int check_writable(int prot, unsigned int access)
{
	return (access & IBV_ACCESS_LOCAL_WRITE) && !(prot & PROT_WRITE) ? EFAULT : 0;
}

static void link_mr(struct sluice_backing *b, struct sluice_mr *smr)
{
	smr->backing = b;
	smr->next_in_backing = b->mrs;
	b->mrs = smr;
}

/* Registers smr whose pages lie inside backing b: same memfd, no copy. */
static int reg_in_backing(struct sluice_backing *b, struct sluice_mr *smr,
			  unsigned int access, uint64_t iova)
{
	int err = check_writable(b->prot, access);

	if (!err)
		err = send_reg_mr(smr, access, iova, b->fd, smr->first_page - b->start);
	if (!err)
		link_mr(b, smr);
	return err;
}

/* Registers smr over a new backing that covers its pages and every backing
 * in `old` (a list detached from the registry, overlapping those pages).
 * Once the pages are re-backed, the MRs of the replaced backings move to the
 * new one whatever the router says about smr; a refused smr leaves the
 * pages re-backed but otherwise as they were, like a deregistered MR. */
static int reg_in_new_backing(struct sluice_backing **old, struct sluice_mr *smr,
			      unsigned int access, uint64_t iova)
{
	uintptr_t start = smr->first_page, end = smr->first_page + smr->map_length;
	struct sluice_backing *b;
	int prot = 0, fd = -1, err;

	for (b = *old; b; b = b->next) {
		start = b->start < start ? b->start : start;
		end = b->end > end ? b->end : end;
	}
	err = range_protection(start, end, &prot);
	if (!err)
		err = check_writable(prot, access);
	if (err)
		return err;
	b = calloc(1, sizeof(*b));
	if (!b)
		return ENOMEM;
	err = sealed_memfd(end - start, &fd);
	if (err) {
		free(b);
		return err;
	}
	b->start = start;
	b->end = end;
	b->fd = fd;
	b->prot = prot;
	/* The old memfds are mapped over their ranges: copying the union from
	 * the application's addresses carries their current contents over. */
	err = rebase_pages(start, end - start, prot, fd);
	if (err) {
		close(fd);
		free(b);
		return err;
	}
	/* Move the MRs of the replaced backings over, then retire those. */
	while (*old) {
		struct sluice_backing *ob = *old;

		*old = ob->next;
		while (ob->mrs) {
			struct sluice_mr *m = ob->mrs;

			ob->mrs = m->next_in_backing;
			link_mr(b, m);
			send_remap_mr(m, b);
		}
		close(ob->fd);
		free(ob);
	}
	err = send_reg_mr(smr, access, iova, fd, smr->first_page - start);
	if (!err)
		link_mr(b, smr);
	if (!b->mrs) {
		close(fd);                /* the mapping stays, as after a dereg */
		free(b);
		return err;
	}
	b->next = backings;
	backings = b;
	return err;
}

/* --- memory that already is a sealed, shared memfd ------------------------ */

/* The fd (one this process holds open) of the sealed memfd that [start, end)
 * is a single MAP_SHARED mapping of, the offset in it of `start`, and the
 * mapping's protection; ENOENT when the range is anything else.
 *
 * /proc/self/maps names the mapping's device, inode and file offset; an
 * entry of /proc/self/fd with the same st_dev and st_ino is the memfd. The
 * seals are checked here only to choose this path (the router checks them
 * again: it trusts nothing the library says). A memfd this process mapped
 * but no longer holds open cannot be sent, and falls back to re-backing,
 * which refuses foreign shared mappings as before. */
static int shared_memfd_window(uintptr_t start, uintptr_t end, int *fd_out,
			       uint64_t *offset_out, int *prot_out)
{
	unsigned long lo = 0, hi = 0, long_offset = 0, ino = 0;
	unsigned int maj = 0, min = 0;
	char perms[5] = "", *line = NULL;
	int found = 0, fd = -1, path_at = 0;
	size_t cap = 0;
	struct dirent *e;
	FILE *maps;
	DIR *dir;

	maps = fopen("/proc/self/maps", "re");
	if (!maps)
		return ENOENT;
	while (getline(&line, &cap, maps) > 0) {
		if (sscanf(line, "%lx-%lx %4s %lx %x:%x %lu %n", &lo, &hi, perms,
			   &long_offset, &maj, &min, &ino, &path_at) < 7)
			continue;
		if (lo <= start && start < hi) {
			found = end <= hi && perms[0] == 'r' && perms[3] == 's' &&
				strncmp(line + path_at, "/memfd:", 7) == 0;
			break;
		}
	}
	free(line);
	fclose(maps);
	if (!found)
		return ENOENT;
	dir = opendir("/proc/self/fd");
	if (!dir)
		return ENOENT;
	while ((e = readdir(dir)) != NULL) {
		struct stat st;
		int candidate = atoi(e->d_name), seals;

		if (e->d_name[0] < '0' || e->d_name[0] > '9' || candidate == dirfd(dir))
			continue;
		if (fstat(candidate, &st) < 0 || !S_ISREG(st.st_mode) || st.st_ino != ino ||
		    major(st.st_dev) != maj || minor(st.st_dev) != min)
			continue;
		seals = fcntl(candidate, F_GET_SEALS);
		if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
			continue;
		fd = candidate;
		break;
	}
	closedir(dir);
	if (fd < 0)
		return ENOENT;
	*fd_out = fd;
	*offset_out = (uint64_t)long_offset + (start - lo);
	*prot_out = PROT_READ | (perms[1] == 'w' ? PROT_WRITE : 0);
	return 0;
}

/* Registers smr in place over a sealed memfd it already is a mapping of: no
 * copy, no re-backing, no entry in the backing registry (nothing here
 * replaces those pages, and deregistration has nothing to release). */
static int reg_in_shared_memfd(struct sluice_mr *smr, unsigned int access, uint64_t iova,
			       int fd, uint64_t fd_offset, int prot)
{
	int err = check_writable(prot, access);

	if (!err)
		err = send_reg_mr(smr, access, iova, fd, fd_offset);
	return err;
}

static struct ibv_mr *reg_mr(struct ibv_pd *pd, void *addr, size_t length,
			     uint64_t iova, unsigned int access)
{
	uintptr_t a = (uintptr_t)addr, psz = page_size(), first, last;
	struct sluice_backing *overlap = NULL, **pp;
	struct sluice_mr *smr;
	uint64_t shared_offset = 0;
	int err, shared_fd = -1, shared_prot = 0;

	if (!pd || !addr || length == 0 || a + length < a) {
		errno = EINVAL;
		return NULL;
	}
	/* The documented rule: remote write or atomic access needs local write. */
	if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
	    !(access & IBV_ACCESS_LOCAL_WRITE)) {
		errno = EINVAL;
		return NULL;
	}
	/* Optional flags may be ignored by definition; pass on only the one the
	 * wire knows. */
	access &= ~(unsigned int)IBV_ACCESS_OPTIONAL_RANGE | IBV_ACCESS_RELAXED_ORDERING;

	first = a & ~(psz - 1);
	last = (a + length + psz - 1) & ~(psz - 1);
	if (last < first) {
		errno = EINVAL;
		return NULL;
	}
	smr = calloc(1, sizeof(*smr));
	if (!smr) {
		errno = ENOMEM;
		return NULL;
	}
	smr->ibv_mr.context = pd->context;
	smr->ibv_mr.pd = pd;
	smr->ibv_mr.addr = addr;
	smr->ibv_mr.length = length;
	smr->first_page = first;
	smr->map_length = last - first;

	pthread_mutex_lock(&backing_lock);
	/* Detach every backing that overlaps the new pages. */
	for (pp = &backings; *pp;) {
		struct sluice_backing *b = *pp;

		if (b->start < last && first < b->end) {
			*pp = b->next;
			b->next = overlap;
			overlap = b;
		} else {
			pp = &b->next;
		}
	}
	if (overlap && !overlap->next && overlap->start <= first && last <= overlap->end) {
		err = reg_in_backing(overlap, smr, access, iova);
	} else if (!overlap && shared_memfd_window(first, last, &shared_fd, &shared_offset,
						   &shared_prot) == 0) {
		err = reg_in_shared_memfd(smr, access, iova, shared_fd, shared_offset, shared_prot);
	} else {
		err = reg_in_new_backing(&overlap, smr, access, iova);
	}
	/* Whatever was not replaced goes back into the registry. */
	while (overlap) {
		struct sluice_backing *b = overlap;

		overlap = b->next;
		b->next = backings;
		backings = b;
	}
	pthread_mutex_unlock(&backing_lock);

	if (err) {
		free(smr);
		errno = err;
		return NULL;
	}
	return &smr->ibv_mr;
}

/* The parentheses keep verbs.h's function-like macros from expanding. */
SLUICE_EXPORT struct ibv_mr *(ibv_reg_mr)(struct ibv_pd *pd, void *addr, size_t length,
					  int access)
{
	return reg_mr(pd, addr, length, (uintptr_t)addr, (unsigned int)access);
}

SLUICE_EXPORT struct ibv_mr *(ibv_reg_mr_iova)(struct ibv_pd *pd, void *addr,
					       size_t length, uint64_t iova, int access)
{
	return reg_mr(pd, addr, length, iova, (unsigned int)access);
}

SLUICE_EXPORT struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr,
					      size_t length, uint64_t iova,
					      unsigned int access)
{
	return reg_mr(pd, addr, length, iova, access);
}

static void unlink_mr(struct sluice_mr *smr)
{
	struct sluice_backing *b = smr->backing, **pp;
	struct sluice_mr **mp;

	if (!b)
		return;
	for (mp = &b->mrs; *mp; mp = &(*mp)->next_in_backing) {
		if (*mp == smr) {
			*mp = smr->next_in_backing;
			break;
		}
	}
	smr->backing = NULL;
	if (b->mrs)
		return;
	/* Last user gone: forget the memfd. Its mapping stays, so the
	 * application's memory remains valid. */
	for (pp = &backings; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	close(b->fd);
	free(b);
}

SLUICE_EXPORT int ibv_dereg_mr(struct ibv_mr *mr)
{
	struct sluice_mr *smr = to_smr(mr);
	struct sluice_handle_req req = { .handle = mr->handle };
	struct sluice_empty_rep rep;
	int err;

	err = sluice_call(to_sctx(mr->context), SLUICE_OP_DEREG_MR, &req, sizeof(req), -1,
			  &rep, sizeof(rep), NULL, 0);
	if (err)
		return err;
	pthread_mutex_lock(&backing_lock);
	unlink_mr(smr);
	pthread_mutex_unlock(&backing_lock);
	free(smr);
	return 0;
}

void sluice_forget_context_mrs(struct sluice_context *sctx)
{
	struct ibv_context *ctx = &sctx->vctx.context;
	struct sluice_backing *b, *next;

	pthread_mutex_lock(&backing_lock);
	for (b = backings; b; b = next) {
		struct sluice_mr *m, *mnext;

		next = b->next;
		/* unlink_mr() may free b, so walk a snapshot of its list. */
		for (m = b->mrs; m; m = mnext) {
			mnext = m->next_in_backing;
			/* The MR itself is left allocated, as libibverbs leaves
			 * objects a closed context still owned. */
			if (m->ibv_mr.context == ctx)
				unlink_mr(m);
		}
	}
	pthread_mutex_unlock(&backing_lock);
}

/* --- fork ------------------------------------------------------------------ */

/* Registered pages are MAP_SHARED memfd mappings, so fork() never gives the
 * parent a copy-on-write page the router does not see: there is nothing to
 * initialise, and it is never needed. */
SLUICE_EXPORT int ibv_fork_init(void)
{
	return 0;
}

SLUICE_EXPORT enum ibv_fork_status ibv_is_fork_initialized(void)
{
	return IBV_FORK_UNNEEDED;
}
