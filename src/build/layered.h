/*
 * layered.h - the layered file: one device (guest memory or rootfs) read
 * through its current header, each segment from its build's source.
 *
 * A layered file holds an atomic header pointer. A read plans from ONE header
 * snapshot (docs/design.md §5.3): each mapping segment -> (build id, offset in
 * build) -> a source from the resolver (the diff store); nil segments are
 * zero-filled. If a source reports MS_ECLOSED (evicted between planning and
 * reading), the whole read is re-planned against the then-current header:
 * reads are idempotent.
 *
 * Headers are shared as refcounted snapshots (struct ms_header_ref): a reader
 * keeps its snapshot alive while it reads, so a swap never frees a header
 * under a reader.
 *
 * Swaps: ms_layered_swap() is unconditional (publish, docs/design.md §5.5);
 * ms_layered_swap_if_current() is the compare-and-swap the pause pipeline uses
 * to leave the provisional header (a late swap over a newer header does nothing).
 *
 * Durable header (docs/design.md §5.4): the newest header that may leave the node.
 * When the live header is complete (not incomplete) it is durable; otherwise
 * the durable header comes from an optional future (set by the pause pipeline),
 * whose value is a struct ms_header_ref *.
 *
 * Thread-safety: all functions may be called from any thread. lock guards only
 * the header pointer and the future pointer; reads never hold it while reading.
 */
#ifndef MS_BUILD_LAYERED_H
#define MS_BUILD_LAYERED_H

#include "cache/source.h"
#include "header/header.h"
#include "util/future.h"

#include <stdbool.h>
#include <stdint.h>

/* An immutable header shared by reference. */
struct ms_header_ref {
	struct ms_header *header; /* owned; never modified after wrapping */
	atomic_uint refs;
};

/* Wraps header (ownership taken) with one reference. NULL on -ENOMEM (header freed). */
struct ms_header_ref *ms_header_ref_new(struct ms_header *header);
struct ms_header_ref *ms_header_ref_ref(struct ms_header_ref *ref);
void ms_header_ref_unref(struct ms_header_ref *ref);
/* The destructor to give ms_future_new() for a future whose value is a header ref. */
void ms_header_ref_free_value(void *value);

/*
 * Returns (in *out, one reference) the source holding build_id's data for this
 * file; 0 or an error. Called for non-nil builds only, from reader threads.
 */
typedef int (*ms_layered_resolve_fn)(void *ctx, const ms_uuid *build_id,
				     const struct ms_header *header, struct ms_source **out);

struct ms_layered;

/* header: ownership taken (also on failure). NULL on -ENOMEM. */
struct ms_layered *ms_layered_new(struct ms_header *header, ms_layered_resolve_fn resolve,
				  void *ctx);
void ms_layered_free(struct ms_layered *file);

/* The current header snapshot (one reference). Never NULL. */
struct ms_header_ref *ms_layered_header(struct ms_layered *file);
uint64_t ms_layered_size(struct ms_layered *file);

/* Reads [off, off + len) (page aligned or not; within size). 0 or an error. */
int ms_layered_read(struct ms_layered *file, void *dst, uint64_t off, size_t len);
/* Re-plans so far (reads that met a closed source); for tests and metrics. */
uint64_t ms_layered_replans(struct ms_layered *file);
/*
 * Whether [off, off + len) can be read without fetching: every byte maps to nil
 * or to a source that holds it locally (ms_source_is_cached), by the current
 * header. Never fetches; false when a source cannot even be resolved.
 */
bool ms_layered_is_cached(struct ms_layered *file, uint64_t off, size_t len);
/*
 * Per-page flags of the npages pages of page_size bytes from off (page aligned),
 * all from ONE header snapshot: MS_LAYERED_PAGE_NIL (maps to the nil build: reads
 * as zeros), MS_LAYERED_PAGE_CACHED (its source holds it locally), 0 (must be
 * fetched, or past the end), plus MEMFD / PEER for where it is. Never fetches. The page server
 * plans a fault's whole block with one call.
 */
#define MS_LAYERED_PAGE_NIL    1
#define MS_LAYERED_PAGE_CACHED 2
/* Where the page's bytes are (with the flags above; for the fault-latency histogram):
 * MEMFD: a paused guest's memory on this node; PEER: read through another node (its
 * routing source); STORE: the store's own object, read in place (cache/objsource.h:
 * CACHED too, no fetch). A page with none of them, not CACHED and not NIL, comes from
 * the store through a fetch; CACHED alone is a local diff file or fetched chunks. */
#define MS_LAYERED_PAGE_MEMFD 4
#define MS_LAYERED_PAGE_PEER  8
#define MS_LAYERED_PAGE_STORE 16
void ms_layered_page_flags(struct ms_layered *file, uint64_t off, uint64_t page_size, size_t npages,
			   uint8_t *flags);
/*
 * A zero-copy view of [off, off + len) when the current header maps all of it to
 * one run of one source that offers slices; *hold keeps that source, and so the
 * view, alive until ms_source_unref(*hold). -ENOTSUP (or the source's error)
 * otherwise: read instead. Never fetches.
 */
struct ms_source;
int ms_layered_slice(struct ms_layered *file, uint64_t off, size_t len, const void **ptr,
		     struct ms_source **hold);

/* Installs header (ownership taken) unconditionally. 0, -ENOMEM, or -EINVAL for another
 * size (then the caller keeps header). */
int ms_layered_swap(struct ms_layered *file, struct ms_header *header);
/*
 * Installs header only if the current snapshot is expected. 0 when swapped;
 * -EAGAIN when the current header is another one (then header is untouched and
 * still the caller's). On -ENOMEM header is freed.
 */
int ms_layered_swap_if_current(struct ms_layered *file, const struct ms_header_ref *expected,
			       struct ms_header *header);

/* Sets the future that yields the durable header (a reference is taken). */
void ms_layered_set_durable_future(struct ms_layered *file, struct ms_future *future);
/*
 * The durable header: the live one at once when it is complete; else waits for
 * the future (timeout_ns < 0: forever). -ETIMEDOUT, the future's error, or
 * -ENOENT when the live header is incomplete and no future is set.
 */
int ms_layered_durable_header(struct ms_layered *file, int64_t timeout_ns,
			      struct ms_header_ref **out);
/* Never waits: the durable header, or NULL while it is pending. */
struct ms_header_ref *ms_layered_durable_header_now(struct ms_layered *file);

#endif
