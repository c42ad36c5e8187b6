/*
 * pause.h - the pause pipeline: one snapshot from captured memory to a
 * published, uploaded layer (DESIGN.md §3).
 *
 *   caller: ms_pause_start()
 *     CAPTURED (memfd, dirty set, snapfile, the parent's durable header)
 *       | provisional header + memfd identity source (inflight)
 *       v
 *     SERVING - returns here: resumable at once (without inflight: after COMPARED)
 *   pipeline thread:
 *     COMPARING - dirty pages vs the parent (dedup mode); packed index registered
 *       |---------------------------------.  swap thread (inflight):
 *       v                                 v
 *     DRAINING - survivors -> diff file   SWAPPING - CAS provisional -> deduped,
 *       |  (replaces the packed source)     then COMPARED (the durable header)
 *       v                                 |
 *     RELEASE - memfd unmapped once drained and swapped, or the grace passed
 *       v                                          (DRAINED)
 *     UPLOADING - data, snapfile, header; puts retried on transient errors
 *       v
 *     PUBLISHED - the finalized header swapped in (unconditional)
 *   any error -> FAILED: every unsettled stage fails with it; memory not yet
 *     drained stays mapped until ms_pause_free (invariant 6).
 *
 * Invariants (DESIGN.md §5):
 *  1. The parent is the parent file's DURABLE header, never a provisional one.
 *  2. The provisional build id stays in this node's diff store and headers: the
 *     uploaded header is built from the compare result only.
 *  3. prov -> deduped is a compare-and-swap; publish is the only unconditional swap.
 *  4. The memfd is released only after the drain is done and the file left the
 *     provisional header (or the grace passed: reads planned on the provisional
 *     header then go through a view of the deduped one); while that window lasts,
 *     the provisional and the real sources are pinned in the diff store.
 *  5. Upload order: data, then snapfile, then the header; a failed upload
 *     leaves no header in the store (objects are atomic), and the local
 *     file keeps serving the deduped header. The uploaded header carries the
 *     builds entry of every ancestor it maps (from the parent's finalized
 *     header, or the ancestor's own header in the store).
 *  6. A pipeline that fails before its drain is done keeps the memory mapped,
 *     serving the file (it is then the only copy of the new pages), until
 *     ms_pause_free; a freed pause holds no pin in the diff store.
 *
 * Thread-safety: ms_pause_* may be called from any thread; the pipeline runs
 * on its own thread (and the swap on another), detached from the caller.
 */
#ifndef MS_SNAPSHOT_PAUSE_H
#define MS_SNAPSHOT_PAUSE_H

#include "build/layered.h"
#include "cache/diffstore.h"
#include "storage/frametable.h"
#include "snapshot/dedup.h"
#include "storage/store.h"
#include "util/future.h"
#include "util/pageset.h"

#include <stdbool.h>
#include <stdint.h>

enum ms_pause_stage {
	MS_PAUSE_SERVING = 0, /* provisional header live (or, without it, nothing yet) */
	MS_PAUSE_COMPARED,    /* deduped header built and swapped in (the durable header) */
	MS_PAUSE_DRAINED,     /* diff file written; memfd released */
	MS_PAUSE_PUBLISHED,   /* uploaded; finalized header swapped in */
	MS_PAUSE_STAGES,
};

/*
 * Counters summed over many pauses (the daemon's metrics): owned by the caller,
 * shared by every pause that names them, updated atomically.
 */
struct ms_pause_counters {
	_Atomic uint64_t published, failed;
	_Atomic uint64_t upload_bytes, upload_retries, upload_failures;
	_Atomic uint64_t pages_dirty, pages_equal, pages_zero, pages_kept;
	_Atomic uint64_t swap_grace_elapsed; /* memfds released by the grace, not the swap */
	/* pages served from paused memfds, by phase: provisional header (identity
	 * offsets), deduped header before the drain finished (packed index) */
	_Atomic uint64_t inflight_pages_provisional, inflight_pages_packed;
};

/* Why a pause let go of the guest memory. */
enum ms_pause_release {
	MS_PAUSE_RELEASE_PENDING = 0,
	MS_PAUSE_RELEASE_SWAP,		 /* drained, and the file left the provisional header */
	MS_PAUSE_RELEASE_GRACE,		 /* drained; the swap had not come within the grace */
	MS_PAUSE_RELEASE_NO_PROVISIONAL, /* drained; no provisional header to wait for */
};

/* One pause's figures, readable at any time (ms_pause_stats). Times in ns, 0 = not yet. */
enum ms_pause_step {
	MS_PAUSE_STEP_PROVISIONAL, /* start -> resumable (provisional header, or none) */
	MS_PAUSE_STEP_COMPARE,	   /* compare, packed index, deduped header, swap */
	MS_PAUSE_STEP_DRAIN,	   /* diff file written, memfd released (includes RELEASE) */
	MS_PAUSE_STEP_UPLOAD,	   /* data, snapfile, header in the store */
	MS_PAUSE_STEP_PUBLISH,	   /* finalized header swapped in */
	/* finer views of the two above */
	MS_PAUSE_STEP_SWAP,    /* deduped header built -> swap landed (stays 0 without
				  the provisional header: there is no swap) */
	MS_PAUSE_STEP_RELEASE, /* diff file written -> memfd released: the wait for the
				  swap or the grace (stats.release says which) */
	MS_PAUSE_STEPS,
};

struct ms_pause_stats {
	int64_t step_ns[MS_PAUSE_STEPS];
	uint64_t pages_dirty, pages_equal, pages_zero, pages_kept; /* after the compare */
	uint64_t upload_bytes;	 /* bytes put into the store (data as stored, snapfile, header) */
	uint64_t upload_retries; /* puts tried again after a transient error */
	enum ms_pause_release release;
	uint64_t inflight_pages_provisional; /* served from the memfd, by phase (so far) */
	uint64_t inflight_pages_packed;
	int error;		  /* the pipeline's error, 0 while fine */
	uint64_t upload_failures; /* puts given up on (not retryable, or no attempt left) */
};

/* Where a build stands, for "build show". */
enum ms_pause_state {
	MS_PAUSE_STATE_CAPTURING = 0, /* resumable; the compare has not begun (queued, stalled) */
	MS_PAUSE_STATE_DEDUPING,      /* compare, swap, drain, memfd release */
	MS_PAUSE_STATE_UPLOADING,     /* drained: data, snapfile, header going to the store */
	MS_PAUSE_STATE_PUBLISHED,     /* in the store; the finalized header swapped in */
	MS_PAUSE_STATE_FAILED,
};

struct ms_pause_info {
	enum ms_pause_state state;
	int error;	       /* FAILED: the pipeline's error */
	uint64_t mem_bytes;    /* the guest memory's size */
	uint64_t dirty_bytes;  /* pages compared x 4 KiB (0 until the compare is done) */
	uint64_t zero_bytes;   /* pages mapped to nil x 4 KiB (0 until then) */
	uint64_t diff_bytes;   /* pages kept x 4 KiB: the diff's size (0 until then) */
	uint64_t upload_bytes; /* put into the store so far */
	double dedup_ratio;    /* kept / compared: 1 = nothing dropped (0 until then) */
};

struct ms_pause_config {
	struct ms_store *store;	      /* borrowed */
	struct ms_diffstore *diffs;   /* borrowed; holds every build's source */
	const char *cache_dir;	      /* diff files are written here */
	bool inflight;		      /* serve from the memfd at once (provisional header) */
	enum ms_dedup_mode dedup;     /* default: best effort (dedup.h) */
	uint64_t header_version;      /* 0: the parent's version */
	enum ms_compression compress; /* upload the diff as zstd/lz4 frames (default: none) */
	/*
	 * Settled when the parent build's upload finished (NULL: it is in the store).
	 * Only this pause's header waits for it; a parent's own header waited for its
	 * parent, so one future orders the whole chain. Borrowed, like parent.
	 */
	struct ms_future *parent_published;
	/*
	 * How the new build's file reaches other builds' data (its ancestors): NULL
	 * for ms_build_storage_resolve over store + diffs; the daemon passes the peer
	 * resolver so an ancestor still on a peer keeps being read from it.
	 */
	ms_layered_resolve_fn resolve;
	void *resolve_ctx;
	/* tests: the compare waits for this future before it starts (may be NULL) */
	struct ms_future *compare_gate;
	/* tests: the upload waits for this future before it starts (may be NULL) */
	struct ms_future *upload_gate;
	/*
	 * Each put of the upload is tried up to this many times (0: 4) when it fails
	 * with a transient error (timeout, connection reset or refused, EIO, EAGAIN),
	 * backing off 50 ms doubling to 1 s; any other error (the store refused: MS_EREMOTE
	 * after the S3 client's own retries, EACCES, ENOSPC, ...) stops the upload at once.
	 */
	unsigned upload_attempts;
	struct ms_pause_counters *counters; /* borrowed, may be NULL */
	/*
	 * With the provisional header, the drain runs while the deduped header is
	 * built and swapped in; the memfd is released once both are done, or once the
	 * drain is done and grace_ns (0: 30 s) passed without the swap (counted as
	 * swap_grace_elapsed). Reads planned on the provisional header after that are
	 * served through the deduped header. Without it nothing waits.
	 */
	int64_t grace_ns;
	/* tests: the swap to the deduped header waits for this future (may be NULL) */
	struct ms_future *swap_gate;
};

struct ms_pause;

/*
 * Starts a pause. memfd: the guest memory (ownership taken, closed on error
 * too) of parent's size; dirty/empty: 4 KiB page sets (copied); snapfile: the
 * VMM state blob (copied). parent: the parent's layered file, whose durable
 * header is the parent (waits for it). Returns once the new build can be
 * resumed: with inflight, at once; without, after the compare.
 */
int ms_pause_start(const struct ms_pause_config *config, struct ms_layered *parent, int memfd,
		   const struct ms_pageset *dirty, const struct ms_pageset *empty,
		   const void *snapfile, size_t snapfile_len, struct ms_pause **out);
/* The new build's id (the real one: what the API returns and uploads name). */
const ms_uuid *ms_pause_build_id(struct ms_pause *pause);
/* The new build's layered file: warm resumes read it. Borrowed until ms_pause_free. */
struct ms_layered *ms_pause_file(struct ms_pause *pause);
/* Waits for a stage: 0, the pipeline's error, or -ETIMEDOUT (timeout_ns < 0: forever). */
int ms_pause_wait(struct ms_pause *pause, enum ms_pause_stage stage, int64_t timeout_ns);
/*
 * The future settled when this build is published (uploaded): a child pause's
 * config.parent_published. Borrowed until ms_pause_free.
 */
struct ms_future *ms_pause_published(struct ms_pause *pause);
/* Pages: compared, equal to the parent, zero, kept (valid after COMPARED). */
void ms_pause_counts(struct ms_pause *pause, uint64_t *dirty, uint64_t *equal, uint64_t *zero,
		     uint64_t *kept);
/* A consistent copy of the pause's figures so far. */
void ms_pause_stats(struct ms_pause *pause, struct ms_pause_stats *out);
/*
 * The build's state, and (info may be NULL) its sizes so far; never blocks.
 * The state moves before the stage it leads to is signalled: after
 * ms_pause_wait(DRAINED) it is UPLOADING or later.
 */
enum ms_pause_state ms_pause_state(struct ms_pause *pause, struct ms_pause_info *info);
/* "capturing", "deduping", "uploading", "published", "failed". */
const char *ms_pause_state_name(enum ms_pause_state state);
/* Waits for the pipeline to end (published or failed), then frees. */
void ms_pause_free(struct ms_pause *pause);

#endif
