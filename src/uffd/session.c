/*
 * session.c - one restore session: serve a VMM's userfaultfd from a page source.
 *
 * Job: the session's lifecycle and state machine, its event loop, and the
 * events that are not faults (REMOVE, UNMAP, REMAP, FORK). A fault is planned
 * (and fetched by the workers) in plan.c and installed in install.c
 * (session_int.h draws the split).
 *
 * State machine (ms_uffd_session_check() asserts each state's invariants in
 * debug builds, at every transition):
 *
 *   (handshake, pageserver.c) --start--> SERVING --source failed after retries,
 *                                          |       or an ioctl error--> FAILED
 *                                          |                              |
 *                                          +--peer exited / stop--> CLOSED <--teardown (final)
 *
 *   SERVING: the uffd is open, workers run, faults are served.
 *   FAILED:  error != 0; events are still read (a guest madvise never blocks)
 *            but nothing is installed; teardown keeps the state FAILED.
 *   CLOSED:  error == 0 or MS_ECLOSED; after teardown no job is left.
 *   After teardown (torn_down) the uffd is closed and every queue is empty.
 *   Prefetching (DESIGN's "handshake -> serving -> prefetching -> closed") is
 *   SERVING with a prefetcher attached (prefetch.h owns that state): its
 *   installer thread installs under the install lock whenever the event thread
 *   does not want it, and a session that leaves SERVING answers it MS_ECLOSED,
 *   which ends it.
 *
 * Threads:
 *   event thread  polls {uffd, stop eventfd, wakeup eventfd, peer pidfd}, reads
 *                 uffd events in batches, applies REMOVE/UNMAP/REMAP, plans each
 *                 fault, and performs every install ioctl (UFFDIO_COPY, ZEROPAGE,
 *                 WRITEPROTECT, WAKE) of the faults and prefaults, holding the
 *                 install lock from the event read to its last install.
 *   a prefetch's  installer (prefetch.c, ms_uffd_session_install_runs) copies
 *                 fetched runs in itself, one job at a time under the install
 *                 lock, and gives the lock up to the event thread whenever that
 *                 one waits for it (faults go first).
 *   workers (N)   only fetch: they read source bytes for a planned block into
 *                 the job's buffer, retrying with backoff, and hand the job back
 *                 through the completion list + wakeup eventfd.
 *
 * Why installs happen under the lock the event reader holds: a guest
 * madvise(MADV_DONTNEED) queues a REMOVE event, waits until the handler
 * *reads* it, and only then zaps the pages. An install after that zap would
 * leave stale data in a page that must read as zero. Because the event thread
 * reads events and marks them in the tracker without letting go of the install
 * lock, every install (its own, or a prefetch installer's) sees every REMOVE
 * read before it (the tracker says REMOVED), and an install that races a
 * REMOVE not yet read fails with EAGAIN (the kernel's mmap_changing) and is
 * retried after the event is read (the installer lets go of the lock for it).
 * The lock also keeps each install's set-the-tracker / ioctl / set-it-back
 * (install.c invariant 2) whole against another thread's. No holder does I/O
 * under it but the event thread's own inline LOCAL reads, and no holder waits
 * for a worker: a guest madvise always progresses, even while every worker is
 * blocked on a slow source.
 *
 * Source reads: 4 attempts, 50 ms doubling to 500 ms with jitter; then the
 * session fails loudly (state FAILED, event fd, callback, error log).
 *
 * Invariants:
 *  1. Only a holder of the install lock issues install ioctls and writes the
 *     tracker's states: the event thread, or a prefetch installer (one job at
 *     a time, never while the event thread waits for the lock).
 *  2. A page is never installed from source data once REMOVE was read for it.
 *  3. A page with a fetch in flight has the tracker's INFLIGHT bit; a fault on
 *     it is dropped because the job's install (or its final wake) wakes it.
 *  4. Every job ends in exactly one of: installed, deferred (kept), dropped,
 *     freed at close; its prefault request is told exactly once.
 */
#include "uffd/session_int.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <assert.h>
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

#define UFFD_EVENT_BATCH 64

/* A blocking prefault call, waiting on the session's state_cond. Guarded by session lock. */

/* ---- small helpers ---- */

void uffd_eventfd_signal(int fd)
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

/* The region whose guest addresses (by_addr) or file offsets hold at. */
static const struct ms_uffd_region *uffd_region_find(struct ms_uffd_session *s, uint64_t at,
						     bool by_addr)
{
	for (size_t i = 0; i < s->hs.region_count; i++) {
		const struct ms_uffd_region *r = &s->hs.regions[i];
		uint64_t start = by_addr ? r->base : r->offset;
		if (at >= start && at - start < r->size)
			return r;
	}
	return NULL;
}

const struct ms_uffd_region *uffd_region_by_addr(struct ms_uffd_session *s, uint64_t addr)
{
	return uffd_region_find(s, addr, true);
}

const struct ms_uffd_region *uffd_region_by_off(struct ms_uffd_session *s, uint64_t off)
{
	return uffd_region_find(s, off, false);
}

void uffd_list_push(struct uffd_job **head, struct uffd_job **tail, struct uffd_job *job)
{
	job->next = NULL;
	if (*tail)
		(*tail)->next = job;
	else
		*head = job;
	*tail = job;
}

struct uffd_job *uffd_list_pop(struct uffd_job **head, struct uffd_job **tail)
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
void uffd_req_job_done(struct ms_uffd_session *s, struct uffd_prefault_req *req, int err)
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

#ifndef NDEBUG
void ms_uffd_session_check(struct ms_uffd_session *s)
{
	MS_ASSERT_HELD(&s->lock);
	switch (s->state) {
	case MS_UFFD_SESSION_SERVING:
		assert(s->error == 0);
		assert(!s->torn_down);
		break;
	case MS_UFFD_SESSION_FAILED:
		assert(s->error != 0);
		break;
	case MS_UFFD_SESSION_CLOSED:
		assert(s->error == 0);
		break;
	default:
		assert(!"unknown session state");
	}
	assert((s->queue_head == NULL) == (s->queue_tail == NULL));
	assert((s->done_head == NULL) == (s->done_tail == NULL));
	assert((s->req_head == NULL) == (s->req_tail == NULL));
	if (s->torn_down) {
		assert(s->state != MS_UFFD_SESSION_SERVING);
		assert(s->uffd < 0 && s->worker_count == 0);
		assert(!s->queue_head && !s->done_head && !s->req_head && !s->deferred_head);
	}
}
#endif

/* Leaves SERVING for FAILED: loud, once. Event thread only. */
void uffd_session_fail_at(struct ms_uffd_session *s, int err, uint64_t off, const char *what)
{
	pthread_mutex_lock(&s->lock);
	if (s->state != MS_UFFD_SESSION_SERVING) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	s->state = MS_UFFD_SESSION_FAILED;
	s->error = err ? err : -EIO;
	s->error_off = off;
	ms_uffd_session_check(s);
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add(&s->metrics.errors, 1);
	ms_err(UFFD_MOD, "session %llu (pid %d) FAILED: %s: %s; faults are no longer served",
	       (unsigned long long)s->id, (int)s->peer_pid, what, ms_strerror(err));
	if (s->options.on_session_event)
		s->options.on_session_event(s->options.event_arg, s, MS_UFFD_SESSION_FAILED, err);
	uffd_eventfd_signal(s->event_efd);
}

bool uffd_serving(struct ms_uffd_session *s)
{
	pthread_mutex_lock(&s->lock);
	bool serving = s->state == MS_UFFD_SESSION_SERVING;
	pthread_mutex_unlock(&s->lock);
	return serving;
}

void uffd_queue_to_workers(struct ms_uffd_session *s, struct uffd_job *job)
{
	pthread_mutex_lock(&s->lock);
	uffd_list_push(&s->queue_head, &s->queue_tail, job);
	pthread_cond_signal(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
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

/* ---- event thread ---- */

static void uffd_log_summary(struct ms_uffd_session *s)
{
	const struct ms_uffd_metrics *m = &s->metrics;
	double secs = (double)(ms_clock_now_ns() - s->start_ns) / 1e9;
	ms_info(
	    UFFD_MOD,
	    "session %llu (pid %d) ended after %.3f s: faults %llu read / %llu write / %llu wp, "
	    "pages %llu source (%llu batched, %llu prefault, %llu sliced) / %llu zero, "
	    "%llu removed, %llu retries, %llu source errors, %llu dropped, error: %s",
	    (unsigned long long)s->id, (int)s->peer_pid, secs,
	    (unsigned long long)atomic_load(&m->faults_read),
	    (unsigned long long)atomic_load(&m->faults_write),
	    (unsigned long long)atomic_load(&m->faults_wp),
	    (unsigned long long)atomic_load(&m->pages_source),
	    (unsigned long long)atomic_load(&m->pages_batched),
	    (unsigned long long)atomic_load(&m->pages_prefault),
	    (unsigned long long)atomic_load(&m->pages_sliced),
	    (unsigned long long)atomic_load(&m->pages_zero),
	    (unsigned long long)atomic_load(&m->pages_removed),
	    (unsigned long long)atomic_load(&m->source_retries),
	    (unsigned long long)atomic_load(&m->source_errors),
	    (unsigned long long)atomic_load(&m->faults_dropped), ms_strerror(s->error));
}

/* Stops the workers and joins them. */
static void uffd_workers_join(struct ms_uffd_session *s)
{
	pthread_mutex_lock(&s->lock);
	s->workers_stop = true;
	pthread_cond_broadcast(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->worker_count; i++)
		pthread_join(s->workers[i], NULL);
	s->worker_count = 0;
}

/* Stops and joins the workers, frees every job left, answers prefault waiters. */
static void uffd_session_teardown(struct ms_uffd_session *s)
{
	uffd_workers_join(s);

	pthread_mutex_lock(&s->lock);
	bool failed = s->state == MS_UFFD_SESSION_FAILED;
	s->state = failed ? MS_UFFD_SESSION_FAILED : MS_UFFD_SESSION_CLOSED;
	int err = failed ? s->error : MS_ECLOSED;
	struct uffd_job *lists[3] = {s->queue_head, s->done_head, s->deferred_head};
	s->queue_head = s->queue_tail = s->done_head = s->done_tail = NULL;
	s->deferred_head = s->deferred_tail = NULL;
	s->deferred_count = 0;
	for (int l = 0; l < 3; l++) {
		while (lists[l]) {
			struct uffd_job *job = lists[l];
			lists[l] = job->next;
			if (job->req) {
				if (!job->req->err)
					job->req->err = err;
				job->req->pending--;
			}
			uffd_job_free(s, job);
		}
	}
	while (s->req_head) {
		struct uffd_prefault_req *req = s->req_head;
		s->req_head = req->next;
		req->err = err;
		req->dispatched = true;
	}
	s->req_tail = NULL;
	ms_uffd_session_check(s);
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);

	/* Wake every thread still waiting in a fault so nothing hangs on our side. */
	for (size_t i = 0; i < s->hs.region_count; i++)
		uffd_wake(s, s->hs.regions[i].base, s->hs.regions[i].size);
	uffd_install_lock(s, true); /* no prefetch installer is in an ioctl on it */
	close(s->uffd);
	s->uffd = -1;
	uffd_install_unlock(s);
	if (s->conn >= 0)
		close(s->conn);
	s->conn = -1;
	if (s->pidfd >= 0)
		close(s->pidfd);
	s->pidfd = -1;
	pthread_mutex_lock(&s->lock);
	s->torn_down = true;
	ms_uffd_session_check(s);
	pthread_mutex_unlock(&s->lock);
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
		 * cross-CPU wakeup per fault (tens of us on small VMs, measured on the machines
		 * memsnap is developed on). */
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
		/* 1. Events first: every REMOVE read before any install below, and in the
		 * tracker before a prefetch installer installs again (the install lock). */
		bool more = true;
		size_t nfaults = 0;
		uffd_install_lock(s, true);
		int64_t now = ms_clock_now_ns();
		if (pfd[0].revents & POLLIN)
			nfaults = uffd_read_events(s, faults, fault_cap, &more);
		/* 2. Retries, completed fetches, then new faults. */
		uffd_process_deferred(s);
		uffd_process_completions(s);
		for (size_t i = 0; i < nfaults; i++)
			uffd_handle_fault(s, &faults[i], now);
		/* 3. Prefault work last: faults always go first. */
		uffd_process_prefaults(s);
		uffd_install_unlock(s);
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
	ms_wpset_unref(s->wpset);
	ms_uffd_tracker_fini(&s->tracker);
	ms_uffd_recorder_fini(&s->recorder);
	ms_uffd_handshake_fini(&s->hs);
	const int fds[] = {s->memfd,	s->uffd,     s->conn,	  s->pidfd,
			   s->stop_efd, s->wake_efd, s->event_efd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	pthread_cond_destroy(&s->work_cond);
	pthread_cond_destroy(&s->state_cond);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->install_lock);
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
	uffd = memfd = conn = -1;	     /* owned by s from here */
	s->wpset = ms_wpset_claim(s->memfd); /* before any fault is served */
	s->image_size = s->ops->size(s->ctx);
	s->page_size = s->hs.page_size;
	uint64_t batch = s->options.batch_bytes;
	s->block_pages = batch > s->page_size ? batch / s->page_size : 1;
	if (s->block_pages > UFFD_MAX_BLOCK_PAGES)
		s->block_pages = UFFD_MAX_BLOCK_PAGES;
	atomic_init(&s->wp_state, -1);
	s->error_off = UINT64_MAX;
	s->start_ns = ms_clock_now_ns();

	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->install_lock, NULL);
	pthread_cond_init(&s->work_cond, &attr);
	pthread_cond_init(&s->state_cond, &attr);
	pthread_condattr_destroy(&attr);

	err = ms_uffd_tracker_init(&s->tracker, s->image_size, s->page_size);
	if (err)
		goto fail_session;
	err = ms_uffd_recorder_init(&s->recorder, s->image_size, s->page_size);
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
	pthread_mutex_lock(&s->lock);
	ms_uffd_session_check(s);
	pthread_mutex_unlock(&s->lock);
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
	uffd_workers_join(s);
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

int ms_uffd_session_error(struct ms_uffd_session *s, uint64_t *offset)
{
	pthread_mutex_lock(&s->lock);
	int err = s->error;
	if (offset)
		*offset = s->error_off;
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

int ms_uffd_session_export(struct ms_uffd_session *s, struct ms_pageset **dirty,
			   struct ms_pageset **empty)
{
	return ms_uffd_tracker_export(&s->tracker, dirty, empty);
}

int ms_uffd_session_trace(struct ms_uffd_session *s, struct ms_uffd_trace *out)
{
	return ms_uffd_recorder_copy(&s->recorder, out);
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

uint64_t ms_uffd_session_block_pages(struct ms_uffd_session *s)
{
	return s->block_pages;
}

uint64_t ms_uffd_session_image_size(struct ms_uffd_session *s)
{
	return s->image_size;
}

bool ms_uffd_session_has_wp(struct ms_uffd_session *s)
{
	return atomic_load(&s->wp_state) == 1;
}
