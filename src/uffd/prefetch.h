/*
 * prefetch.h - replaying a first-touch trace (trace.h) into a restore session
 * ahead of the guest's faults.
 *
 * Two steps, on threads of their own:
 *   fetch    workers (default 16) take the trace's runs in trace order - each
 *            trace block brings the session's batch block around it, as a
 *            fault on it would (the block and its neighbours that hold data:
 *            the trace names only faulting pages), contiguous pages coalesced
 *            up to coalesce_bytes - and read each from the page source into a
 *            buffer, runs less than a batch block apart in one read (the gap
 *            pages are dropped, never installed) (for the layered file this also warms the chunk
 * cache: a fault on a block whose chunk is being fetched waits for that fetch in the chunker
 * instead of starting a second one).
 *   install  one thread copies each fetched run in itself
 *            (ms_uffd_session_install_runs: whole runs with UFFDIO_COPY, only
 *            pages not yet present, one batch block at a time under the
 *            session's install lock, which the event thread gets first
 *            whenever it waits for it: faults always go first; a run whose
 *            pages the guest already has is passed over without waiting for
 *            a turn, so a prefetch the guest overtook catches up). It used to
 *            hand the runs to the event thread, one request per run: on proc
 *            the hand-off took about as long as the copies themselves, and
 *            the faults waited behind whole batches of prefetch copies.
 *
 * A REMOVE or a guest write is never undone: the session installs only pages
 * still NOT_PRESENT and the kernel refuses a copy over a present page
 * (EEXIST, skipped). A run that cannot be read is skipped (the faults read it
 * themselves). ms_uffd_prefetch_stop() ends the replay at once: no read
 * starts and nothing is installed after it returns (the reads in progress are
 * waited for, at most one per worker); the daemon calls it when the sandbox
 * pauses, is deleted or dies, before the session stops.
 *
 * Lifecycle:  start --> FETCHING/INSTALLING --(trace done)--> DONE
 *                               \--(stop, session ended)--> STOPPED
 */
#ifndef MS_UFFD_PREFETCH_H
#define MS_UFFD_PREFETCH_H

#include "uffd/pageserver.h"
#include "uffd/trace.h"

#include <stdbool.h>
#include <stdint.h>

#define MS_UFFD_PREFETCH_WORKERS_DEFAULT  16
#define MS_UFFD_PREFETCH_COALESCE_DEFAULT (1u << 20)

struct ms_uffd_prefetch_options {
	unsigned fetch_workers;	 /* 0 = 16 */
	uint64_t coalesce_bytes; /* largest read of contiguous blocks; 0 = 1 MiB */
};

struct ms_uffd_prefetch_stats {
	uint64_t blocks;	  /* blocks in the trace */
	uint64_t runs;		  /* coalesced runs of pages planned (one install each) */
	uint64_t reads;		  /* reads done: the runs less than a batch block apart, together */
	uint64_t pages_planned;	  /* pages to read: the trace's with their batch blocks */
	uint64_t pages_installed; /* installed ahead of the guest */
	uint64_t pages_skipped;	  /* already present, written or removed when their run came */
	uint64_t read_errors;	  /* runs skipped because the read failed */
	int64_t duration_ns;	  /* start to done (or to stop) */
	bool done;		  /* every run was handled */
	bool stopped;		  /* ended early: stop, or the session ended */
};

struct ms_uffd_prefetch;
struct ms_header;

/*
 * Where a resume's prefetch trace comes from (E2B's resume-prefetch-source):
 *   init        the build's metadata.json trace: what the guest touched first
 *               on the resume before the pause that made this build
 *   last-cycle  the blocks the header's own build holds (what the last run
 *               wrote), in device order, capped at max_bytes
 *   both        init, then the last-cycle blocks it does not name
 *   off         none
 */
enum ms_uffd_prefetch_source {
	MS_PREFETCH_INIT,
	MS_PREFETCH_LAST_CYCLE,
	MS_PREFETCH_BOTH,
	MS_PREFETCH_OFF,
};

/* "init", "last-cycle", "both", "off" -> source; -EINVAL otherwise. */
int ms_uffd_prefetch_source_parse(const char *name, enum ms_uffd_prefetch_source *out);
const char *ms_uffd_prefetch_source_name(enum ms_uffd_prefetch_source source);

/*
 * The trace to replay (*out, possibly empty) for source: init may be NULL (no
 * trace in the metadata); header gives the last cycle's blocks (block_size =
 * the session's page size). 0 or -ENOMEM.
 */
int ms_uffd_prefetch_plan(enum ms_uffd_prefetch_source source, const struct ms_uffd_trace *init,
			  const struct ms_header *header, uint64_t block_size, uint64_t max_bytes,
			  struct ms_uffd_trace *out);

/*
 * Starts replaying trace (copied; block_size must be the session's page size)
 * into session s, reading from the page source ops/ctx (the session's own).
 * Takes a reference on s. NULL on error with *err (-EINVAL for a block size
 * other than the page size, -ENOMEM, a pthread error).
 */
struct ms_uffd_prefetch *ms_uffd_prefetch_start(struct ms_uffd_session *s,
						const struct ms_page_source_ops *ops, void *ctx,
						const struct ms_uffd_trace *trace,
						const struct ms_uffd_prefetch_options *options,
						int *err);
/* Stops at once (see above) and joins its threads. Idempotent. */
void ms_uffd_prefetch_stop(struct ms_uffd_prefetch *p);
/* Waits until done or stopped: 0, or -ETIMEDOUT. */
int ms_uffd_prefetch_wait(struct ms_uffd_prefetch *p, int64_t timeout_ns);
void ms_uffd_prefetch_get_stats(struct ms_uffd_prefetch *p, struct ms_uffd_prefetch_stats *out);
/* Stops, then frees. NULL is ignored. */
void ms_uffd_prefetch_free(struct ms_uffd_prefetch *p);

#endif
