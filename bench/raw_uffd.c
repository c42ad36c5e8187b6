/*
 * raw_uffd.c - the fault-rate benches' baseline: a raw single-thread
 * UFFDIO_COPY handler behind Firecracker's handshake (raw_uffd.h).
 */
#include "raw_uffd.h"
#include "uffd/handshake.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE	  4096ULL
#define SEC	  1000000000LL
#define DEFER_MAX 256

static const uint8_t zeros[PAGE]; /* removed pages are installed one at a time */

static _Noreturn void die(const char *what, int err)
{
	fprintf(stderr, "raw handler: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

struct ms_raw_uffd {
	int listen_fd, stop_efd;
	const uint8_t *source; /* the memory image served; borrowed */
	uint64_t size;	       /* its bytes */
	uint64_t block;	       /* bytes installed per fault: the aligned block around it */
	pthread_t thread;
	/* handler thread only */
	int uffd;
	uint64_t base;
	uint8_t *removed; /* per page: a REMOVE zapped it, it reads as zeros */
	struct uffd_msg deferred[DEFER_MAX];
	size_t deferred_count;
	/* read by the host between epochs (atomics) */
	_Atomic uint64_t faults, faults_wp, events_remove, retries;
};

/* Installs [dst, dst + len): 0, -EEXIST (nothing installed: the first page is there),
 * -EAGAIN (mmap changing: nothing installed), or the bytes installed of a short copy. */
static int64_t raw_copy(struct ms_raw_uffd *r, uint64_t dst, uint64_t len, bool write)
{
	bool zero = r->removed[(dst - r->base) / PAGE];
	struct uffdio_copy copy = {
	    .dst = dst,
	    .src = (uint64_t)(uintptr_t)(zero ? zeros : r->source + (dst - r->base)),
	    .len = len,
	    .mode = write ? 0 : UFFDIO_COPY_MODE_WP};
	if (ioctl(r->uffd, UFFDIO_COPY, &copy) == 0)
		return 0;
	if (errno == EAGAIN && copy.copy > 0)
		return copy.copy; /* woken: the copied part only */
	if (errno == EEXIST || errno == EAGAIN)
		return -errno;
	die("UFFDIO_COPY", errno);
	return 0;
}

/* A block is copied whole only when no page of it was removed (removed pages are zeros). */
static bool raw_block_clean(struct ms_raw_uffd *r, uint64_t start)
{
	for (uint64_t a = start; a < start + r->block; a += PAGE)
		if (r->removed[(a - r->base) / PAGE])
			return false;
	return true;
}

/* Serves one fault message; false when it must be retried after the next event read. */
static bool raw_serve(struct ms_raw_uffd *r, const struct uffd_msg *m)
{
	uint64_t addr = m->arg.pagefault.address & ~(PAGE - 1);
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
		struct uffdio_writeprotect wp = {.range = {.start = addr, .len = PAGE}, .mode = 0};
		if (ioctl(r->uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
			return true;
		if (errno == EAGAIN)
			return false;
		die("UFFDIO_WRITEPROTECT", errno);
	}
	bool write = m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE;
	uint64_t start = addr & ~(r->block - 1);
	int64_t rc = -EEXIST;
	if (r->block > PAGE && raw_block_clean(r, start))
		rc = raw_copy(r, start, r->block, write);
	if (rc == 0)
		return true;
	if (rc == -EAGAIN)
		return false;
	/* part of the block is there (or a page of it reads as zero): the faulting page */
	rc = raw_copy(r, addr, PAGE, write);
	if (rc == -EAGAIN)
		return false;
	if (rc == -EEXIST) {
		struct uffdio_range range = {.start = addr, .len = PAGE};
		if (ioctl(r->uffd, UFFDIO_WAKE, &range))
			die("UFFDIO_WAKE", errno);
	}
	return true;
}

/* Reads every pending event; faults are appended to deferred (served by the caller). */
static void raw_read_events(struct ms_raw_uffd *r)
{
	for (;;) {
		struct uffd_msg msgs[64];
		ssize_t n = read(r->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			die("read(uffd)", errno);
		}
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			const struct uffd_msg *m = &msgs[i];
			if (m->event == UFFD_EVENT_REMOVE) {
				uint64_t lo = (m->arg.remove.start + PAGE - 1) & ~(PAGE - 1);
				for (uint64_t a = lo; a + PAGE <= m->arg.remove.end; a += PAGE)
					if (a >= r->base && a < r->base + r->size)
						r->removed[(a - r->base) / PAGE] = 1;
				atomic_fetch_add(&r->events_remove, 1);
				continue;
			}
			if (m->event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (r->deferred_count == DEFER_MAX)
				die("raw handler", ENOBUFS);
			r->deferred[r->deferred_count++] = *m;
			atomic_fetch_add(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP
					     ? &r->faults_wp
					     : &r->faults,
					 1);
		}
		if (n < (ssize_t)sizeof(msgs))
			return;
	}
}

static void *raw_main(void *arg)
{
	struct ms_raw_uffd *r = arg;
	int conn = accept(r->listen_fd, NULL, NULL), fds[2], nfds;
	char *text;
	size_t len;
	struct ms_uffd_handshake hs;
	if (conn < 0 || ms_uffd_handshake_recv(conn, 5 * SEC, &text, &len, fds, &nfds))
		die("raw handshake", EPROTO);
	if (ms_uffd_handshake_parse(text, len, r->size, &hs) || hs.region_count != 1 ||
	    hs.regions[0].size != r->size || hs.page_size != PAGE)
		die("raw handshake parse", EPROTO);
	free(text);
	r->uffd = fds[0];
	if (nfds == 2)
		close(fds[1]);
	r->base = hs.regions[0].base;
	ms_uffd_handshake_fini(&hs);
	for (;;) {
		struct pollfd pfd[2] = {{.fd = r->uffd, .events = POLLIN},
					{.fd = r->stop_efd, .events = POLLIN}};
		if (poll(pfd, 2, r->deferred_count ? 1 : -1) < 0 && errno != EINTR)
			die("poll", errno);
		if (pfd[1].revents)
			break;
		raw_read_events(r);
		size_t kept = 0;
		for (size_t i = 0; i < r->deferred_count; i++)
			if (!raw_serve(r, &r->deferred[i]))
				r->deferred[kept++] = r->deferred[i];
		atomic_fetch_add(&r->retries, kept);
		r->deferred_count = kept;
	}
	close(r->uffd);
	close(conn);
	return NULL;
}

struct ms_raw_uffd *ms_raw_uffd_start(const char *path, const uint8_t *source, uint64_t size,
				      uint64_t block)
{
	struct ms_raw_uffd *r = calloc(1, sizeof(*r));
	if (!r || !(r->removed = calloc(size / PAGE, 1)))
		die("calloc", ENOMEM);
	r->source = source;
	r->size = size;
	r->block = block;
	unlink(path);
	r->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (r->listen_fd < 0 || bind(r->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(r->listen_fd, 1))
		die("raw listen", errno);
	if ((r->stop_efd = eventfd(0, EFD_CLOEXEC)) < 0)
		die("eventfd", errno);
	if ((errno = pthread_create(&r->thread, NULL, raw_main, r)))
		die("pthread_create", errno);
	return r;
}

void ms_raw_uffd_stop(struct ms_raw_uffd *r, const char *path)
{
	uint64_t one = 1;
	if (write(r->stop_efd, &one, sizeof(one)) != sizeof(one))
		die("stop", errno);
	pthread_join(r->thread, NULL);
	close(r->stop_efd);
	close(r->listen_fd);
	unlink(path);
	if (atomic_load(&r->faults_wp) || atomic_load(&r->events_remove))
		fprintf(stderr, "raw handler: saw %llu WP faults, %llu REMOVE\n",
			(unsigned long long)atomic_load(&r->faults_wp),
			(unsigned long long)atomic_load(&r->events_remove));
	free(r->removed);
	free(r);
}

uint64_t ms_raw_uffd_faults(struct ms_raw_uffd *r)
{
	return atomic_load(&r->faults);
}
