/*
 * install.c - the restore session's installs: a planned job becomes ioctls.
 *
 * Job: every uffd ioctl of a session (UFFDIO_COPY, ZEROPAGE, WRITEPROTECT,
 * WAKE) is issued here, under the session's install lock (on the event thread,
 * or a prefetch's installer for its runs: uffd_install), and the tracker is
 * written here. session.c says why installs hold that lock (a REMOVE read
 * before every install).
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
 * Source bytes: a job's pages are copied from its buffer (a read filled it) or,
 * when the page source handed out a view of them (ops->slice, plan.c), straight
 * from that view: no copy into a buffer first. The view's hold is released only
 * after the job's last install ioctl returned (a deferred job keeps it).
 *
 * Ioctl results: EEXIST -> wake; EAGAIN or a short copy -> the job is deferred
 * and retried after the next event read; ESRCH -> dropped (process gone);
 * ENOENT -> dropped (range unmapped); any other error of a copy from a slice
 * (-EFAULT: a view the kernel could not read, e.g. a truncated file) -> the
 * slice is dropped and the job goes to the workers to be read, whose copy is
 * fault-safe; anything else fails the session.
 *
 * Invariants:
 *  1. The tracker is re-read for every page at install time, not at plan
 *     time: a REMOVE read since the plan turns a source install into a skip
 *     (or, for the faulting page, a zero install). A removed page is never
 *     installed from source data.
 *  2. The tracker states the new state BEFORE the ioctl wakes the faulting
 *     thread (so export sees the guest's access), and pages the ioctl did not
 *     install are set back right after.
 *  3. Every page of the mask that is skipped may have a fault waiting on it
 *     (dropped as in flight): the job ends with a wake of its block then.
 */
#include "uffd/session_int.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- fault latency (by where the page came from) ---- */

const uint64_t ms_uffd_latency_bounds_us[MS_UFFD_LATENCY_BUCKETS - 1] = {
    10, 25, 50, 100, 250, 1000, 10000, 100000, 1000000};

void uffd_latency_record(struct ms_uffd_session *s, int64_t t_event, unsigned from)
{
	if (!t_event)
		return;
	/* one clock read per fault; relaxed atomics of this session, summed at scrape */
	int64_t ns = ms_clock_now_ns() - t_event;
	uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
	unsigned b = 0;
	while (b < MS_UFFD_LATENCY_BUCKETS - 1 && us > ms_uffd_latency_bounds_us[b])
		b++;
	atomic_fetch_add_explicit(&s->metrics.latency[b], 1, memory_order_relaxed);
	if (from < MS_PAGE_FROMS) {
		atomic_fetch_add_explicit(&s->metrics.fault_latency[from][b], 1,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&s->metrics.fault_ns[from], ns > 0 ? (uint64_t)ns : 0,
					  memory_order_relaxed);
	}
}

/* ---- ioctls ---- */

/* An install ioctl's result: bytes installed (> 0, possibly short) or a negative errno
 * for the first page. done is the kernel's copy/zeropage field. */
static int64_t uffd_ioctl_result(int rc, int64_t done, uint64_t len)
{
	if (rc == 0)
		return (int64_t)len;
	int e = errno;
	if (done > 0)
		return done;
	return done < 0 ? done : -e;
}

static int64_t uffd_copy(struct ms_uffd_session *s, uint64_t addr, const void *src, uint64_t len,
			 uint64_t mode)
{
	struct uffdio_copy copy = {
	    .dst = addr, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = mode};
	int rc = ioctl(s->uffd, UFFDIO_COPY, &copy);
	return uffd_ioctl_result(rc, copy.copy, len);
}

static int64_t uffd_zeropage(struct ms_uffd_session *s, uint64_t addr, uint64_t len)
{
	struct uffdio_zeropage zp = {.range = {.start = addr, .len = len}, .mode = 0};
	int rc = ioctl(s->uffd, UFFDIO_ZEROPAGE, &zp);
	return uffd_ioctl_result(rc, zp.zeropage, len);
}

void uffd_wake(struct ms_uffd_session *s, uint64_t addr, uint64_t len)
{
	struct uffdio_range range = {.start = addr, .len = len};
	if (ioctl(s->uffd, UFFDIO_WAKE, &range) != 0 && errno != ENOENT && errno != ESRCH)
		ms_debug(UFFD_MOD, "session %llu: UFFDIO_WAKE: %s", (unsigned long long)s->id,
			 strerror(errno));
}

/* ---- one job ---- */

enum uffd_action { UFFD_SKIP, UFFD_SRC, UFFD_ZERO };

/* Whether page k of job installs from the job's slice. */
static bool uffd_in_slice(const struct uffd_job *job, uint64_t k)
{
	return job->slice && k >= job->slice_first && k - job->slice_first < job->slice_pages;
}

/* Whether the job has source bytes for page k (its slice or its buffer). */
static bool uffd_has_data(const struct uffd_job *job, uint64_t k)
{
	return job->buf || uffd_in_slice(job, k);
}

/* Where page k's source bytes are. */
static const uint8_t *uffd_data(const struct ms_uffd_session *s, const struct uffd_job *job,
				uint64_t k)
{
	if (uffd_in_slice(job, k))
		return job->slice + (k - job->slice_first) * s->page_size;
	return job->buf + k * s->page_size;
}

/* What to do with page k of job now, by the tracker (invariant 1). */
static enum uffd_action uffd_page_action(struct ms_uffd_session *s, const struct uffd_job *job,
					 uint64_t k, bool is_fault)
{
	enum ms_uffd_page_state st =
	    MS_UFFD_PAGE_STATE(ms_uffd_tracker_get(&s->tracker, job->block_off / s->page_size + k));
	bool data = uffd_has_data(job, k);
	if (data && uffd_mask_test(job->mask, k)) {
		if (st == MS_UFFD_PAGE_REMOVED || st == MS_UFFD_PAGE_ZERO)
			return is_fault ? UFFD_ZERO : UFFD_SKIP;
		return st == MS_UFFD_PAGE_NOT_PRESENT || is_fault ? UFFD_SRC : UFFD_SKIP;
	}
	if (!is_fault)
		return UFFD_SKIP;
	return (st == MS_UFFD_PAGE_CLEAN || st == MS_UFFD_PAGE_DIRTY) && data ? UFFD_SRC
									      : UFFD_ZERO;
}

/* From page i, the longest run of pages with one action and one write mode, from one
 * place (slice or buffer); *action and *write say which. Zero installs and skips go page
 * by page (one zero buffer page). */
static uint64_t uffd_next_run(struct ms_uffd_session *s, const struct uffd_job *job, uint64_t i,
			      uint64_t fault_idx, enum uffd_action *action, bool *write)
{
	uint64_t run = 0;
	for (uint64_t k = i; k < job->npages; k++) {
		enum uffd_action a = uffd_page_action(s, job, k, k == fault_idx);
		bool w = k == fault_idx && job->write;
		if (k == i) {
			*action = a;
			*write = w;
		} else if (a != *action || w != *write || a == UFFD_ZERO ||
			   uffd_in_slice(job, k) != uffd_in_slice(job, i)) {
			break;
		}
		run++;
		if (a == UFFD_SKIP)
			break;
	}
	return run;
}

/* Installs run pages from page i with one ioctl, the tracker set first (invariant 2).
 * Returns the ioctl's result (uffd_ioctl_result). */
static int64_t uffd_install_run(struct ms_uffd_session *s, struct uffd_job *job, uint64_t i,
				uint64_t run, enum uffd_action action, bool write, uint64_t mode,
				uint64_t fault_idx)
{
	const uint64_t ps = s->page_size;
	const uint64_t first_page = job->block_off / ps + i;
	enum ms_uffd_page_state to =
	    write ? MS_UFFD_PAGE_DIRTY
		  : (action == UFFD_SRC ? MS_UFFD_PAGE_CLEAN : MS_UFFD_PAGE_ZERO);
	/* The first-touch trace too, before the wake (a pause right after the guest's access
	 * must find it); a page whose copy fails is still one the guest asked for. Only the
	 * faulting page and prefetched pages: a batched neighbour was not touched. */
	enum ms_uffd_access access = job->req ? MS_UFFD_ACCESS_PREFETCH
				     : write  ? MS_UFFD_ACCESS_WRITE
					      : MS_UFFD_ACCESS_READ;
	uint8_t old[UFFD_MAX_BLOCK_PAGES];
	for (uint64_t k = 0; k < run; k++) {
		old[k] = ms_uffd_tracker_get(&s->tracker, first_page + k);
		ms_uffd_tracker_install(&s->tracker, first_page + k, to);
		if (job->req || i + k == fault_idx)
			ms_uffd_recorder_add(&s->recorder, first_page + k, access);
	}
	uint64_t addr = job->block_addr + i * ps, len = run * ps;
	/* a sandbox's sync tracker: a writable install is a write, recorded around the ioctl */
	bool wp_sync = write && s->wpset;
	if (wp_sync)
		ms_wpset_begin_install(s->wpset, addr, len);
	int64_t n;
	if (action == UFFD_SRC)
		n = uffd_copy(s, addr, uffd_data(s, job, i), len, mode);
	else if (!write && atomic_load(&s->wp_state) == 0 && ps == MS_UFFD_PAGE_4K)
		n = uffd_zeropage(s, addr, len);
	else
		n = uffd_copy(s, addr, s->zero_page, len, mode);
	if (wp_sync)
		ms_wpset_end_install(s->wpset);
	uint64_t kept = n > 0 ? (uint64_t)n / ps : 0;
	for (uint64_t k = kept; k < run; k++)
		ms_uffd_tracker_set(&s->tracker, first_page + k, 1, MS_UFFD_PAGE_STATE(old[k]));
	return n;
}

/* Counts the pages a run installed. */
static void uffd_count_installed(struct ms_uffd_session *s, const struct uffd_job *job, uint64_t i,
				 uint64_t done_pages, enum uffd_action action, uint64_t fault_idx,
				 bool *fault_done)
{
	for (uint64_t k = i; k < i + done_pages; k++) {
		if (k == fault_idx) {
			*fault_done = true;
			uffd_latency_record(s, job->t_event, job->from);
		} else if (action == UFFD_SRC && job->fault_addr != UFFD_NO_FAULT) {
			atomic_fetch_add(&s->metrics.pages_batched, 1);
		}
	}
	atomic_fetch_add(action == UFFD_SRC ? &s->metrics.pages_source : &s->metrics.pages_zero,
			 done_pages);
	if (action == UFFD_SRC && uffd_in_slice(job, i))
		atomic_fetch_add(&s->metrics.pages_sliced, done_pages);
	if (job->req && job->req->data) {
		atomic_fetch_add(&s->metrics.pages_prefetched, done_pages);
		job->req->installed += done_pages;
	} else if (job->req) {
		atomic_fetch_add(&s->metrics.pages_prefault, done_pages);
	}
}

/*
 * Installs what is left of job, re-reading the tracker for every page (a REMOVE
 * may have arrived since the job was planned). Returns DONE (all work done,
 * waiters woken), DEFER (keep the job, retry later), DROP, FAILED, or UNSLICE
 * (a copy from the job's slice failed: read the job instead; nothing failed yet).
 */
enum uffd_install_result uffd_install(struct ms_uffd_session *s, struct uffd_job *job)
{
	const uint64_t ps = s->page_size;
	uint64_t fault_idx = job->fault_addr == UFFD_NO_FAULT
				 ? UINT64_MAX
				 : (job->fault_addr - job->block_addr) / ps;
	bool need_wake = false, fault_done = false;
	uint64_t i = 0;
	while (i < job->npages) {
		enum uffd_action action = UFFD_SKIP;
		bool write = false;
		uint64_t run = uffd_next_run(s, job, i, fault_idx, &action, &write);
		if (action == UFFD_SKIP) {
			if (job->buf && uffd_mask_test(job->mask, i))
				need_wake = true; /* invariant 3 */
			i += run;
			continue;
		}
		int wp = atomic_load(&s->wp_state);
		uint64_t mode = (!write && wp != 0) ? UFFDIO_COPY_MODE_WP : 0;
		int64_t n = uffd_install_run(s, job, i, run, action, write, mode, fault_idx);
		if (n == -EINVAL && (mode & UFFDIO_COPY_MODE_WP) && wp < 0) {
			/* The registration has no WP: install plain from now on. */
			atomic_store(&s->wp_state, 0);
			ms_info(UFFD_MOD,
				"session %llu: registration without WP; dirty tracking "
				"records write faults only",
				(unsigned long long)s->id);
			continue;
		}
		if (n > 0) {
			if ((mode & UFFDIO_COPY_MODE_WP) && wp < 0)
				atomic_store(&s->wp_state, 1);
			uint64_t done_pages = (uint64_t)n / ps;
			uffd_count_installed(s, job, i, done_pages, action, fault_idx, &fault_done);
			i += done_pages;
			if ((uint64_t)n < run * ps) {
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
				uffd_latency_record(s, job->t_event, job->from);
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
				(unsigned long long)s->id,
				(unsigned long long)(job->block_addr + i * ps),
				(unsigned long long)(run * ps));
			return UFFD_DROP;
		default:
			if (action == UFFD_SRC && uffd_in_slice(job, i)) {
				ms_debug(UFFD_MOD,
					 "session %llu: UFFDIO_COPY from a slice at %llu: %s; "
					 "reading instead",
					 (unsigned long long)s->id,
					 (unsigned long long)(job->block_off + i * ps),
					 strerror((int)-n));
				return UFFD_UNSLICE;
			}
			uffd_session_fail(s, (int)n, "UFFDIO_COPY");
			return UFFD_FAILED;
		}
	}
	if (need_wake || (fault_idx != UINT64_MAX && !fault_done))
		uffd_wake(s, job->block_addr, job->npages * ps);
	return UFFD_DONE;
}

void uffd_job_unslice(struct ms_uffd_session *s, struct uffd_job *job)
{
	if (!job->slice)
		return;
	if (s->ops->unhold)
		s->ops->unhold(s->ctx, job->slice_hold);
	job->slice = NULL;
	job->slice_hold = NULL;
	job->slice_first = job->slice_pages = 0;
}

void uffd_job_free(struct ms_uffd_session *s, struct uffd_job *job)
{
	uffd_job_unslice(s, job);
	if (job->buf_owned)
		free(job->buf);
	free(job);
}

void uffd_job_release_pages(struct ms_uffd_session *s, struct uffd_job *job)
{
	uint64_t first_page = job->block_off / s->page_size;
	for (uint64_t k = 0; k < job->npages; k++)
		if (uffd_mask_test(job->mask, k))
			ms_uffd_tracker_set_inflight(&s->tracker, first_page + k, false);
}

static void uffd_defer(struct ms_uffd_session *s, struct uffd_job *job)
{
	uffd_list_push(&s->deferred_head, &s->deferred_tail, job);
	s->deferred_count++;
}

/* A deferred job outlives the event that planned it: a stack job moves to the heap (its
 * buffer is copied when it has one; its slice's hold moves with it). */
static struct uffd_job *uffd_job_to_heap(struct ms_uffd_session *s, struct uffd_job *job)
{
	struct uffd_job *copy = malloc(sizeof(*copy));
	uint8_t *buf = job->buf ? malloc(job->npages * s->page_size) : NULL;
	if (!copy || (job->buf && !buf)) {
		free(copy);
		free(buf);
		return NULL;
	}
	*copy = *job;
	if (buf)
		memcpy(buf, job->buf, job->npages * s->page_size);
	copy->buf = buf;
	copy->buf_owned = buf != NULL;
	return copy;
}

/* A job whose install from its slice failed: drop the slice and let the workers read it
 * (its pages stay in flight). Whatever the slice installed before is in the tracker, and
 * the next install skips it. */
static void uffd_job_reread(struct ms_uffd_session *s, struct uffd_job *job, bool on_stack)
{
	atomic_fetch_add(&s->metrics.slice_fallbacks, 1);
	uffd_job_unslice(s, job);
	job->no_slice = true;
	struct uffd_job *heap = on_stack ? malloc(sizeof(*heap)) : job;
	uint8_t *buf = job->buf_owned ? job->buf : malloc(job->npages * s->page_size);
	if (!heap || !buf) {
		if (on_stack)
			free(heap);
		if (buf != job->buf)
			free(buf);
		uffd_job_release_pages(s, job);
		uffd_req_job_done(s, job->req, -ENOMEM);
		uffd_session_fail(s, -ENOMEM, "allocating a fault buffer");
		if (!on_stack)
			uffd_job_free(s, job);
		return;
	}
	if (on_stack)
		*heap = *job;
	heap->buf = buf;
	heap->buf_owned = true;
	uffd_queue_to_workers(s, heap);
}

void uffd_job_finish(struct ms_uffd_session *s, struct uffd_job *job, bool on_stack)
{
	if (job->kind == UFFD_JOB_WP) {
		uffd_wp_resolve(s, job);
		return;
	}
	enum uffd_install_result r = uffd_install(s, job);
	if (r == UFFD_UNSLICE) {
		uffd_job_reread(s, job, on_stack);
		return;
	}
	if (r == UFFD_DEFER) {
		struct uffd_job *kept = on_stack ? uffd_job_to_heap(s, job) : job;
		if (!kept) {
			uffd_job_unslice(s, job);
			uffd_job_release_pages(s, job);
			uffd_req_job_done(s, job->req, -ENOMEM);
			uffd_session_fail(s, -ENOMEM, "deferring a fault");
			return;
		}
		uffd_defer(s, kept);
		return;
	}
	uffd_job_unslice(s, job); /* every install ioctl of the job has returned */
	uffd_job_release_pages(s, job);
	uffd_req_job_done(s, job->req, r == UFFD_FAILED ? s->error : 0);
	if (!on_stack)
		uffd_job_free(s, job);
}

void uffd_wp_resolve(struct ms_uffd_session *s, struct uffd_job *job)
{
	/* DIRTY before the unprotect wakes the writer: by the time the guest's write is done,
	 * the tracker has it. (Even when the tracker says REMOVED: a zap racing the write
	 * keeps the page dirty, which over-approximates safely.) */
	ms_uffd_tracker_install(&s->tracker, job->block_off / s->page_size, MS_UFFD_PAGE_DIRTY);
	struct uffdio_writeprotect wp = {.range = {.start = job->fault_addr, .len = s->page_size},
					 .mode = 0};
	/* a sandbox's sync tracker: the sandbox's written set records and unprotects */
	int rc = s->wpset ? ms_wpset_resolve(s->wpset, s->uffd, job->fault_addr, s->page_size)
		 : ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0
								 : -errno;
	if (rc == -EAGAIN) {
		atomic_fetch_add(&s->metrics.faults_deferred, 1);
		uffd_defer(s, job);
		return;
	}
	if (rc == 0 || rc == -ENOENT) {
		uffd_latency_record(s, job->t_event, MS_PAGE_FROMS); /* no source served it */
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

/* ---- jobs back from the workers, and deferred ones ---- */

void uffd_process_completions(struct ms_uffd_session *s)
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
			uffd_session_fail_at(s, job->err, job->block_off,
					     job->err == MS_ECHECKSUM || job->err == MS_ECORRUPT
						 ? "source data is damaged"
						 : "source read failed after retries");
			uffd_req_job_done(s, job->req, job->err);
			uffd_job_free(s, job);
			continue;
		}
		if (!uffd_serving(s)) {
			uffd_job_release_pages(s, job);
			uffd_req_job_done(s, job->req, s->error);
			uffd_job_free(s, job);
			continue;
		}
		uffd_job_finish(s, job, false);
	}
}

void uffd_process_deferred(struct ms_uffd_session *s)
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
			uffd_job_free(s, job);
			continue;
		}
		uffd_job_finish(s, job, false);
	}
}
