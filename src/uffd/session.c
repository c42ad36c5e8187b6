/*
 * session.c - one restore session: serve a VMM's userfaultfd from a page source.
 *
 * Threads:
 *   event thread  polls {uffd, stop eventfd, wakeup eventfd, peer pidfd}, reads
 *                 uffd events in batches, applies REMOVE/UNMAP/REMAP, plans each
 *                 fault, and performs EVERY install ioctl (UFFDIO_COPY, ZEROPAGE,
 *                 WRITEPROTECT, WAKE) of the session.
 *   workers (N)   only fetch: they read source bytes for a planned block into
 *                 the job's buffer, retrying with backoff, and hand the job back
 *                 through the completion list + wakeup eventfd.
 *
 * Why installs happen on the event thread: a guest madvise(MADV_DONTNEED)
 * queues a REMOVE event, waits until the handler *reads* it, and only then
 * zaps the pages. A worker that installed after that zap would leave stale
 * data in a page that must read as zero. Because the thread that reads events
 * is also the only one that installs, every install sees every REMOVE read
 * before it (the tracker says REMOVED), and an install that races a REMOVE
 * not yet read fails with EAGAIN (the kernel's mmap_changing) and is retried
 * after the event is read. So the event reader never waits for a worker, nor
 * takes a lock a worker holds across I/O: a guest madvise always progresses,
 * even while every worker is blocked on a slow source.
 *
 * Faults whose source range is_cached() are read inline on the event thread
 * (no hand-off), the rest go to the workers; zero pages (is_zero) need no read.
 *
 * Install modes (tracker.h for states):
 *   read fault / prefault / neighbour: UFFDIO_COPY_MODE_WP when the region's
 *     registration has WP (probed: EINVAL on the first WP copy means no WP),
 *     so a later write raises a WP fault and is recorded DIRTY.
 *   write fault: mode 0 (writable), DIRTY at once.
 *   zero page, read: COPY from a zero buffer with MODE_WP when WP (atomic install
 *     + protect; UFFDIO_ZEROPAGE has no WP mode and would map the shared zero
 *     page unprotected, so the guest's first write would go unseen); without WP,
 *     UFFDIO_ZEROPAGE for 4 KiB pages. Zero write faults and 2 MiB pages
 *     (hugetlb has no ZEROPAGE) copy from the zero buffer.
 *   WP fault: UFFDIO_WRITEPROTECT clear (wakes the writer), DIRTY.
 *
 * Ioctl results: EEXIST -> wake; EAGAIN or a short copy -> the job is deferred
 * and retried after the next event read; ESRCH -> dropped (process gone);
 * ENOENT -> dropped (range unmapped); anything else fails the session.
 * Source reads: 4 attempts, 50 ms doubling to 500 ms with jitter; then the
 * session fails loudly (state FAILED, event fd, callback, error log).
 *
 * Invariants:
 *  1. Only the event thread issues uffd ioctls and writes the tracker.
 *  2. A page is never installed from source data once REMOVE was read for it.
 *  3. A page with a fetch in flight has the tracker's INFLIGHT bit; a fault on
 *     it is dropped because the job's install (or its final wake) wakes it.
 *  4. Every job ends in exactly one of: installed, deferred (kept), dropped,
 *     freed at close; its prefault request is told exactly once.
 */
#include "uffd/session.h"
#include "uffd/tracker.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UFFD_MOD	      "uffd"
#define UFFD_EVENT_BATCH      64
#define UFFD_MAX_BLOCK_PAGES  512
#define UFFD_NO_FAULT	      UINT64_MAX
#define UFFD_READ_ATTEMPTS    4
#define UFFD_RETRY_INITIAL_NS (50 * MS_NSEC_PER_MSEC)
#define UFFD_RETRY_MAX_NS     (500 * MS_NSEC_PER_MSEC)

const uint64_t ms_uffd_latency_bounds_us[MS_UFFD_LATENCY_BUCKETS - 1] = {
    10, 25, 50, 100, 250, 1000, 10000, 100000, 1000000};

/* A blocking prefault call, waiting on the session's state_cond. Guarded by session lock. */
struct uffd_prefault_req {
	struct uffd_prefault_req *next;
	const uint64_t *offsets;
	size_t count;
	size_t pending; /* jobs not finished */
	bool dispatched;
	int err;
};

enum uffd_job_kind { UFFD_JOB_FILL, UFFD_JOB_WP };

struct uffd_job {
	struct uffd_job *next;
	enum uffd_job_kind kind;
	const struct ms_uffd_region *region;
	uint64_t block_addr; /* host address of the block */
	uint64_t block_off;  /* device offset of the block */
	uint64_t npages;     /* pages in the block */
	uint64_t fault_addr; /* page-aligned faulting address, or UFFD_NO_FAULT */
	bool write;	     /* the fault was a write */
	uint64_t mask[UFFD_MAX_BLOCK_PAGES / 64]; /* pages to install from buf */
	uint8_t *buf;				  /* npages * page_size; NULL: zero job */
	bool buf_owned;
	int err;	 /* fetch result */
	int64_t t_event; /* when the fault was read; 0 for prefault */
	struct uffd_prefault_req *req;
};

struct ms_uffd_session {
	atomic_int refs;
	/* Immutable after start. */
	uint64_t id;
	const struct ms_page_source_ops *ops;
	void *ctx;
	struct ms_pageserver_options options;
	uint64_t image_size;
	uint64_t page_size;
	uint64_t block_pages; /* pages per batch block (>= 1) */
	struct ms_uffd_handshake hs;
	int uffd, memfd, conn, pidfd;
	pid_t peer_pid;
	int stop_efd, wake_efd, event_efd;
	uint8_t *zero_page; /* page_size zero bytes */
	uint8_t *scratch;   /* block buffer for inline reads; event thread only */
	int64_t start_ns;

	struct ms_uffd_tracker tracker; /* own lock; see tracker.h */
	struct ms_uffd_metrics metrics; /* atomics */
	_Atomic int wp_state;		/* -1 unknown, 0 no WP, 1 WP; written by event thread */

	pthread_mutex_t lock;	   /* guards everything below up to "event thread only" */
	pthread_cond_t work_cond;  /* workers: queue non-empty or stopping (monotonic clock) */
	pthread_cond_t state_cond; /* state changes, prefault completions */
	struct uffd_job *queue_head, *queue_tail; /* to workers */
	struct uffd_job *done_head, *done_tail;	  /* back from workers */
	struct uffd_prefault_req *req_head, *req_tail;
	enum ms_uffd_session_state state;
	int error;
	bool workers_stop;
	bool stop_requested;
	bool joined;
	pthread_t event_thread;
	pthread_t *workers;
	unsigned worker_count;

	/* Event thread only. */
	struct uffd_job *deferred_head, *deferred_tail;
	size_t deferred_count;
};

/* ---- small helpers ---- */

static void uffd_latency_record(struct ms_uffd_session *s, int64_t t_event)
{
	if (!t_event)
		return;
	uint64_t us = (uint64_t)(ms_clock_now_ns() - t_event) / 1000;
	unsigned b = 0;
	while (b < MS_UFFD_LATENCY_BUCKETS - 1 && us > ms_uffd_latency_bounds_us[b])
		b++;
	atomic_fetch_add(&s->metrics.latency[b], 1);
}

static void uffd_eventfd_signal(int fd)
{
	uint64_t one = 1;
	ssize_t n = write(fd, &one, sizeof(one));
	(void)n; /* EAGAIN only when the counter is saturated: already signalled */
}

static void uffd_eventfd_drain(int fd)
{
	uint64_t v;
	ssize_t n = read(fd, &v, sizeof(v));
	(void)n;
}

static const struct ms_uffd_region *uffd_region_by_addr(struct ms_uffd_session *s, uint64_t addr)
{
	for (size_t i = 0; i < s->hs.region_count; i++) {
		const struct ms_uffd_region *r = &s->hs.regions[i];
		if (addr >= r->base && addr - r->base < r->size)
			return r;
	}
	return NULL;
}

static const struct ms_uffd_region *uffd_region_by_off(struct ms_uffd_session *s, uint64_t off)
{
	for (size_t i = 0; i < s->hs.region_count; i++) {
		const struct ms_uffd_region *r = &s->hs.regions[i];
		if (off >= r->offset && off - r->offset < r->size)
			return r;
	}
	return NULL;
}

static inline bool uffd_mask_test(const uint64_t *mask, uint64_t i)
{
	return mask[i / 64] >> (i % 64) & 1;
}

static inline void uffd_mask_set(uint64_t *mask, uint64_t i)
{
	mask[i / 64] |= 1ULL << (i % 64);
}

static void uffd_job_free(struct uffd_job *job)
{
	if (job->buf_owned)
		free(job->buf);
	free(job);
}

static void uffd_list_push(struct uffd_job **head, struct uffd_job **tail, struct uffd_job *job)
{
	job->next = NULL;
	if (*tail)
		(*tail)->next = job;
	else
		*head = job;
	*tail = job;
}

static struct uffd_job *uffd_list_pop(struct uffd_job **head, struct uffd_job **tail)
{
	struct uffd_job *job = *head;
	if (job) {
		*head = job->next;
		if (!*head)
			*tail = NULL;
		job->next = NULL;
	}
	return job;
}

/* A prefault job finished (err 0 = installed or skipped). */
static void uffd_req_job_done(struct ms_uffd_session *s, struct uffd_prefault_req *req, int err)
{
	if (!req)
		return;
	pthread_mutex_lock(&s->lock);
	if (err && !req->err)
		req->err = err;
	req->pending--;
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);
}

/* Leaves SERVING for FAILED: loud, once. Event thread only. */
static void uffd_session_fail(struct ms_uffd_session *s, int err, const char *what)
{
	pthread_mutex_lock(&s->lock);
	if (s->state != MS_UFFD_SESSION_SERVING) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	s->state = MS_UFFD_SESSION_FAILED;
	s->error = err;
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add(&s->metrics.errors, 1);
	ms_err(UFFD_MOD, "session %llu (pid %d) FAILED: %s: %s; faults are no longer served",
	       (unsigned long long)s->id, (int)s->peer_pid, what, ms_strerror(err));
	if (s->options.on_session_event)
		s->options.on_session_event(s->options.event_arg, s, MS_UFFD_SESSION_FAILED, err);
	uffd_eventfd_signal(s->event_efd);
}

static bool uffd_serving(struct ms_uffd_session *s)
{
	pthread_mutex_lock(&s->lock);
	bool serving = s->state == MS_UFFD_SESSION_SERVING;
	pthread_mutex_unlock(&s->lock);
	return serving;
}

/* ---- ioctls (event thread only) ---- */

/* Bytes installed (> 0, possibly short) or a negative errno for the first page. */
static int64_t uffd_copy(struct ms_uffd_session *s, uint64_t addr, const void *src, uint64_t len,
			 uint64_t mode)
{
	struct uffdio_copy copy = {
	    .dst = addr, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = mode};
	if (ioctl(s->uffd, UFFDIO_COPY, &copy) == 0)
		return (int64_t)len;
	int e = errno;
	if (copy.copy > 0)
		return copy.copy;
	return copy.copy < 0 ? copy.copy : -e;
}

static int64_t uffd_zeropage(struct ms_uffd_session *s, uint64_t addr, uint64_t len)
{
	struct uffdio_zeropage zp = {.range = {.start = addr, .len = len}, .mode = 0};
	if (ioctl(s->uffd, UFFDIO_ZEROPAGE, &zp) == 0)
		return (int64_t)len;
	int e = errno;
	if (zp.zeropage > 0)
		return zp.zeropage;
	return zp.zeropage < 0 ? zp.zeropage : -e;
}

static void uffd_wake(struct ms_uffd_session *s, uint64_t addr, uint64_t len)
{
	struct uffdio_range range = {.start = addr, .len = len};
	if (ioctl(s->uffd, UFFDIO_WAKE, &range) != 0 && errno != ENOENT && errno != ESRCH)
		ms_debug(UFFD_MOD, "session %llu: UFFDIO_WAKE: %s", (unsigned long long)s->id,
			 strerror(errno));
}

/* ---- installing a planned job (event thread only) ---- */

enum uffd_action { UFFD_SKIP, UFFD_SRC, UFFD_ZERO };

enum uffd_install_result { UFFD_DONE, UFFD_DEFER, UFFD_DROP, UFFD_FAILED };

/*
 * Installs what is left of job, re-reading the tracker for every page (a REMOVE
 * may have arrived since the job was planned). Returns DONE (all work done,
 * waiters woken), DEFER (keep the job, retry later), DROP or FAILED.
 */
static enum uffd_install_result uffd_install(struct ms_uffd_session *s, struct uffd_job *job)
{
	const uint64_t ps = s->page_size;
	const uint64_t first_page = job->block_off / ps;
	uint64_t fault_idx = job->fault_addr == UFFD_NO_FAULT
				 ? UINT64_MAX
				 : (job->fault_addr - job->block_addr) / ps;
	bool need_wake = false, fault_done = false;
	uint64_t i = 0;
	while (i < job->npages) {
		/* Plan page i, then extend a run of pages with the same action. */
		uint64_t run = 0;
		enum uffd_action action = UFFD_SKIP;
		bool run_write = false;
		for (uint64_t k = i; k < job->npages; k++) {
			enum ms_uffd_page_state st =
			    MS_UFFD_PAGE_STATE(ms_uffd_tracker_get(&s->tracker, first_page + k));
			bool is_fault = k == fault_idx;
			enum uffd_action a = UFFD_SKIP;
			if (job->buf && uffd_mask_test(job->mask, k)) {
				if (st == MS_UFFD_PAGE_REMOVED || st == MS_UFFD_PAGE_ZERO)
					a = is_fault ? UFFD_ZERO : UFFD_SKIP;
				else if (st == MS_UFFD_PAGE_NOT_PRESENT || is_fault)
					a = UFFD_SRC;
			} else if (is_fault) {
				a = (st == MS_UFFD_PAGE_CLEAN || st == MS_UFFD_PAGE_DIRTY) &&
					    job->buf
					? UFFD_SRC
					: UFFD_ZERO;
			}
			bool w = is_fault && job->write;
			if (k == i) {
				action = a;
				run_write = w;
			} else if (a != action || w != run_write || a == UFFD_ZERO) {
				break; /* zero installs go page by page (one zero buffer page) */
			}
			run++;
			if (a == UFFD_SKIP)
				break;
		}
		if (action == UFFD_SKIP) {
			if (job->buf && uffd_mask_test(job->mask, i))
				need_wake = true; /* a fault dropped as in flight may wait here */
			i += run;
			continue;
		}
		uint64_t addr = job->block_addr + i * ps;
		uint64_t len = run * ps;
		int wp = atomic_load(&s->wp_state);
		uint64_t mode = (!run_write && wp != 0) ? UFFDIO_COPY_MODE_WP : 0;
		/* The tracker says the new state BEFORE the ioctl wakes the faulting thread, so
		 * once the guest's access is done the tracker (and export) has it; the pages not
		 * installed are set back right after. Only this thread writes the tracker. */
		enum ms_uffd_page_state to =
		    run_write ? MS_UFFD_PAGE_DIRTY
			      : (action == UFFD_SRC ? MS_UFFD_PAGE_CLEAN : MS_UFFD_PAGE_ZERO);
		uint8_t old[UFFD_MAX_BLOCK_PAGES];
		for (uint64_t k = 0; k < run; k++) {
			old[k] = ms_uffd_tracker_get(&s->tracker, first_page + i + k);
			ms_uffd_tracker_install(&s->tracker, first_page + i + k, to);
		}
		int64_t n;
		if (action == UFFD_SRC)
			n = uffd_copy(s, addr, job->buf + i * ps, len, mode);
		else if (!run_write && wp == 0 && ps == MS_UFFD_PAGE_4K)
			n = uffd_zeropage(s, addr, len);
		else
			n = uffd_copy(s, addr, s->zero_page, len, mode);
		uint64_t kept = n > 0 ? (uint64_t)n / ps : 0;
		for (uint64_t k = kept; k < run; k++)
			ms_uffd_tracker_set(&s->tracker, first_page + i + k, 1,
					    MS_UFFD_PAGE_STATE(old[k]));
		if (n == -EINVAL && (mode & UFFDIO_COPY_MODE_WP) && wp < 0) {
			/* The registration has no WP: install plain from now on. */
			atomic_store(&s->wp_state, 0);
			ms_info(UFFD_MOD,
				"session %llu: registration without WP; dirty tracking "
				"records write faults only",
				(unsigned long long)s->id);
			continue;
		}
		if (n > 0 && (mode & UFFDIO_COPY_MODE_WP) && wp < 0)
			atomic_store(&s->wp_state, 1);
		if (n > 0) {
			uint64_t done_pages = (uint64_t)n / ps;
			for (uint64_t k = i; k < i + done_pages; k++) {
				if (k == fault_idx) {
					fault_done = true;
					uffd_latency_record(s, job->t_event);
				} else if (action == UFFD_SRC && job->fault_addr != UFFD_NO_FAULT) {
					atomic_fetch_add(&s->metrics.pages_batched, 1);
				}
			}
			if (action == UFFD_SRC)
				atomic_fetch_add(&s->metrics.pages_source, done_pages);
			else
				atomic_fetch_add(&s->metrics.pages_zero, done_pages);
			if (job->req)
				atomic_fetch_add(&s->metrics.pages_prefault, done_pages);
			i += done_pages;
			if ((uint64_t)n < len) {
				atomic_fetch_add(&s->metrics.faults_deferred, 1);
				return UFFD_DEFER; /* short copy: the rest is retried */
			}
			continue;
		}
		switch ((int)n) {
		case -EEXIST:
			if (i == fault_idx) {
				atomic_fetch_add(&s->metrics.faults_eexist, 1);
				fault_done = true;
				uffd_latency_record(s, job->t_event);
			}
			need_wake = true;
			i++;
			continue;
		case -EAGAIN:
			atomic_fetch_add(&s->metrics.faults_deferred, 1);
			return UFFD_DEFER;
		case -ESRCH:
			atomic_fetch_add(&s->metrics.faults_esrch, 1);
			return UFFD_DROP;
		case -ENOENT:
			ms_warn(UFFD_MOD, "session %llu: [0x%llx, +%llu) is no longer registered",
				(unsigned long long)s->id, (unsigned long long)addr,
				(unsigned long long)len);
			return UFFD_DROP;
		default:
			uffd_session_fail(s, (int)n, "UFFDIO_COPY");
			return UFFD_FAILED;
		}
	}
	if (need_wake || (fault_idx != UINT64_MAX && !fault_done))
		uffd_wake(s, job->block_addr, job->npages * ps);
	return UFFD_DONE;
}

/* Clears the job's INFLIGHT bits. */
static void uffd_job_release_pages(struct ms_uffd_session *s, struct uffd_job *job)
{
	uint64_t first_page = job->block_off / s->page_size;
	for (uint64_t k = 0; k < job->npages; k++)
		if (uffd_mask_test(job->mask, k))
			ms_uffd_tracker_set_inflight(&s->tracker, first_page + k, false);
}

static void uffd_wp_resolve(struct ms_uffd_session *s, struct uffd_job *job);

/* Runs a job's install and disposes of it. The job is heap-allocated unless stack is true. */
static void uffd_job_finish(struct ms_uffd_session *s, struct uffd_job *job, bool on_stack)
{
	if (job->kind == UFFD_JOB_WP) {
		uffd_wp_resolve(s, job);
		return;
	}
	enum uffd_install_result r = uffd_install(s, job);
	if (r == UFFD_DEFER) {
		if (on_stack) {
			struct uffd_job *copy = malloc(sizeof(*copy));
			uint8_t *buf = job->buf ? malloc(job->npages * s->page_size) : NULL;
			if (!copy || (job->buf && !buf)) {
				free(copy);
				free(buf);
				uffd_job_release_pages(s, job);
				uffd_session_fail(s, -ENOMEM, "deferring a fault");
				return;
			}
			*copy = *job;
			if (buf)
				memcpy(buf, job->buf, job->npages * s->page_size);
			copy->buf = buf;
			copy->buf_owned = buf != NULL;
			job = copy;
		}
		uffd_list_push(&s->deferred_head, &s->deferred_tail, job);
		s->deferred_count++;
		return;
	}
	uffd_job_release_pages(s, job);
	uffd_req_job_done(s, job->req, r == UFFD_FAILED ? s->error : 0);
	if (!on_stack)
		uffd_job_free(job);
}

/* WP fault: unprotect (wakes the writer) and record DIRTY. */
static void uffd_wp_resolve(struct ms_uffd_session *s, struct uffd_job *job)
{
	/* DIRTY before the unprotect wakes the writer: by the time the guest's write is done,
	 * the tracker has it. (Even when the tracker says REMOVED: a zap racing the write
	 * keeps the page dirty, which over-approximates safely.) */
	ms_uffd_tracker_install(&s->tracker, job->block_off / s->page_size, MS_UFFD_PAGE_DIRTY);
	struct uffdio_writeprotect wp = {.range = {.start = job->fault_addr, .len = s->page_size},
					 .mode = 0};
	int rc = ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : -errno;
	if (rc == -EAGAIN) {
		atomic_fetch_add(&s->metrics.faults_deferred, 1);
		uffd_list_push(&s->deferred_head, &s->deferred_tail, job);
		s->deferred_count++;
		return;
	}
	if (rc == 0 || rc == -ENOENT) {
		uffd_latency_record(s, job->t_event);
	} else if (rc == -ESRCH) {
		atomic_fetch_add(&s->metrics.faults_esrch, 1);
	} else {
		ms_warn(UFFD_MOD, "session %llu: UFFDIO_WRITEPROTECT clear at 0x%llx: %s",
			(unsigned long long)s->id, (unsigned long long)job->fault_addr,
			strerror(-rc));
		uffd_wake(s, job->fault_addr, s->page_size);
	}
	free(job);
}

/* ---- planning faults (event thread only) ---- */

static bool uffd_source_is_zero(struct ms_uffd_session *s, uint64_t off, uint64_t len)
{
	return s->ops->is_zero && s->ops->is_zero(s->ctx, off, len);
}

/* Fills job->buf for the pages in job->mask; one read per run. Single attempt. */
static int uffd_job_read(struct ms_uffd_session *s, struct uffd_job *job)
{
	const uint64_t ps = s->page_size;
	uint64_t i = 0;
	while (i < job->npages) {
		if (!uffd_mask_test(job->mask, i)) {
			i++;
			continue;
		}
		uint64_t j = i;
		while (j < job->npages && uffd_mask_test(job->mask, j))
			j++;
		atomic_fetch_add(&s->metrics.source_reads, 1);
		int err =
		    s->ops->read(s->ctx, job->buf + i * ps, job->block_off + i * ps, (j - i) * ps);
		if (err)
			return err < 0 ? err : -EIO;
		i = j;
	}
	return 0;
}

/*
 * Plans a fill for the page at addr (page aligned) in region r: the aligned
 * batch block around it, with every NOT_PRESENT, present, non-zero neighbour.
 * fault_addr is addr for a fault, UFFD_NO_FAULT for a prefault (then only the
 * pages in extra_mask... are planned by the caller).
 */
static void uffd_plan_block(struct ms_uffd_session *s, const struct ms_uffd_region *r,
			    uint64_t addr, struct uffd_job *job)
{
	const uint64_t ps = s->page_size;
	uint64_t block_bytes = s->block_pages * ps;
	uint64_t rel = addr - r->base;
	uint64_t block_start = rel - rel % block_bytes;
	uint64_t block_end = block_start + block_bytes;
	if (block_end > r->size)
		block_end = r->size;
	memset(job, 0, sizeof(*job));
	job->kind = UFFD_JOB_FILL;
	job->region = r;
	job->block_addr = r->base + block_start;
	job->block_off = r->offset + block_start;
	job->npages = (block_end - block_start) / ps;
	job->fault_addr = UFFD_NO_FAULT;
}

/* Marks the planned pages INFLIGHT and either reads inline + installs, or queues to workers. */
static void uffd_job_dispatch(struct ms_uffd_session *s, struct uffd_job *stack_job)
{
	const uint64_t ps = s->page_size;
	uint64_t first_page = stack_job->block_off / ps;
	for (uint64_t k = 0; k < stack_job->npages; k++)
		if (uffd_mask_test(stack_job->mask, k))
			ms_uffd_tracker_set_inflight(&s->tracker, first_page + k, true);
	uint64_t lo = 0, hi = 0;
	for (uint64_t k = 0; k < stack_job->npages; k++) {
		if (uffd_mask_test(stack_job->mask, k)) {
			if (hi == 0)
				lo = k;
			hi = k + 1;
		}
	}
	if (s->ops->is_cached &&
	    s->ops->is_cached(s->ctx, stack_job->block_off + lo * ps, (hi - lo) * ps)) {
		stack_job->buf = s->scratch;
		stack_job->buf_owned = false;
		if (uffd_job_read(s, stack_job) == 0) {
			if (stack_job->fault_addr != UFFD_NO_FAULT)
				atomic_fetch_add(&s->metrics.faults_inline, 1);
			uffd_job_finish(s, stack_job, true);
			return;
		}
		/* Inline read failed: the workers retry it with backoff. */
	}
	struct uffd_job *job = malloc(sizeof(*job));
	uint8_t *buf = malloc(stack_job->npages * ps);
	if (!job || !buf) {
		free(job);
		free(buf);
		uffd_job_release_pages(s, stack_job);
		uffd_req_job_done(s, stack_job->req, -ENOMEM);
		uffd_session_fail(s, -ENOMEM, "allocating a fault buffer");
		return;
	}
	*job = *stack_job;
	job->buf = buf;
	job->buf_owned = true;
	pthread_mutex_lock(&s->lock);
	uffd_list_push(&s->queue_head, &s->queue_tail, job);
	pthread_cond_signal(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
}

/* Installs zeros for the page at addr right away (no read). */
static void uffd_zero_now(struct ms_uffd_session *s, const struct ms_uffd_region *r, uint64_t addr,
			  bool write, int64_t t_event, struct uffd_prefault_req *req)
{
	struct uffd_job job;
	memset(&job, 0, sizeof(job));
	job.kind = UFFD_JOB_FILL;
	job.region = r;
	job.block_addr = addr;
	job.block_off = r->offset + (addr - r->base);
	job.npages = 1;
	job.fault_addr = addr;
	job.write = write;
	job.t_event = t_event;
	job.req = req;
	uffd_job_finish(s, &job, true);
}

static void uffd_handle_fault(struct ms_uffd_session *s, const struct uffd_msg *msg,
			      int64_t t_event)
{
	const uint64_t ps = s->page_size;
	uint64_t flags = msg->arg.pagefault.flags;
	uint64_t addr = msg->arg.pagefault.address & ~(ps - 1);
	bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;
	if (!uffd_serving(s)) {
		atomic_fetch_add(&s->metrics.faults_dropped, 1);
		return;
	}
	if (flags & UFFD_PAGEFAULT_FLAG_MINOR) {
		uffd_session_fail(s, MS_EPROTO, "MINOR fault (registration mode not served)");
		return;
	}
	const struct ms_uffd_region *r = uffd_region_by_addr(s, addr);
	if (!r) {
		ms_err(UFFD_MOD, "session %llu: fault at 0x%llx outside every region",
		       (unsigned long long)s->id, (unsigned long long)addr);
		uffd_session_fail(s, MS_EPROTO, "fault outside the handshake's regions");
		return;
	}
	uint64_t off = r->offset + (addr - r->base);
	uint64_t page = off / ps;
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		atomic_fetch_add(&s->metrics.faults_wp, 1);
		struct uffd_job *job = calloc(1, sizeof(*job));
		if (!job) {
			uffd_session_fail(s, -ENOMEM, "allocating a WP fault");
			return;
		}
		job->kind = UFFD_JOB_WP;
		job->region = r;
		job->fault_addr = addr;
		job->block_addr = addr;
		job->block_off = off;
		job->npages = 1;
		job->t_event = t_event;
		uffd_wp_resolve(s, job);
		return;
	}
	atomic_fetch_add(write ? &s->metrics.faults_write : &s->metrics.faults_read, 1);
	uint8_t byte = ms_uffd_tracker_get(&s->tracker, page);
	if (byte & MS_UFFD_PAGE_INFLIGHT)
		return; /* the fetch in flight wakes this thread when it installs */
	enum ms_uffd_page_state st = MS_UFFD_PAGE_STATE(byte);
	if (st == MS_UFFD_PAGE_REMOVED || st == MS_UFFD_PAGE_ZERO ||
	    uffd_source_is_zero(s, off, ps)) {
		uffd_zero_now(s, r, addr, write, t_event, NULL);
		return;
	}
	struct uffd_job job;
	uffd_plan_block(s, r, addr, &job);
	job.fault_addr = addr;
	job.write = write;
	job.t_event = t_event;
	uint64_t first_page = job.block_off / ps;
	for (uint64_t k = 0; k < job.npages; k++) {
		uint64_t p = first_page + k;
		uint64_t o = p * ps;
		if (job.block_addr + k * ps == addr) {
			uffd_mask_set(job.mask, k);
			continue;
		}
		uint8_t b = ms_uffd_tracker_get(&s->tracker, p);
		if (b != MS_UFFD_PAGE_NOT_PRESENT) /* installed, removed or in flight */
			continue;
		if (s->ops->is_present && !s->ops->is_present(s->ctx, o))
			continue;
		if (uffd_source_is_zero(s, o, ps))
			continue;
		uffd_mask_set(job.mask, k);
	}
	uffd_job_dispatch(s, &job);
}

static void uffd_handle_remove(struct ms_uffd_session *s, uint64_t start, uint64_t end,
			       const char *what)
{
	const uint64_t ps = s->page_size;
	/* The range may span regions (and holes between them); mark per region. */
	for (size_t i = 0; i < s->hs.region_count; i++) {
		const struct ms_uffd_region *r = &s->hs.regions[i];
		uint64_t lo = start > r->base ? start : r->base;
		uint64_t hi = end < r->base + r->size ? end : r->base + r->size;
		if (lo >= hi)
			continue;
		/* Partial pages at the edges are not zapped whole: only whole pages count. */
		uint64_t first = (lo + ps - 1) & ~(ps - 1);
		uint64_t last = hi & ~(ps - 1);
		if (first >= last)
			continue;
		uint64_t off = r->offset + (first - r->base);
		ms_uffd_tracker_set(&s->tracker, off / ps, (last - first) / ps,
				    MS_UFFD_PAGE_REMOVED);
		atomic_fetch_add(&s->metrics.pages_removed, (last - first) / ps);
	}
	ms_debug(UFFD_MOD, "session %llu: %s [0x%llx, 0x%llx)", (unsigned long long)s->id, what,
		 (unsigned long long)start, (unsigned long long)end);
}

/* REMAP: a whole region moving keeps being served at its new address; anything else is
 * logged (later faults at the old place are outside every region and fail loudly). */
static void uffd_handle_remap(struct ms_uffd_session *s, const struct uffd_msg *msg)
{
	uint64_t from = msg->arg.remap.from, to = msg->arg.remap.to, len = msg->arg.remap.len;
	for (size_t i = 0; i < s->hs.region_count; i++) {
		struct ms_uffd_region *r = &s->hs.regions[i];
		if (r->base == from && r->size == len) {
			r->base = to;
			ms_warn(UFFD_MOD,
				"session %llu: region moved 0x%llx -> 0x%llx (%llu bytes)",
				(unsigned long long)s->id, (unsigned long long)from,
				(unsigned long long)to, (unsigned long long)len);
			return;
		}
	}
	ms_warn(UFFD_MOD,
		"session %llu: REMAP [0x%llx, +%llu) -> 0x%llx does not move a whole region; "
		"not followed",
		(unsigned long long)s->id, (unsigned long long)from, (unsigned long long)len,
		(unsigned long long)to);
}

/* Reads every pending event; applies non-fault events at once, collects faults. Never
 * takes a lock a worker holds across I/O. Returns the number of faults in *faults. */
static size_t uffd_read_events(struct ms_uffd_session *s, struct uffd_msg *faults, size_t cap,
			       bool *more)
{
	size_t nfaults = 0;
	*more = false;
	while (nfaults + UFFD_EVENT_BATCH <= cap) {
		struct uffd_msg msgs[UFFD_EVENT_BATCH];
		ssize_t n = read(s->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				ms_warn(UFFD_MOD, "session %llu: read(uffd): %s",
					(unsigned long long)s->id, strerror(errno));
			return nfaults;
		}
		size_t count = (size_t)n / sizeof(struct uffd_msg);
		for (size_t i = 0; i < count; i++) {
			const struct uffd_msg *m = &msgs[i];
			switch (m->event) {
			case UFFD_EVENT_PAGEFAULT:
				faults[nfaults++] = *m;
				break;
			case UFFD_EVENT_REMOVE:
				atomic_fetch_add(&s->metrics.events_remove, 1);
				uffd_handle_remove(s, m->arg.remove.start, m->arg.remove.end,
						   "REMOVE");
				break;
			case UFFD_EVENT_UNMAP:
				atomic_fetch_add(&s->metrics.events_unmap, 1);
				uffd_handle_remove(s, m->arg.remove.start, m->arg.remove.end,
						   "UNMAP");
				ms_info(UFFD_MOD, "session %llu: UNMAP [0x%llx, 0x%llx)",
					(unsigned long long)s->id,
					(unsigned long long)m->arg.remove.start,
					(unsigned long long)m->arg.remove.end);
				break;
			case UFFD_EVENT_REMAP:
				atomic_fetch_add(&s->metrics.events_remap, 1);
				uffd_handle_remap(s, m);
				break;
			case UFFD_EVENT_FORK:
				/* The child's uffd landed in our fd table: we do not serve forks.
				 */
				atomic_fetch_add(&s->metrics.events_other, 1);
				close((int)m->arg.fork.ufd);
				ms_warn(UFFD_MOD, "session %llu: FORK event; child not served",
					(unsigned long long)s->id);
				break;
			default:
				atomic_fetch_add(&s->metrics.events_other, 1);
				ms_warn(UFFD_MOD, "session %llu: unknown uffd event %u",
					(unsigned long long)s->id, (unsigned)m->event);
				break;
			}
		}
		if ((size_t)n < sizeof(msgs))
			return nfaults;
	}
	*more = true;
	return nfaults;
}

static void uffd_process_prefaults(struct ms_uffd_session *s)
{
	for (;;) {
		pthread_mutex_lock(&s->lock);
		struct uffd_prefault_req *req = s->req_head;
		if (req) {
			s->req_head = req->next;
			if (!s->req_head)
				s->req_tail = NULL;
		}
		bool serving = s->state == MS_UFFD_SESSION_SERVING;
		pthread_mutex_unlock(&s->lock);
		if (!req)
			return;
		const uint64_t ps = s->page_size;
		struct uffd_job job;
		bool open = false;
		for (size_t i = 0; serving && i < req->count; i++) {
			uint64_t off = req->offsets[i] & ~(ps - 1);
			const struct ms_uffd_region *r = uffd_region_by_off(s, off);
			uint64_t page = off / ps;
			uint64_t addr = r->base + (off - r->offset);
			if (open && (r != job.region || addr < job.block_addr ||
				     addr >= job.block_addr + job.npages * ps)) {
				pthread_mutex_lock(&s->lock);
				req->pending++;
				pthread_mutex_unlock(&s->lock);
				uffd_job_dispatch(s, &job);
				open = false;
			}
			if (ms_uffd_tracker_get(&s->tracker, page) != MS_UFFD_PAGE_NOT_PRESENT)
				continue;
			if (uffd_source_is_zero(s, off, ps)) {
				pthread_mutex_lock(&s->lock);
				req->pending++;
				pthread_mutex_unlock(&s->lock);
				uffd_zero_now(s, r, addr, false, 0, req);
				continue;
			}
			if (!open) {
				uffd_plan_block(s, r, addr, &job);
				job.req = req;
				open = true;
			}
			uffd_mask_set(job.mask, (addr - job.block_addr) / ps);
		}
		if (open) {
			pthread_mutex_lock(&s->lock);
			req->pending++;
			pthread_mutex_unlock(&s->lock);
			uffd_job_dispatch(s, &job);
		}
		pthread_mutex_lock(&s->lock);
		if (!serving && !req->err)
			req->err = s->error ? s->error : MS_ECLOSED;
		req->dispatched = true;
		pthread_cond_broadcast(&s->state_cond);
		pthread_mutex_unlock(&s->lock);
	}
}

static void uffd_process_completions(struct ms_uffd_session *s)
{
	for (;;) {
		pthread_mutex_lock(&s->lock);
		struct uffd_job *job = uffd_list_pop(&s->done_head, &s->done_tail);
		pthread_mutex_unlock(&s->lock);
		if (!job)
			return;
		if (job->err) {
			atomic_fetch_add(&s->metrics.source_errors, 1);
			uffd_job_release_pages(s, job);
			uffd_session_fail(s, job->err, "source read failed after retries");
			uffd_req_job_done(s, job->req, job->err);
			uffd_job_free(job);
			continue;
		}
		if (!uffd_serving(s)) {
			uffd_job_release_pages(s, job);
			uffd_req_job_done(s, job->req, s->error);
			uffd_job_free(job);
			continue;
		}
		uffd_job_finish(s, job, false);
	}
}

static void uffd_process_deferred(struct ms_uffd_session *s)
{
	struct uffd_job *list = s->deferred_head;
	s->deferred_head = s->deferred_tail = NULL;
	s->deferred_count = 0;
	while (list) {
		struct uffd_job *job = list;
		list = job->next;
		job->next = NULL;
		if (!uffd_serving(s)) {
			if (job->kind == UFFD_JOB_FILL)
				uffd_job_release_pages(s, job);
			uffd_req_job_done(s, job->req, s->error);
			uffd_job_free(job);
			continue;
		}
		uffd_job_finish(s, job, false);
	}
}

/* ---- workers ---- */

static void *uffd_worker_main(void *arg)
{
	struct ms_uffd_session *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->workers_stop && !s->queue_head)
			pthread_cond_wait(&s->work_cond, &s->lock);
		if (s->workers_stop)
			break;
		struct uffd_job *job = uffd_list_pop(&s->queue_head, &s->queue_tail);
		pthread_mutex_unlock(&s->lock);

		struct ms_backoff backoff;
		ms_backoff_init(&backoff, UFFD_RETRY_INITIAL_NS, UFFD_RETRY_MAX_NS,
				UFFD_READ_ATTEMPTS);
		bool stop = false;
		for (;;) {
			job->err = uffd_job_read(s, job);
			if (!job->err)
				break;
			int64_t delay;
			if (!ms_backoff_next(&backoff, &delay)) {
				ms_warn(UFFD_MOD, "session %llu: read at %llu failed %u times: %s",
					(unsigned long long)s->id,
					(unsigned long long)job->block_off, UFFD_READ_ATTEMPTS,
					ms_strerror(job->err));
				break;
			}
			atomic_fetch_add(&s->metrics.source_retries, 1);
			ms_debug(UFFD_MOD, "session %llu: read at %llu: %s; retry in %lld ms",
				 (unsigned long long)s->id, (unsigned long long)job->block_off,
				 ms_strerror(job->err), (long long)(delay / MS_NSEC_PER_MSEC));
			struct timespec deadline = ms_clock_deadline(delay);
			pthread_mutex_lock(&s->lock);
			while (!s->workers_stop &&
			       pthread_cond_timedwait(&s->work_cond, &s->lock, &deadline) == 0)
				;
			stop = s->workers_stop;
			pthread_mutex_unlock(&s->lock);
			if (stop)
				break;
		}
		pthread_mutex_lock(&s->lock);
		if (stop && job->err == 0)
			job->err = MS_ECLOSED;
		uffd_list_push(&s->done_head, &s->done_tail, job);
		pthread_mutex_unlock(&s->lock);
		uffd_eventfd_signal(s->wake_efd);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- event thread ---- */

static void uffd_log_summary(struct ms_uffd_session *s)
{
	const struct ms_uffd_metrics *m = &s->metrics;
	double secs = (double)(ms_clock_now_ns() - s->start_ns) / 1e9;
	ms_info(
	    UFFD_MOD,
	    "session %llu (pid %d) ended after %.3f s: faults %llu read / %llu write / %llu wp, "
	    "pages %llu source (%llu batched, %llu prefault) / %llu zero, %llu removed, "
	    "%llu retries, %llu source errors, %llu dropped, error: %s",
	    (unsigned long long)s->id, (int)s->peer_pid, secs,
	    (unsigned long long)atomic_load(&m->faults_read),
	    (unsigned long long)atomic_load(&m->faults_write),
	    (unsigned long long)atomic_load(&m->faults_wp),
	    (unsigned long long)atomic_load(&m->pages_source),
	    (unsigned long long)atomic_load(&m->pages_batched),
	    (unsigned long long)atomic_load(&m->pages_prefault),
	    (unsigned long long)atomic_load(&m->pages_zero),
	    (unsigned long long)atomic_load(&m->pages_removed),
	    (unsigned long long)atomic_load(&m->source_retries),
	    (unsigned long long)atomic_load(&m->source_errors),
	    (unsigned long long)atomic_load(&m->faults_dropped), ms_strerror(s->error));
}

/* Stops and joins the workers, frees every job left, answers prefault waiters. */
static void uffd_session_teardown(struct ms_uffd_session *s)
{
	pthread_mutex_lock(&s->lock);
	s->workers_stop = true;
	pthread_cond_broadcast(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->worker_count; i++)
		pthread_join(s->workers[i], NULL);
	s->worker_count = 0;

	pthread_mutex_lock(&s->lock);
	bool failed = s->state == MS_UFFD_SESSION_FAILED;
	s->state = failed ? MS_UFFD_SESSION_FAILED : MS_UFFD_SESSION_CLOSED;
	int err = failed ? s->error : MS_ECLOSED;
	struct uffd_job *lists[3] = {s->queue_head, s->done_head, s->deferred_head};
	s->queue_head = s->queue_tail = s->done_head = s->done_tail = NULL;
	s->deferred_head = s->deferred_tail = NULL;
	for (int l = 0; l < 3; l++) {
		while (lists[l]) {
			struct uffd_job *job = lists[l];
			lists[l] = job->next;
			if (job->req) {
				if (!job->req->err)
					job->req->err = err;
				job->req->pending--;
			}
			uffd_job_free(job);
		}
	}
	while (s->req_head) {
		struct uffd_prefault_req *req = s->req_head;
		s->req_head = req->next;
		req->err = err;
		req->dispatched = true;
	}
	s->req_tail = NULL;
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);

	/* Wake every thread still waiting in a fault so nothing hangs on our side. */
	for (size_t i = 0; i < s->hs.region_count; i++)
		uffd_wake(s, s->hs.regions[i].base, s->hs.regions[i].size);
	close(s->uffd);
	s->uffd = -1;
	if (s->conn >= 0)
		close(s->conn);
	s->conn = -1;
	if (s->pidfd >= 0)
		close(s->pidfd);
	s->pidfd = -1;
	uffd_log_summary(s);
	if (!failed && s->options.on_session_event)
		s->options.on_session_event(s->options.event_arg, s, MS_UFFD_SESSION_CLOSED, 0);
	uffd_eventfd_signal(s->event_efd);
}

static void *uffd_event_main(void *arg)
{
	struct ms_uffd_session *s = arg;
	size_t fault_cap = 1024;
	int64_t spin_ns = s->options.spin_us < 0    ? 0
			  : s->options.spin_us == 0 ? 50 * 1000
						    : (int64_t)s->options.spin_us * 1000;
	int64_t last_activity = 0;
	struct uffd_msg *faults = malloc(fault_cap * sizeof(*faults));
	if (!faults) {
		uffd_session_fail(s, -ENOMEM, "allocating the event buffer");
		goto teardown;
	}
	for (;;) {
		struct pollfd pfd[4] = {
		    {.fd = s->uffd, .events = POLLIN},
		    {.fd = s->stop_efd, .events = POLLIN},
		    {.fd = s->wake_efd, .events = POLLIN},
		    {.fd = s->pidfd >= 0 ? s->pidfd : s->conn, .events = POLLIN},
		};
		/* After activity, poll without sleeping for spin_ns: a vCPU faulting page after
		 * page is answered before the scheduler parks this thread, which saves a
		 * cross-CPU wakeup per fault (tens of us on small VMs, research/vmm.md §2.2). */
		int timeout = s->deferred_count ? 1 : -1;
		if (timeout < 0 && spin_ns > 0 && ms_clock_now_ns() - last_activity < spin_ns)
			timeout = 0;
		int rc = poll(pfd, 4, timeout);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			uffd_session_fail(s, -errno, "poll");
			break;
		}
		/* An empty poll while spinning gives the CPU to whatever else may run on it,
		 * most likely the vCPU this thread just woke when both share a CPU: spinning
		 * in its way would cost it the rest of the window or a scheduler tick. On a
		 * CPU of its own, sched_yield() returns at once and the spin goes on. */
		if (rc == 0 && timeout == 0) {
			sched_yield();
			continue;
		}
		if (pfd[1].revents)
			break;
		if (pfd[3].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (s->pidfd >= 0 || (pfd[3].revents & (POLLHUP | POLLERR))) {
				ms_debug(UFFD_MOD, "session %llu: peer %d gone",
					 (unsigned long long)s->id, (int)s->peer_pid);
				break;
			}
			/* Bytes after the handshake: Firecracker never sends any. Discard. */
			char junk[256];
			if (recv(s->conn, junk, sizeof(junk), MSG_DONTWAIT) == 0)
				break;
		}
		if (pfd[0].revents & POLLERR) {
			uffd_session_fail(s, -EIO, "uffd poll error");
			break;
		}
		if (pfd[2].revents)
			uffd_eventfd_drain(s->wake_efd);
		/* 1. Events first: every REMOVE read before any install below. */
		bool more = true;
		size_t nfaults = 0;
		int64_t now = ms_clock_now_ns();
		if (pfd[0].revents & POLLIN)
			nfaults = uffd_read_events(s, faults, fault_cap, &more);
		/* 2. Retries, completed fetches, prefaults, then new faults. */
		uffd_process_deferred(s);
		uffd_process_completions(s);
		uffd_process_prefaults(s);
		for (size_t i = 0; i < nfaults; i++)
			uffd_handle_fault(s, &faults[i], now);
		if (nfaults)
			last_activity = ms_clock_now_ns();
	}
	free(faults);
teardown:
	uffd_session_teardown(s);
	return NULL;
}

/* ---- lifecycle and API ---- */

static void uffd_session_free(struct ms_uffd_session *s)
{
	ms_uffd_tracker_fini(&s->tracker);
	ms_uffd_handshake_fini(&s->hs);
	if (s->memfd >= 0)
		close(s->memfd);
	if (s->uffd >= 0)
		close(s->uffd);
	if (s->conn >= 0)
		close(s->conn);
	if (s->pidfd >= 0)
		close(s->pidfd);
	if (s->stop_efd >= 0)
		close(s->stop_efd);
	if (s->wake_efd >= 0)
		close(s->wake_efd);
	if (s->event_efd >= 0)
		close(s->event_efd);
	pthread_cond_destroy(&s->work_cond);
	pthread_cond_destroy(&s->state_cond);
	pthread_mutex_destroy(&s->lock);
	free(s->workers);
	free(s->zero_page);
	free(s->scratch);
	free(s);
}

int ms_uffd_session_start(const struct ms_uffd_session_config *cfg, struct ms_uffd_handshake *hs,
			  int uffd, int memfd, int conn, struct ms_uffd_session **out)
{
	int err = -ENOMEM;
	struct ms_uffd_session *s = calloc(1, sizeof(*s));
	if (!s)
		goto fail_fds;
	atomic_init(&s->refs, 1);
	s->id = cfg->id;
	s->ops = cfg->ops;
	s->ctx = cfg->ctx;
	s->options = *cfg->options;
	s->hs = *hs;
	memset(hs, 0, sizeof(*hs));
	s->uffd = uffd;
	s->memfd = memfd;
	s->conn = conn;
	s->pidfd = -1;
	s->stop_efd = s->wake_efd = s->event_efd = -1;
	uffd = memfd = conn = -1; /* owned by s from here */
	s->image_size = s->ops->size(s->ctx);
	s->page_size = s->hs.page_size;
	uint64_t batch = s->options.batch_bytes;
	s->block_pages = batch > s->page_size ? batch / s->page_size : 1;
	if (s->block_pages > UFFD_MAX_BLOCK_PAGES)
		s->block_pages = UFFD_MAX_BLOCK_PAGES;
	atomic_init(&s->wp_state, -1);
	s->start_ns = ms_clock_now_ns();

	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work_cond, &attr);
	pthread_cond_init(&s->state_cond, &attr);
	pthread_condattr_destroy(&attr);

	err = ms_uffd_tracker_init(&s->tracker, s->image_size, s->page_size);
	if (err)
		goto fail_session;
	err = -ENOMEM;
	s->zero_page = calloc(1, s->page_size);
	s->scratch = malloc(s->block_pages * s->page_size);
	unsigned nworkers = s->options.workers ? s->options.workers : 4;
	s->workers = calloc(nworkers, sizeof(*s->workers));
	if (!s->zero_page || !s->scratch || !s->workers)
		goto fail_session;
	s->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->wake_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->event_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_efd < 0 || s->wake_efd < 0 || s->event_efd < 0) {
		err = -errno;
		goto fail_session;
	}
	/* poll() on a blocking uffd reports POLLERR: the kernel requires O_NONBLOCK. */
	int fl = fcntl(s->uffd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		(void)fcntl(s->uffd, F_SETFL, fl | O_NONBLOCK);
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);
	if (getsockopt(s->conn, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0) {
		s->peer_pid = cred.pid;
		long fd = syscall(SYS_pidfd_open, cred.pid, 0);
		if (fd >= 0)
			s->pidfd = (int)fd;
	}
	for (unsigned i = 0; i < nworkers; i++) {
		err = -pthread_create(&s->workers[i], NULL, uffd_worker_main, s);
		if (err)
			goto fail_workers;
		s->worker_count++;
	}
	err = -pthread_create(&s->event_thread, NULL, uffd_event_main, s);
	if (err)
		goto fail_workers;
	ms_info(UFFD_MOD,
		"session %llu: serving pid %d, %zu region(s), page size %llu, %u workers, "
		"block %llu pages%s",
		(unsigned long long)s->id, (int)s->peer_pid, s->hs.region_count,
		(unsigned long long)s->page_size, nworkers, (unsigned long long)s->block_pages,
		s->memfd >= 0 ? ", memfd" : "");
	*out = s;
	return 0;

fail_workers:
	pthread_mutex_lock(&s->lock);
	s->workers_stop = true;
	pthread_cond_broadcast(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->worker_count; i++)
		pthread_join(s->workers[i], NULL);
fail_session:
	uffd_session_free(s);
	return err;
fail_fds:
	ms_uffd_handshake_fini(hs);
	close(uffd);
	if (memfd >= 0)
		close(memfd);
	close(conn);
	return err;
}

struct ms_uffd_session *ms_uffd_session_ref(struct ms_uffd_session *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void ms_uffd_session_stop(struct ms_uffd_session *s)
{
	pthread_mutex_lock(&s->lock);
	if (s->joined || pthread_equal(s->event_thread, pthread_self())) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	s->joined = true;
	s->stop_requested = true;
	pthread_mutex_unlock(&s->lock);
	uffd_eventfd_signal(s->stop_efd);
	pthread_join(s->event_thread, NULL);
}

void ms_uffd_session_unref(struct ms_uffd_session *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	ms_uffd_session_stop(s);
	uffd_session_free(s);
}

enum ms_uffd_session_state ms_uffd_session_state(struct ms_uffd_session *s)
{
	pthread_mutex_lock(&s->lock);
	enum ms_uffd_session_state st = s->state;
	pthread_mutex_unlock(&s->lock);
	return st;
}

int ms_uffd_session_error(struct ms_uffd_session *s)
{
	pthread_mutex_lock(&s->lock);
	int err = s->error;
	pthread_mutex_unlock(&s->lock);
	return err;
}

int ms_uffd_session_event_fd(struct ms_uffd_session *s)
{
	return s->event_efd;
}

int ms_uffd_session_wait(struct ms_uffd_session *s, int64_t timeout_ns)
{
	struct timespec deadline = ms_clock_deadline(timeout_ns);
	int err = 0;
	pthread_mutex_lock(&s->lock);
	while (s->state == MS_UFFD_SESSION_SERVING && err == 0)
		err = -pthread_cond_timedwait(&s->state_cond, &s->lock, &deadline);
	if (s->state != MS_UFFD_SESSION_SERVING)
		err = 0;
	pthread_mutex_unlock(&s->lock);
	return err;
}

int ms_uffd_session_prefault(struct ms_uffd_session *s, const uint64_t *offsets, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (offsets[i] >= s->image_size ||
		    !uffd_region_by_off(s, offsets[i] & ~(s->page_size - 1)))
			return -EINVAL;
	}
	if (count == 0)
		return 0;
	struct uffd_prefault_req req = {.offsets = offsets, .count = count};
	pthread_mutex_lock(&s->lock);
	if (s->state != MS_UFFD_SESSION_SERVING || s->workers_stop) {
		int err = s->error ? s->error : MS_ECLOSED;
		pthread_mutex_unlock(&s->lock);
		return err;
	}
	if (s->req_tail)
		s->req_tail->next = &req;
	else
		s->req_head = &req;
	s->req_tail = &req;
	pthread_mutex_unlock(&s->lock);
	uffd_eventfd_signal(s->wake_efd);
	pthread_mutex_lock(&s->lock);
	while (!req.dispatched || req.pending > 0)
		pthread_cond_wait(&s->state_cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return req.err;
}

int ms_uffd_session_export(struct ms_uffd_session *s, struct ms_pageset **dirty,
			   struct ms_pageset **empty)
{
	return ms_uffd_tracker_export(&s->tracker, dirty, empty);
}

const struct ms_uffd_metrics *ms_uffd_session_metrics(struct ms_uffd_session *s)
{
	return &s->metrics;
}

int ms_uffd_session_memfd(struct ms_uffd_session *s)
{
	return s->memfd;
}

pid_t ms_uffd_session_peer_pid(struct ms_uffd_session *s)
{
	return s->peer_pid;
}

uint64_t ms_uffd_session_page_size(struct ms_uffd_session *s)
{
	return s->page_size;
}

bool ms_uffd_session_has_wp(struct ms_uffd_session *s)
{
	return atomic_load(&s->wp_state) == 1;
}
