/*
 * session_int.h - private to the restore session's three files:
 *
 *   plan.c     a fault (or a prefault request) -> a job: which pages of the
 *              aligned batch block to fill, read inline or by a fetch worker
 *              (the workers' loop lives here too)
 *   install.c  a job -> ioctls: UFFDIO_COPY / ZEROPAGE / WRITEPROTECT / WAKE,
 *              the tracker's states, the install results, finished and
 *              deferred jobs
 *   session.c  lifecycle and state machine, the event loop, the events that
 *              are not faults (REMOVE/UNMAP/REMAP/FORK), the public API
 *
 * Everything here runs on the session's event thread unless its comment says
 * otherwise (session.c's header lists the threads and invariants).
 */
#ifndef MS_UFFD_SESSION_INT_H
#define MS_UFFD_SESSION_INT_H

#include "uffd/session.h"
#include "uffd/trace.h"
#include "uffd/tracker.h"
#include "util/uffd_compat.h"
#include "util/wpset.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define UFFD_MOD	     "uffd"
#define UFFD_MAX_BLOCK_PAGES 512
#define UFFD_NO_FAULT	     UINT64_MAX

/* A blocking prefault call, waiting on the session's state_cond. Guarded by session lock. */
struct uffd_prefault_req {
	struct uffd_prefault_req *next;
	const uint64_t *offsets; /* a prefault: the pages to fetch and install */
	size_t count;
	const uint8_t *data; /* an install of fetched bytes (ms_uffd_session_install): the bytes */
	uint64_t data_off;   /* ... their device offset (page aligned) and length */
	uint64_t data_len;
	uint64_t installed; /* pages installed for this request (event thread) */
	size_t pending;	    /* jobs not finished */
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
	/* A zero-copy view of the source (ops->slice) of pages [slice_first, slice_first +
	 * slice_pages): those install from here instead of buf. slice_hold keeps it valid and
	 * is released (ops->unhold) once the job's installs returned. */
	const uint8_t *slice;
	void *slice_hold;
	uint64_t slice_first, slice_pages;
	bool no_slice;	 /* an install from a slice failed: this job reads */
	int err;	 /* fetch result */
	int64_t t_event; /* when the fault was read; 0 for prefault */
	uint8_t from;	 /* enum ms_page_from of the fault's page (the latency histogram) */
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

	struct ms_uffd_tracker tracker;	  /* own lock; see tracker.h */
	struct ms_uffd_recorder recorder; /* first touches; own lock; see trace.h */
	struct ms_uffd_metrics metrics;	  /* atomics */
	_Atomic int wp_state;		  /* -1 unknown, 0 no WP, 1 WP; written by event thread */
	struct ms_wpset *wpset; /* sync tracker of a sandbox in this process: WP faults are
				   recorded there too (util/wpset.h); NULL otherwise; immutable */

	/* The install lock: every uffd ioctl and tracker write happens under it. The event
	 * thread holds it from reading events to its last install of an iteration (so a
	 * REMOVE it reads is in the tracker before any other thread installs); a prefetch
	 * installer (ms_uffd_session_install_runs) holds it between the event thread's turns
	 * and lets it go after the job in progress once the event thread waits for it
	 * (install_wanted); the event thread in turn lets a waiting installer have one turn
	 * between two of its own (uffd_install_lock). Taken before lock, never inside it. */
	pthread_mutex_t install_lock;
	atomic_uint install_wanted;    /* the event thread is waiting for install_lock */
	atomic_uint installer_waiting; /* installers waiting for it */
	atomic_uint installer_turns;   /* times an installer got it */

	pthread_mutex_t lock;	   /* guards everything below up to "event thread only" */
	pthread_cond_t work_cond;  /* workers: queue non-empty or stopping (monotonic clock) */
	pthread_cond_t state_cond; /* state changes, prefault completions */
	struct uffd_job *queue_head, *queue_tail; /* to workers */
	struct uffd_job *done_head, *done_tail;	  /* back from workers */
	struct uffd_prefault_req *req_head, *req_tail;
	enum ms_uffd_session_state state;
	int error;
	uint64_t error_off; /* device offset of the read that failed it, or UINT64_MAX */
	bool workers_stop;
	bool stop_requested;
	bool joined;
	bool torn_down; /* teardown closed the uffd; state is final */
	pthread_t event_thread;
	pthread_t *workers;
	unsigned worker_count;

	/* Event thread only. */
	struct uffd_job *deferred_head, *deferred_tail;
	size_t deferred_count;
	unsigned installer_seen; /* installer_turns when this thread last took the install lock */
};

/* ---- session.c ---- */

/* Leaves SERVING for FAILED: loud, once; off = the device offset of the source read that
 * failed it, or UINT64_MAX. Event thread only. */
void uffd_session_fail_at(struct ms_uffd_session *s, int err, uint64_t off, const char *what);
static inline void uffd_session_fail(struct ms_uffd_session *s, int err, const char *what)
{
	uffd_session_fail_at(s, err, UINT64_MAX, what);
}
/* Whether the session is still SERVING (takes the lock). */
bool uffd_serving(struct ms_uffd_session *s);
/* A prefault job finished (err 0 = installed or skipped); any thread. */
void uffd_req_job_done(struct ms_uffd_session *s, struct uffd_prefault_req *req, int err);
void uffd_list_push(struct uffd_job **head, struct uffd_job **tail, struct uffd_job *job);
struct uffd_job *uffd_list_pop(struct uffd_job **head, struct uffd_job **tail);
/* Signals an eventfd (never blocks). */
void uffd_eventfd_signal(int fd);
/* Queues a heap job to the workers (takes the lock). */
void uffd_queue_to_workers(struct ms_uffd_session *s, struct uffd_job *job);
/* Records the latency of a fault read at t_event (0: not a fault) served from `from`
 * (enum ms_page_from; the WP resolve passes MS_PAGE_FROMS: no origin histogram). */
void uffd_latency_record(struct ms_uffd_session *s, int64_t t_event, unsigned from);
const struct ms_uffd_region *uffd_region_by_addr(struct ms_uffd_session *s, uint64_t addr);
const struct ms_uffd_region *uffd_region_by_off(struct ms_uffd_session *s, uint64_t off);

/* ---- plan.c ---- */

/* Plans and serves one fault event read at t_event. */
void uffd_handle_fault(struct ms_uffd_session *s, const struct uffd_msg *msg, int64_t t_event);
/* The install lock (above): the event thread's waits make the other holders yield. */
void uffd_install_lock(struct ms_uffd_session *s, bool event_thread);
void uffd_install_unlock(struct ms_uffd_session *s);
/* Plans every queued prefault request. */
void uffd_process_prefaults(struct ms_uffd_session *s);
/* Points the job at one slice of the source (ops->slice) from its first to its last masked
 * page instead of a read: false when the source has none for that range (or the job is
 * no_slice). Never blocks. Any thread. */
bool uffd_job_slice(struct ms_uffd_session *s, struct uffd_job *job);
/* Fills job->buf for the pages in job->mask; one read per run; single attempt. Any thread. */
int uffd_job_read(struct ms_uffd_session *s, struct uffd_job *job);
/* A fetch worker's thread: reads queued jobs with retries, hands them back done. */
void *uffd_worker_main(void *arg);

/* ---- install.c ---- */

enum uffd_install_result { UFFD_DONE, UFFD_DEFER, UFFD_DROP, UFFD_FAILED, UFFD_UNSLICE };

/* Installs what is left of job (install lock held): DONE (waiters woken), DEFER (retry it
 * later: a REMOVE not yet read, a short copy), DROP, FAILED (the session failed), or
 * UNSLICE (only a job with a slice: a copy from the slice failed; read the job instead). */
enum uffd_install_result uffd_install(struct ms_uffd_session *s, struct uffd_job *job);

/* Runs a job's install and disposes of it (heap job unless on_stack). A job whose install
 * from its slice failed goes to the workers to be read instead. */
void uffd_job_finish(struct ms_uffd_session *s, struct uffd_job *job, bool on_stack);
/* Clears the job's INFLIGHT bits. */
void uffd_job_release_pages(struct ms_uffd_session *s, struct uffd_job *job);
/* Releases the job's slice, if it has one (any thread). */
void uffd_job_unslice(struct ms_uffd_session *s, struct uffd_job *job);
/* Frees a heap job: its buffer and its slice. */
void uffd_job_free(struct ms_uffd_session *s, struct uffd_job *job);
/* WP fault: unprotect (wakes the writer) and record DIRTY; takes the heap job. */
void uffd_wp_resolve(struct ms_uffd_session *s, struct uffd_job *job);
void uffd_wake(struct ms_uffd_session *s, uint64_t addr, uint64_t len);
/* Installs the jobs the workers finished, then retries the deferred ones. */
void uffd_process_completions(struct ms_uffd_session *s);
void uffd_process_deferred(struct ms_uffd_session *s);

static inline bool uffd_mask_test(const uint64_t *mask, uint64_t i)
{
	return mask[i / 64] >> (i % 64) & 1;
}

static inline void uffd_mask_set(uint64_t *mask, uint64_t i)
{
	mask[i / 64] |= 1ULL << (i % 64);
}

#endif
