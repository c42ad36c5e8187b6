// clang-format off
/*
 * pause.h - the pause pipeline: one snapshot from captured memory to a
 * published, uploaded layer (docs/design.md §3).
 *
 * One state machine, one enum (ms_pause_state). Each state is entered once, by
 * the function the transition table in pause.c names; each has a future that
 * ms_pause_wait() waits for. Three threads run it: the caller's, the pipeline
 * thread, and - with the provisional header - a swap thread and a release
 * thread, so the swap, the drain, the release and the upload overlap.
 *
 *   caller      CAPTURED      ms_pause_start: memfd, dirty set, snapfile, the
 *                  |          parent's durable header taken
 *                  v
 *               PROVISIONAL   ms_pause_provisional (inflight): provisional header +
 *                  |          memfd identity source; resumable at once. Skipped
 *                  |          without inflight, or when it fails (counted, logged:
 *                  |          the pause goes on, resumable after COMPARED)
 *   pipeline       v
 *               COMPARING     ms_pause_gate: the compare may start
 *                  v
 *               DEDUPED       ms_pause_compare: dirty pages vs the parent; packed
 *                  |          index registered (inflight); deduped header built
 *                  +--------------------------------.
 *                  v                                 v             swap thread
 *               DRAINED       ms_pause_drain      COMPARED    ms_pause_swap: CAS
 *                  |          survivors -> file      |        provisional -> deduped;
 *                  |          (replaces the packed   |        the durable header.
 *                  |           source)               |        (no provisional: the
 *                  +------------.                    |        pipeline, at once)
 *                  |            v     release thread |
 *                  |         RELEASED  ms_pause_release: memfd unmapped once
 *                  |            drained and COMPARED, or the grace passed
 *                  v       <----(the upload's header waits for COMPARED only)
 *               UPLOADED      ms_pause_upload: data, snapfile, header
 *                  v
 *               PUBLISHED     ms_pause_publish: the finalized header swapped in
 *
 *   any error, or ms_pause_cancel() -> FAILED (ms_pause_fail): every unsettled
 *   state fails with it. Memory not yet drained stays mapped, serving warm
 *   reads, while a user holds the pause (ms_pause_user_ref) and at most
 *   failed_hold; ms_pause_retry() takes it over.
 *
 * Invariants (docs/design.md §5), asserted by ms_pause_check() at every transition:
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
 *     serving the file (it is then the only copy of the new pages), until no
 *     user holds it, failed_hold passed, a retry took it over, or ms_pause_free;
 *     a freed pause holds no pin in the diff store.
 *  7. Without in-flight serving nothing reads the memfd but the compare and the
 *     drain: no provisional header, no packed source; resumes read the deduped
 *     header, the real build's reads wait for the drained file.
 *
 * Thread-safety: ms_pause_* may be called from any thread; the pipeline runs
 * on its own threads, detached from the caller.
 */
// clang-format on
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

/* The pause's states, in the order the pipeline reaches them (diagram above). */
enum ms_pause_state {
	MS_PAUSE_CAPTURED = 0, /* memory, sets, snapfile and the parent's header taken */
	MS_PAUSE_PROVISIONAL,  /* provisional header live: resumable (inflight only) */
	MS_PAUSE_COMPARING,    /* the compare began (its gate passed) */
	MS_PAUSE_DEDUPED,      /* survivors known, packed index registered, deduped header built */
	MS_PAUSE_COMPARED,     /* the deduped header is the durable one (swapped in) */
	MS_PAUSE_DRAINED,      /* diff file written; it serves the real build */
	MS_PAUSE_RELEASED,     /* memfd unmapped (stats.release says why) */
	MS_PAUSE_UPLOADED,     /* data, snapfile, header in the store */
	MS_PAUSE_PUBLISHED,    /* the finalized header swapped in */
	MS_PAUSE_FAILED,       /* the pipeline's error (stats.error); every unreached state fails */
	MS_PAUSE_STATES,
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
	/* provisional headers that could not be built: those pauses went on without */
	_Atomic uint64_t provisional_failures;
	_Atomic uint64_t cancelled; /* pauses ended by ms_pause_cancel */
	/* gauge: guest memory still mapped by failed pauses (bytes) */
	_Atomic uint64_t failed_held_bytes;
};

/* Why a pause let go of the guest memory. */
enum ms_pause_release {
	MS_PAUSE_RELEASE_PENDING = 0,
	MS_PAUSE_RELEASE_SWAP,		 /* drained, and the file left the provisional header */
	MS_PAUSE_RELEASE_GRACE,		 /* drained; the swap had not come within the grace */
	MS_PAUSE_RELEASE_NO_PROVISIONAL, /* drained; no provisional header to wait for */
	MS_PAUSE_RELEASE_FAILED,	 /* failed: no user left, or failed_hold passed */
	MS_PAUSE_RELEASE_RETRIED,	 /* failed: a retry took the memory over */
};

/* One pause's figures, readable at any time (ms_pause_stats). */
struct ms_pause_stats {
	/* when each state was reached, in ns since ms_pause_start; -1: not (yet) */
	int64_t at_ns[MS_PAUSE_STATES];
	uint64_t pages_dirty, pages_equal, pages_zero, pages_kept; /* after the compare */
	uint64_t upload_bytes;	 /* bytes put into the store (data as stored, snapfile, header) */
	uint64_t upload_retries; /* puts tried again after a transient error */
	enum ms_pause_release release;
	uint64_t inflight_pages_provisional; /* served from the memfd, by phase (so far) */
	uint64_t inflight_pages_packed;
	int error;		  /* the pipeline's error, 0 while fine */
	uint64_t upload_failures; /* puts given up on (not retryable, or no attempt left) */
	int provisional_error;	  /* why the provisional header was skipped (0: it was not) */
};

/*
 * How long the transition into state took (ns): from the state the transition
 * table times it from (CAPTURED for PROVISIONAL and COMPARED - start to
 * resumable, start to durable -, the state before it otherwise; DEDUPED for
 * COMPARED's swap alone: ms_pause_stats_between). -1 while not reached.
 */
int64_t ms_pause_stats_took(const struct ms_pause_stats *st, enum ms_pause_state state);
/* at_ns[to] - at_ns[from], or -1 while either is not reached. */
int64_t ms_pause_stats_between(const struct ms_pause_stats *st, enum ms_pause_state from,
			       enum ms_pause_state to);

struct ms_pause_info {
	enum ms_pause_state state; /* ms_pause_state()'s answer */
	int error;		   /* FAILED: the pipeline's error */
	uint64_t mem_bytes;	   /* the guest memory's size */
	uint64_t dirty_bytes;	   /* pages compared x 4 KiB (0 until the compare is done) */
	uint64_t zero_bytes;	   /* pages mapped to nil x 4 KiB (0 until then) */
	uint64_t diff_bytes;	   /* pages kept x 4 KiB: the diff's size (0 until then) */
	uint64_t upload_bytes;	   /* put into the store so far */
	double dedup_ratio;	   /* kept / compared: 1 = nothing dropped (0 until then) */
	uint64_t held_bytes;	   /* guest memory still mapped by this pause */
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
	/* tests: the drain waits for this future before it starts (may be NULL) */
	struct ms_future *drain_gate;
	/* tests: the upload waits for this future before it starts (may be NULL) */
	struct ms_future *upload_gate;
	/*
	 * The build's metadata.json (may be NULL): copied at start, put after the
	 * snapfile and before the header, so a reader that sees the header finds it.
	 */
	const void *metadata;
	size_t metadata_len;
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
	/* tests: the in-flight swap to the deduped header waits for this future (may be NULL) */
	struct ms_future *swap_gate;
	/*
	 * A pause that failed before its drain keeps the guest memory mapped (the
	 * only copy of the new pages) while a user holds it (ms_pause_user_ref),
	 * and at most this long (0: 10 min); then it lets go.
	 */
	int64_t failed_hold_ns;
	/*
	 * The caller counts the sandboxes that read this build with
	 * ms_pause_user_ref/unref: a failed pause then lets go of its memory as soon
	 * as none is left (not only after failed_hold).
	 */
	bool count_users;
	/*
	 * Who uploads: the holder of the build's uploads/{build_id} lease
	 * (storage/lease.h) while its objects go up, so that a collector leaves the
	 * data alone before the header names it. NULL: no lease (an embedder
	 * without a collector); memsnapd and the CLI name themselves.
	 */
	const char *upload_holder;
	/* the new build's id (borrowed; the caller checked it is free). NULL: a random one. */
	const ms_uuid *build_id;
	/* tests: building the provisional header fails with this error (0: it does not) */
	int test_provisional_error;
	/* tests: the swap fails with this error (0: it does not) */
	int test_swap_error;
};

struct ms_pause;

/*
 * Starts a pause. memfd: the guest memory (ownership taken, closed on error
 * too) of parent's size; dirty/empty: 4 KiB page sets (copied); snapfile: the
 * VMM state blob (copied). parent: the parent's layered file, whose durable
 * header is the parent (waits for it). Returns at once with the provisional
 * header (PROVISIONAL): with inflight its reads are served from the memory,
 * without them they wait for the drained file. Only when the provisional
 * header could not be built does it wait for the deduped one (COMPARED); that
 * error is then returned with *out set (free it).
 */
int ms_pause_start(const struct ms_pause_config *config, struct ms_layered *parent, int memfd,
		   const struct ms_pageset *dirty, const struct ms_pageset *empty,
		   const void *snapfile, size_t snapfile_len, struct ms_pause **out);
/* The new build's id (the real one: what the API returns and uploads name). */
const ms_uuid *ms_pause_build_id(struct ms_pause *pause);
/* The new build's layered file: warm resumes read it. Borrowed until ms_pause_free. */
struct ms_layered *ms_pause_file(struct ms_pause *pause);
/*
 * Waits until state is reached: 0, the pipeline's error (MS_ECANCELED when it
 * was cancelled), -ENOTSUP for PROVISIONAL when the pause runs without it,
 * -EINVAL for FAILED, or -ETIMEDOUT (timeout_ns < 0: forever).
 */
int ms_pause_wait(struct ms_pause *pause, enum ms_pause_state state, int64_t timeout_ns);
/*
 * The future settled when this build is published (uploaded): a child pause's
 * config.parent_published. Borrowed until ms_pause_free.
 */
struct ms_future *ms_pause_published(struct ms_pause *pause);
/*
 * The future settled once the drain has written the diff file, with that file's
 * checksum table (a struct ms_sums *, storage/checksums.h: the object "memfile",
 * XXH3 per 64 KiB of the packed space), what the peer server serves as
 * "{id}/checksums". Never settled if the drain fails. Borrowed until ms_pause_free.
 */
struct ms_future *ms_pause_data_checksums(struct ms_pause *pause);
/* Pages: compared, equal to the parent, zero, kept (valid after COMPARED). */
void ms_pause_counts(struct ms_pause *pause, uint64_t *dirty, uint64_t *equal, uint64_t *zero,
		     uint64_t *kept);
/* A consistent copy of the pause's figures so far. */
void ms_pause_stats(struct ms_pause *pause, struct ms_pause_stats *out);
/*
 * The furthest state reached (FAILED once failed), and (info may be NULL) its
 * sizes so far; never blocks. A state is reached before its future settles:
 * after ms_pause_wait(DRAINED) it is DRAINED or later.
 */
enum ms_pause_state ms_pause_state(struct ms_pause *pause, struct ms_pause_info *info);
/* The state's name: "captured", "provisional", ..., "published", "failed". */
const char *ms_pause_state_name(enum ms_pause_state state);
/* What "build show" calls it: "capturing", "deduping", "uploading", "published", "failed". */
const char *ms_pause_status_name(enum ms_pause_state state);
/*
 * Cancels the pause (its one cancellation token, docs/design.md §6): every wait of
 * the pipeline (compare gate, compare, swap, grace, upload backoff, parent's
 * upload) returns MS_ECANCELED soon, and the pause fails with it unless it is
 * already published. Nothing half-written becomes visible (invariant 5).
 * Idempotent; any thread.
 */
void ms_pause_cancel(struct ms_pause *pause);
bool ms_pause_is_cancelled(struct ms_pause *pause);
/*
 * A user of the build's warm memory (a sandbox resumed from it) comes / goes.
 * A failed pause lets go of its memory once no user is left (or failed_hold
 * passed); a healthy one ignores users.
 */
void ms_pause_user_ref(struct ms_pause *pause);
void ms_pause_user_unref(struct ms_pause *pause);
/* Bytes of guest memory this pause still maps. */
uint64_t ms_pause_held_bytes(struct ms_pause *pause);
/*
 * Pauses again from the memory a failed pause still holds (its dirty and empty
 * sets and snapfile): the new pause takes the memory over, the failed one lets
 * go of it (stats.release RETRIED). -EINVAL when failed has not failed,
 * -ENOENT when it no longer holds its memory. config and parent as for
 * ms_pause_start; failed stays the caller's to free.
 */
int ms_pause_retry(const struct ms_pause_config *config, struct ms_layered *parent,
		   struct ms_pause *failed, struct ms_pause **out);
/* Waits for the pipeline to end (published or failed), then frees. */
void ms_pause_free(struct ms_pause *pause);

#endif
