/*
 * memory.c - the written-page tracker (async and sync), the handshake's VMM
 * side, image fill (memory.h).
 *
 * Invariants:
 *  1. Sync: every WP fault read from the uffd is resolved through the wpset
 *     (record, then unprotect); one that cannot be resolved is logged and the
 *     writer woken to fault again, never dropped silently.
 *  2. The process-wide mode is read when a sandbox is created; a sandbox keeps
 *     the mode it started with.
 */
#include "sandbox/memory.h"
#include "uffd/handshake.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/uffd_compat.h"

#include <poll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define MS_TRACKER_MOD "tracker"
/* How long a lazy sync restore waits for the page server's session to claim its set. */
#define MS_WTRACKER_CLAIM_NS (10 * MS_NSEC_PER_SEC)

static _Atomic int ms_tracker_current = MS_TRACKER_ASYNC;

int ms_tracker_mode_parse(const char *name, enum ms_tracker_mode *out)
{
	static const char *const names[] = {"auto", "async", "sync"};
	for (int i = 0; i < 3; i++)
		if (!strcmp(name, names[i])) {
			*out = (enum ms_tracker_mode)i;
			return 0;
		}
	return -EINVAL;
}

const char *ms_tracker_mode_name(enum ms_tracker_mode mode)
{
	return mode == MS_TRACKER_SYNC ? "sync" : mode == MS_TRACKER_ASYNC ? "async" : "auto";
}

void ms_tracker_set_mode(enum ms_tracker_mode mode)
{
	atomic_store(&ms_tracker_current,
		     mode == MS_TRACKER_SYNC ? MS_TRACKER_SYNC : MS_TRACKER_ASYNC);
}

enum ms_tracker_mode ms_tracker_mode(void)
{
	return (enum ms_tracker_mode)atomic_load(&ms_tracker_current);
}

/* Whether PAGEMAP_SCAN answers on this kernel (an ioctl over one page of our own). */
static bool ms_tracker_has_pagemap_scan(void)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	void *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool ok = false;
	if (page != MAP_FAILED) {
		struct page_region region;
		struct pm_scan_arg arg = {.size = sizeof(arg),
					  .start = (uint64_t)(uintptr_t)page,
					  .end = (uint64_t)(uintptr_t)page + 4096,
					  .vec = (uint64_t)(uintptr_t)&region,
					  .vec_len = 1,
					  .category_mask = PAGE_IS_PRESENT,
					  .return_mask = PAGE_IS_PRESENT};
		ok = ioctl(fd, PAGEMAP_SCAN, &arg) >= 0;
		munmap(page, 4096);
	}
	close(fd);
	return ok;
}

int ms_tracker_pick(enum ms_tracker_mode want, bool probe_none, enum ms_tracker_mode *out,
		    char *why, size_t why_len)
{
	struct utsname u;
	const char *release = uname(&u) ? "?" : u.release;
	uint64_t features = 0;
	int uffd_err = 0;
	bool scan = false;
	if (!probe_none) {
		int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		struct uffdio_api api = {.api = UFFD_API, .features = 0};
		if (fd < 0)
			uffd_err = -errno;
		else if (ioctl(fd, UFFDIO_API, &api))
			uffd_err = -errno;
		else
			features = api.features;
		if (fd >= 0)
			close(fd);
		scan = ms_tracker_has_pagemap_scan();
	}
	bool async = (features & UFFD_FEATURE_WP_ASYNC) && scan;
	bool sync = (features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) &&
		    (features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	if (!async && !sync) {
		if (uffd_err)
			snprintf(why, why_len,
				 "no written-page tracker: userfaultfd() fails on kernel %s (%s; "
				 "vm.unprivileged_userfaultfd=0 needs root or CAP_SYS_PTRACE)",
				 release, strerror(-uffd_err));
		else
			snprintf(why, why_len,
				 "no written-page tracker: kernel %s has no userfaultfd "
				 "write-protect for shared memory (UFFD_FEATURE_PAGEFAULT_FLAG_WP "
				 "+ WP_HUGETLBFS_SHMEM, Linux >= 5.19)%s",
				 release, probe_none ? " [probe disabled by the test hook]" : "");
		return -ENOTSUP;
	}
	if (want == MS_TRACKER_ASYNC && !async) {
		snprintf(
		    why, why_len,
		    "tracker async was asked for, but kernel %s lacks %s (Linux >= 6.7)", release,
		    features & UFFD_FEATURE_WP_ASYNC ? "PAGEMAP_SCAN" : "UFFD_FEATURE_WP_ASYNC");
		return -ENOTSUP;
	}
	if (want == MS_TRACKER_SYNC && !sync) {
		snprintf(
		    why, why_len,
		    "tracker sync was asked for, but kernel %s lacks userfaultfd write-protect "
		    "for shared memory (UFFD_FEATURE_WP_HUGETLBFS_SHMEM)",
		    release);
		return -ENOTSUP;
	}
	*out = want == MS_TRACKER_SYNC || !async ? MS_TRACKER_SYNC : MS_TRACKER_ASYNC;
	if (*out == MS_TRACKER_ASYNC)
		snprintf(
		    why, why_len,
		    "kernel %s has UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN: the kernel resolves "
		    "write faults, a pause scans the page tables%s",
		    release, want == MS_TRACKER_ASYNC ? " (tracker = async)" : "");
	else if (want == MS_TRACKER_SYNC)
		snprintf(why, why_len,
			 "tracker = sync (forced; kernel %s %s async WP): every first write to a "
			 "page per pause is a userfaultfd fault",
			 release, async ? "also has" : "lacks");
	else
		snprintf(why, why_len,
			 "kernel %s lacks %s: synchronous userfaultfd write-protect "
			 "(UFFD_FEATURE_PAGEFAULT_FLAG_WP), every first write to a page per pause "
			 "is a fault",
			 release,
			 features & UFFD_FEATURE_WP_ASYNC ? "PAGEMAP_SCAN"
							  : "UFFD_FEATURE_WP_ASYNC");
	return 0;
}

int ms_guestmem_uffd(uint64_t base, uint64_t size, bool lazy, enum ms_tracker_mode mode)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		return -errno;
	/* sync asks only for what 5.19 has: WP on shmem (PTE markers keep it on unmapped pages) */
	uint64_t wp = mode == MS_TRACKER_SYNC
			  ? UFFD_FEATURE_WP_HUGETLBFS_SHMEM
			  : UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
				UFFD_FEATURE_WP_UNPOPULATED;
	struct uffdio_api api = {.api = UFFD_API,
				 .features = wp | (lazy ? UFFD_FEATURE_EVENT_REMOVE : 0)};
	if (ioctl(uffd, UFFDIO_API, &api)) {
		int err = errno == EINVAL ? -ENOTSUP : -errno;
		close(uffd);
		return err;
	}
	struct uffdio_register reg = {.range = {.start = base, .len = size},
				      .mode = UFFDIO_REGISTER_MODE_WP |
					      (lazy ? UFFDIO_REGISTER_MODE_MISSING : 0)};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		int err = -errno;
		close(uffd);
		return err;
	}
	return uffd;
}

int ms_guestmem_protect(int uffd, uint64_t base, uint64_t size)
{
	struct uffdio_writeprotect wp = {.range = {.start = base, .len = size},
					 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

int ms_guestmem_scan(int pagemap, uint64_t base, uint64_t size, bool reset, struct ms_pageset *set)
{
	struct page_region regions[256];
	uint64_t start = base, end = base + size;
	while (start < end) {
		struct pm_scan_arg arg = {
		    .size = sizeof(arg),
		    .flags = PM_SCAN_CHECK_WPASYNC | (reset ? PM_SCAN_WP_MATCHING : 0),
		    .start = start,
		    .end = end,
		    .vec = (uint64_t)(uintptr_t)regions,
		    .vec_len = 256,
		    .category_mask = PAGE_IS_WRITTEN,
		    .return_mask = PAGE_IS_WRITTEN,
		};
		long n = ioctl(pagemap, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return errno == EINVAL || errno == ENOTTY ? -ENOTSUP : -errno;
		for (long i = 0; i < n; i++)
			ms_pageset_add_range(set, (regions[i].start - base) / 4096,
					     (regions[i].end - base) / 4096);
		/* complete when the vector was not filled (walk_end can come back short) */
		if (n < 256)
			break;
		start = regions[n - 1].end;
	}
	return 0;
}

int ms_guestmem_send_fds(int sock, const void *payload, size_t len, const int *fds, int nfds)
{
	char control[CMSG_SPACE(2 * sizeof(int))];
	memset(control, 0, sizeof(control));
	struct iovec iov = {.iov_base = (void *)payload, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int))};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	return sendmsg(sock, &msg, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -EIO;
}

int ms_guestmem_handshake(const char *socket_path, uint64_t base, uint64_t size, int uffd,
			  int memfd)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(socket_path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, socket_path, strlen(socket_path) + 1);
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	char json[256];
	struct ms_uffd_region region = {.base = base, .size = size, .offset = 0};
	int n = ms_uffd_handshake_format(json, sizeof(json), &region, 1, MS_UFFD_PAGE_4K);
	int fds[2] = {uffd, memfd};
	int err = 0;
	if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)))
		err = -errno;
	else
		err = ms_guestmem_send_fds(sock, json, (size_t)n, fds, 2);
	if (err) {
		close(sock);
		return err;
	}
	return sock;
}

int ms_guestmem_fill(int dst, int src, uint64_t size)
{
	loff_t in = 0;
	while ((uint64_t)in < size) {
		ssize_t n = copy_file_range(src, &in, dst, NULL, size - (uint64_t)in, 0);
		if (n > 0)
			continue;
		if (n == 0)
			return -EIO; /* the image is shorter than the memory */
		if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS)
			return -errno;
		char *buf = malloc(1 << 20);
		if (!buf)
			return -ENOMEM;
		int err = 0;
		while (!err && (uint64_t)in < size) {
			size_t want =
			    size - (uint64_t)in < (1 << 20) ? size - (uint64_t)in : (1 << 20);
			ssize_t got = pread(src, buf, want, in);
			if (got <= 0)
				err = got < 0 ? -errno : -EIO;
			else if (pwrite(dst, buf, (size_t)got, in) != got)
				err = -EIO;
			else
				in += got;
		}
		free(buf);
		return err;
	}
	return 0;
}

/* ---- one sandbox's tracker ---- */

int ms_wtracker_init(struct ms_wtracker *t, enum ms_tracker_mode mode, uint64_t base, uint64_t size)
{
	memset(t, 0, sizeof(*t));
	t->mode = mode == MS_TRACKER_SYNC ? MS_TRACKER_SYNC : MS_TRACKER_ASYNC;
	t->base = base;
	t->size = size;
	t->uffd = t->pagemap = t->published_memfd = t->stop_efd = -1;
	t->initialized = true;
	if (t->mode == MS_TRACKER_SYNC && !(t->wpset = ms_wpset_new(base, size)))
		return -ENOMEM;
	return 0;
}

int ms_wtracker_publish(struct ms_wtracker *t, int memfd)
{
	if (t->mode != MS_TRACKER_SYNC)
		return 0;
	int err = ms_wpset_publish(t->wpset, memfd);
	if (!err)
		t->published_memfd = memfd;
	return err;
}

/* Resolves one WP fault; on a failed unprotect the writer is woken to fault again. */
static void ms_wtracker_resolve(struct ms_wtracker *t, uint64_t addr)
{
	for (int attempt = 0;; attempt++) {
		int err = ms_wpset_resolve(t->wpset, t->uffd, addr, 4096);
		if (err == -EAGAIN && attempt < 1000) { /* the mm is changing: retry */
			ms_clock_sleep_ns(100000);
			continue;
		}
		if (err && err != -ENOENT && err != -ESRCH) {
			ms_warn(MS_TRACKER_MOD, "UFFDIO_WRITEPROTECT clear at 0x%llx: %s",
				(unsigned long long)addr, strerror(-err));
			struct uffdio_range wake = {.start = addr & ~4095ULL, .len = 4096};
			ioctl(t->uffd, UFFDIO_WAKE, &wake);
		}
		return;
	}
}

/* The sync reader (fresh and eager sandboxes): WP faults until stop_efd fires. */
static void *ms_wtracker_thread(void *arg)
{
	struct ms_wtracker *t = arg;
	struct pollfd fds[2] = {{.fd = t->uffd, .events = POLLIN},
				{.fd = t->stop_efd, .events = POLLIN}};
	struct uffd_msg msgs[32];
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			ms_err(MS_TRACKER_MOD, "poll on the uffd: %s", strerror(errno));
			return NULL;
		}
		if (fds[1].revents)
			return NULL;
		if (fds[0].revents & (POLLERR | POLLNVAL))
			return NULL;
		ssize_t n = read(t->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			ms_err(MS_TRACKER_MOD, "reading the uffd: %s", strerror(errno));
			return NULL;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			const struct uffd_msg *m = &msgs[i];
			if (m->event != UFFD_EVENT_PAGEFAULT)
				continue; /* no other event is asked for */
			if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
				ms_wtracker_resolve(t, m->arg.pagefault.address);
			else /* never registered MISSING: cannot happen, but never leave it blocked
			      */
				ms_warn(MS_TRACKER_MOD, "unexpected missing fault at 0x%llx",
					(unsigned long long)m->arg.pagefault.address);
		}
	}
}

int ms_wtracker_attach(struct ms_wtracker *t, int uffd, pid_t pid, bool lazy)
{
	t->uffd = uffd;
	int err = ms_guestmem_protect(uffd, t->base, t->size);
	if (err)
		return err;
	if (t->mode == MS_TRACKER_ASYNC) {
		char path[64];
		if (pid)
			snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
		else
			snprintf(path, sizeof(path), "/proc/self/pagemap");
		if ((t->pagemap = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			return -errno;
		return 0;
	}
	if (lazy) {
		err = ms_wpset_wait_claimed(t->wpset, MS_WTRACKER_CLAIM_NS);
		if (t->published_memfd >= 0)
			ms_wpset_withdraw(t->published_memfd); /* a no-op once claimed */
		t->published_memfd = -1;
		if (err) {
			ms_err(MS_TRACKER_MOD,
			       "sync tracker: no page server in this process took the lazy "
			       "restore's write faults (a page server in another process cannot "
			       "report them): refused");
			return -ENOTSUP;
		}
		return 0;
	}
	if ((t->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		return -errno;
	if ((err = -pthread_create(&t->thread, NULL, ms_wtracker_thread, t)))
		return err;
	t->thread_started = true;
	return 0;
}

int ms_wtracker_scan(struct ms_wtracker *t, bool reset, struct ms_pageset *set)
{
	if (t->mode == MS_TRACKER_SYNC)
		return t->uffd < 0 ? -EINVAL : ms_wpset_take(t->wpset, t->uffd, reset, set);
	if (t->pagemap < 0)
		return -EINVAL;
	return ms_guestmem_scan(t->pagemap, t->base, t->size, reset, set);
}

void ms_wtracker_fini(struct ms_wtracker *t)
{
	if (!t->initialized)
		return;
	if (t->thread_started) {
		uint64_t one = 1;
		if (write(t->stop_efd, &one, sizeof(one)) != sizeof(one))
			ms_warn(MS_TRACKER_MOD, "stopping the reader: %s", strerror(errno));
		pthread_join(t->thread, NULL);
		t->thread_started = false;
	}
	if (t->stop_efd >= 0)
		close(t->stop_efd);
	if (t->pagemap >= 0)
		close(t->pagemap);
	if (t->published_memfd >= 0)
		ms_wpset_withdraw(t->published_memfd);
	ms_wpset_unref(t->wpset);
	t->wpset = NULL;
	t->stop_efd = t->pagemap = t->published_memfd = t->uffd = -1;
	t->initialized = false;
}
