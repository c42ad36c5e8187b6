/*
 * plan.c - the restore session's planning: a fault (or a prefault request)
 * becomes a job.
 *
 * Job (also the entry points ms_uffd_session_prefault / _install, at the end:
 * a prefault queues a request this file plans on the event thread; an install
 * of fetched bytes runs on its caller's thread under the install lock): for a fault at a
 * page, take the aligned batch block around it (the
 * page server's batch_bytes), ask the page source ONCE what every page of the
 * block is (classify: one header snapshot for the layered file), and choose
 * the pages to fill: the faulting page, and every neighbour that is not yet
 * present, not in flight, holds data and is as near as the faulting page
 * (a LOCAL fault takes only LOCAL neighbours, so it stays inline). The job is
 * then read inline on the event thread when every chosen page is LOCAL, or
 * handed to a fetch worker otherwise (the workers' loop is at the end of this
 * file: 4 attempts, 50 ms doubling to 500 ms); zero pages need no read at all.
 * A LOCAL job whose pages (first to last chosen) the source can hand out as
 * one view (ops->slice: one header run, present) is not read at all: the
 * kernel's UFFDIO_COPY copies straight from the view (install.c); a view the
 * kernel cannot copy from sends the job to the workers to be read. Worker jobs
 * always read into their buffer: the read is what fetches, and once it copied
 * the bytes a slice would save nothing (slicing before the read: no gain above
 * the noise in a 3-run A/B of bench_cold_s3).
 *
 * Invariants:
 *  1. A job's pages are marked INFLIGHT from dispatch until the job ends
 *     (install.c releases them); a fault on an INFLIGHT page is dropped,
 *     because the job's install (or its final wake) wakes it.
 *  2. Planning never does I/O and never blocks: classify and slice answer
 *     without I/O, and only a LOCAL job is read on the event thread.
 *  3. A plan reads the tracker but does not trust it at install time:
 *     install.c re-reads it for every page (a REMOVE may come in between).
 */
#include "uffd/session_int.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UFFD_READ_ATTEMPTS    4
#define UFFD_RETRY_INITIAL_NS (50 * MS_NSEC_PER_MSEC)
#define UFFD_RETRY_MAX_NS     (500 * MS_NSEC_PER_MSEC)

/*
 * kinds[] of the npages pages from off; all REMOTE when the source gives no hint. from
 * (may be NULL): where page fault_k is (enum ms_page_from).
 */
static void uffd_classify(struct ms_uffd_session *s, uint64_t off, uint64_t npages, uint8_t *kinds,
			  uint64_t fault_k, uint8_t *from)
{
	if (s->ops->classify)
		s->ops->classify(s->ctx, off, s->page_size, (size_t)npages, kinds);
	else
		memset(kinds, MS_PAGE_REMOTE, (size_t)npages);
	if (from) /* the fault page's origin; the rest of the planner wants the kinds only */
		*from = (uint8_t)MS_PAGE_FROM(kinds[fault_k]);
	for (uint64_t k = 0; k < npages; k++)
		kinds[k] = (uint8_t)MS_PAGE_KIND(kinds[k]);
}

bool uffd_job_slice(struct ms_uffd_session *s, struct uffd_job *job)
{
	if (!s->ops->slice || job->no_slice)
		return false;
	uint64_t first = UINT64_MAX, last = 0;
	for (uint64_t w = 0; w < (job->npages + 63) / 64; w++) {
		if (!job->mask[w])
			continue;
		if (first == UINT64_MAX)
			first = w * 64 + (uint64_t)__builtin_ctzll(job->mask[w]);
		last = w * 64 + 63 - (uint64_t)__builtin_clzll(job->mask[w]);
	}
	if (first == UINT64_MAX)
		return false;
	const uint64_t ps = s->page_size;
	const void *ptr = NULL;
	void *hold = NULL;
	if (s->ops->slice(s->ctx, job->block_off + first * ps, (size_t)((last + 1 - first) * ps),
			  &ptr, &hold))
		return false;
	job->slice = ptr;
	job->slice_hold = hold;
	job->slice_first = first;
	job->slice_pages = last + 1 - first;
	return true;
}

int uffd_job_read(struct ms_uffd_session *s, struct uffd_job *job)
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

/* An empty fill job for the aligned batch block around addr (page aligned) in region r. */
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

/* Marks the planned pages INFLIGHT and either reads inline + installs (local: every
 * planned page is LOCAL), or queues to workers. */
static void uffd_job_dispatch(struct ms_uffd_session *s, struct uffd_job *stack_job, bool local)
{
	const uint64_t ps = s->page_size;
	uint64_t first_page = stack_job->block_off / ps;
	for (uint64_t k = 0; k < stack_job->npages; k++)
		if (uffd_mask_test(stack_job->mask, k))
			ms_uffd_tracker_set_inflight(&s->tracker, first_page + k, true);
	if (local) {
		/* Straight from the source's view when it has one: no copy into scratch. */
		if (uffd_job_slice(s, stack_job)) {
			if (stack_job->fault_addr != UFFD_NO_FAULT)
				atomic_fetch_add(&s->metrics.faults_inline, 1);
			uffd_job_finish(s, stack_job, true);
			return;
		}
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
	uffd_queue_to_workers(s, job);
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
	job.from = MS_PAGE_FROM_ZERO;
	job.req = req;
	uffd_job_finish(s, &job, true);
}

/* A WP fault: resolved at once (no read). */
static void uffd_handle_wp(struct ms_uffd_session *s, const struct ms_uffd_region *r, uint64_t addr,
			   int64_t t_event)
{
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
	job->block_off = r->offset + (addr - r->base);
	job->npages = 1;
	job->t_event = t_event;
	uffd_wp_resolve(s, job);
}

void uffd_handle_fault(struct ms_uffd_session *s, const struct uffd_msg *msg, int64_t t_event)
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
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		uffd_handle_wp(s, r, addr, t_event);
		return;
	}
	atomic_fetch_add(write ? &s->metrics.faults_write : &s->metrics.faults_read, 1);
	uint64_t page = (r->offset + (addr - r->base)) / ps;
	uint8_t byte = ms_uffd_tracker_get(&s->tracker, page);
	if (byte & MS_UFFD_PAGE_INFLIGHT)
		return; /* invariant 1 */
	enum ms_uffd_page_state st = MS_UFFD_PAGE_STATE(byte);
	if (st == MS_UFFD_PAGE_REMOVED || st == MS_UFFD_PAGE_ZERO) {
		uffd_zero_now(s, r, addr, write, t_event, NULL);
		return;
	}
	struct uffd_job job;
	uffd_plan_block(s, r, addr, &job);
	job.fault_addr = addr;
	job.write = write;
	job.t_event = t_event;
	uint8_t kinds[UFFD_MAX_BLOCK_PAGES];
	uint64_t fault_k = (addr - job.block_addr) / ps;
	uffd_classify(s, job.block_off, job.npages, kinds, fault_k, &job.from);
	if (kinds[fault_k] == MS_PAGE_ZERO) {
		uffd_zero_now(s, r, addr, write, t_event, NULL);
		return;
	}
	bool local = kinds[fault_k] == MS_PAGE_LOCAL;
	uint64_t first_page = job.block_off / ps;
	for (uint64_t k = 0; k < job.npages; k++) {
		bool want = k == fault_k;
		if (!want && ms_uffd_tracker_get(&s->tracker, first_page + k) ==
				 MS_UFFD_PAGE_NOT_PRESENT) /* not installed, removed or in flight */
			want = local ? kinds[k] == MS_PAGE_LOCAL
				     : kinds[k] == MS_PAGE_LOCAL || kinds[k] == MS_PAGE_REMOTE;
		if (want)
			uffd_mask_set(job.mask, k);
	}
	uffd_job_dispatch(s, &job, local);
}

/* One prefault job was dispatched for req. */
static void uffd_req_add_job(struct ms_uffd_session *s, struct uffd_prefault_req *req)
{
	pthread_mutex_lock(&s->lock);
	req->pending++;
	pthread_mutex_unlock(&s->lock);
}

/* Plans one request: one job per batch block its offsets touch (in request order). */
static void uffd_plan_prefault(struct ms_uffd_session *s, struct uffd_prefault_req *req)
{
	const uint64_t ps = s->page_size;
	struct uffd_job job;
	uint8_t kinds[UFFD_MAX_BLOCK_PAGES];
	bool open = false, local = true;
	for (size_t i = 0; i < req->count; i++) {
		uint64_t off = req->offsets[i] & ~(ps - 1);
		const struct ms_uffd_region *r = uffd_region_by_off(s, off);
		uint64_t addr = r->base + (off - r->offset);
		if (open && (r != job.region || addr < job.block_addr ||
			     addr >= job.block_addr + job.npages * ps)) {
			uffd_req_add_job(s, req);
			uffd_job_dispatch(s, &job, local);
			open = false;
		}
		if (ms_uffd_tracker_get(&s->tracker, off / ps) != MS_UFFD_PAGE_NOT_PRESENT)
			continue;
		if (!open) {
			uffd_plan_block(s, r, addr, &job);
			job.req = req;
			uffd_classify(s, job.block_off, job.npages, kinds, 0, NULL);
			open = true;
			local = true;
		}
		uint64_t k = (addr - job.block_addr) / ps;
		if (kinds[k] == MS_PAGE_ZERO) {
			uffd_req_add_job(s, req);
			uffd_zero_now(s, r, addr, false, 0, req);
			continue;
		}
		local = local && kinds[k] == MS_PAGE_LOCAL;
		uffd_mask_set(job.mask, k);
	}
	if (open) {
		uffd_req_add_job(s, req);
		uffd_job_dispatch(s, &job, local);
	}
}

void uffd_process_prefaults(struct ms_uffd_session *s)
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
		if (serving)
			uffd_plan_prefault(s, req);
		pthread_mutex_lock(&s->lock);
		if (!serving && !req->err)
			req->err = s->error ? s->error : MS_ECLOSED;
		req->dispatched = true;
		pthread_cond_broadcast(&s->state_cond);
		pthread_mutex_unlock(&s->lock);
	}
}

/* ---- workers: the fetch of a job that is not LOCAL ---- */

void *uffd_worker_main(void *arg)
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
			/* damaged data was already fetched twice by the store that checked it
			 * (storage/verified.h, the frame decode): another read finds the same
			 * bytes and counts the same mismatch again */
			if (job->err == MS_ECHECKSUM || job->err == MS_ECORRUPT)
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

/* ---- the public entry points of prefault and prefetch requests ---- */

/* Queues reqs[0, n) to the event thread at once and waits until every job of them ended;
 * the first error. */
static int uffd_request_run(struct ms_uffd_session *s, struct uffd_prefault_req *reqs, size_t n)
{
	pthread_mutex_lock(&s->lock);
	if (s->state != MS_UFFD_SESSION_SERVING || s->workers_stop) {
		int err = s->error ? s->error : MS_ECLOSED;
		pthread_mutex_unlock(&s->lock);
		return err;
	}
	for (size_t i = 0; i < n; i++) {
		reqs[i].next = NULL;
		if (s->req_tail)
			s->req_tail->next = &reqs[i];
		else
			s->req_head = &reqs[i];
		s->req_tail = &reqs[i];
	}
	pthread_mutex_unlock(&s->lock);
	uffd_eventfd_signal(s->wake_efd);
	int err = 0;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		while (!reqs[i].dispatched || reqs[i].pending > 0)
			pthread_cond_wait(&s->state_cond, &s->lock);
		if (!err)
			err = reqs[i].err;
	}
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
	return uffd_request_run(s, &req, 1);
}

/* ---- prefetch installs: on the caller's thread, under the install lock ---- */

/* How long the event thread lets a waiting installer have its turn at most (below). */
#define UFFD_INSTALL_TURN_NS (200 * 1000)

void uffd_install_lock(struct ms_uffd_session *s, bool event_thread)
{
	if (event_thread) {
		/* An installer waits and has had no turn since this thread last had the lock:
		 * the guest faulting all the time would otherwise keep it out (this thread
		 * takes the lock again before the installer is even scheduled), and faults
		 * would be served for the very pages it holds fetched. A turn lasts until
		 * install_wanted is seen: one job. */
		if (atomic_load(&s->installer_waiting)) {
			int64_t until = ms_clock_now_ns() + UFFD_INSTALL_TURN_NS;
			while (atomic_load(&s->installer_waiting) &&
			       atomic_load(&s->installer_turns) == s->installer_seen &&
			       ms_clock_now_ns() < until)
				sched_yield();
		}
		atomic_fetch_add(&s->install_wanted, 1);
		pthread_mutex_lock(&s->install_lock);
		atomic_fetch_sub(&s->install_wanted, 1);
		s->installer_seen = atomic_load(&s->installer_turns);
		return;
	}
	/* faults go first: the event thread waiting for the lock gets it before this one */
	atomic_fetch_add(&s->installer_waiting, 1);
	while (atomic_load(&s->install_wanted))
		sched_yield();
	pthread_mutex_lock(&s->install_lock);
	atomic_fetch_sub(&s->installer_waiting, 1);
	atomic_fetch_add(&s->installer_turns, 1);
}

void uffd_install_unlock(struct ms_uffd_session *s)
{
	pthread_mutex_unlock(&s->install_lock);
}

/* A REMOVE the kernel has queued but the event thread not yet read (EAGAIN), or a short
 * copy: the event thread reads it before the job is tried again. */
#define UFFD_INSTALL_RETRY_NS (50 * 1000)

/* Whether a page of [first, first + count) is still NOT_PRESENT; the install lock held (every
 * tracker write is under it). */
static bool uffd_any_not_present(struct ms_uffd_session *s, uint64_t first, uint64_t count)
{
	for (uint64_t k = 0; k < count; k++)
		if (MS_UFFD_PAGE_STATE(ms_uffd_tracker_get(&s->tracker, first + k)) ==
		    MS_UFFD_PAGE_NOT_PRESENT)
			return true;
	return false;
}

/*
 * Installs run (fetched bytes) with one job per batch block or region piece, the install
 * lock held (on entry and return): install.c skips every page that is not NOT_PRESENT
 * (never over a present, written or removed page), and a job with no such page is skipped
 * whole, before it would wait for a turn (a guest ahead of its prefetch faults all the time,
 * and waiting a turn for each run it already has kept the prefetch behind it for the whole
 * resume). Between jobs the lock goes to the event thread when it waits for it; a DEFERred
 * job is tried again once the event thread had it. 0, or the session's error / MS_ECLOSED
 * when it stopped serving.
 */
static int uffd_install_direct(struct ms_uffd_session *s, struct ms_uffd_install_run *run)
{
	const uint64_t ps = s->page_size;
	/* what install.c reads of a request: data (a prefetch: access PREFETCH, the prefetch
	 * metrics) and installed; nothing waits on it */
	struct uffd_prefault_req req = {
	    .data = run->buf, .data_off = run->off, .data_len = run->len, .dispatched = true};
	uint64_t done = 0;
	int err = 0;
	while (done < run->len && !err) {
		uint64_t off = run->off + done;
		const struct ms_uffd_region *r = uffd_region_by_off(s, off);
		if (!r) { /* a hole between regions: nothing to install there */
			done += ps;
			continue;
		}
		uint64_t len = run->len - done;
		uint64_t region_left = r->offset + r->size - off;
		if (len > region_left)
			len = region_left;
		if (len > UFFD_MAX_BLOCK_PAGES * ps)
			len = UFFD_MAX_BLOCK_PAGES * ps;
		if (!uffd_any_not_present(s, off / ps, len / ps)) {
			done += len; /* the guest got there first: no turn to wait for */
			continue;
		}
		struct uffd_job job;
		memset(&job, 0, sizeof(job));
		job.kind = UFFD_JOB_FILL;
		job.region = r;
		job.block_addr = r->base + (off - r->offset);
		job.block_off = off;
		job.npages = len / ps;
		job.fault_addr = UFFD_NO_FAULT;
		job.buf = (uint8_t *)(uintptr_t)((const uint8_t *)run->buf + done); /* read only */
		job.req = &req;
		for (uint64_t k = 0; k < job.npages; k++)
			uffd_mask_set(job.mask, k);
		for (;;) {
			if (atomic_load(&s->install_wanted)) { /* faults go first */
				uffd_install_unlock(s);
				uffd_install_lock(s, false);
			}
			pthread_mutex_lock(&s->lock);
			bool serving = s->state == MS_UFFD_SESSION_SERVING && s->uffd >= 0;
			int why = s->error ? s->error : MS_ECLOSED;
			pthread_mutex_unlock(&s->lock);
			enum uffd_install_result res =
			    serving ? uffd_install(s, &job) : UFFD_FAILED;
			if (!serving)
				err = why;
			else if (res == UFFD_FAILED)
				err = s->error ? s->error : MS_ECLOSED;
			if (res != UFFD_DEFER)
				break; /* DONE, DROP (the process is gone or the range unmapped) */
			uffd_install_unlock(s);
			struct timespec pause = {.tv_nsec = UFFD_INSTALL_RETRY_NS};
			nanosleep(&pause, NULL);
			uffd_install_lock(s, false);
		}
		done += len;
	}
	run->installed = req.installed;
	return err;
}

int ms_uffd_session_install_runs(struct ms_uffd_session *s, struct ms_uffd_install_run *runs,
				 size_t n)
{
	for (size_t i = 0; i < n; i++) {
		runs[i].installed = 0;
		if ((runs[i].off | runs[i].len) & (s->page_size - 1) ||
		    runs[i].off > s->image_size || runs[i].len > s->image_size - runs[i].off)
			return -EINVAL;
	}
	int err = 0;
	uffd_install_lock(s, false);
	for (size_t i = 0; i < n && !err; i++)
		err = uffd_install_direct(s, &runs[i]);
	uffd_install_unlock(s);
	return err;
}

int ms_uffd_session_install(struct ms_uffd_session *s, uint64_t off, const void *buf, uint64_t len,
			    uint64_t *installed)
{
	struct ms_uffd_install_run run = {.off = off, .buf = buf, .len = len};
	int err = ms_uffd_session_install_runs(s, &run, 1);
	if (installed)
		*installed = run.installed;
	return err;
}
