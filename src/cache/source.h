/*
 * source.h - where a build's bytes are read from: one small vtable with a refcount.
 *
 * The layered file (build/) plans a read against one header snapshot and then
 * reads each segment from a source; it never asks what kind of source it holds
 * (docs/design.md §2). Kinds: a local diff file (cache/file_source.c), zeros
 * (cache/zero_source.c), a storage-backed chunked fetch cached on disk
 * (cache/chunker.h), and, elsewhere, memfd sources and peers.
 *
 * Lifecycle:
 *
 *   open ──ms_source_close()──▶ closed ──last ms_source_unref()──▶ freed
 *
 *  1. A closed source answers every read and slice with MS_ECLOSED: the entry was
 *     evicted between planning and reading, and the caller re-plans (docs/design.md §4.4).
 *     A read that passed the closed check before the close still returns correct
 *     bytes, because mappings live until the last unref, not until close.
 *  2. close may delete the source's files (the diff store's delayed delete);
 *     mapped bytes stay readable by current holders until they unref.
 *  3. A pointer returned by ms_source_slice() is valid until the caller's
 *     ms_source_unref(). It points into a mapping that may fault (bad disk,
 *     truncated file): copy out of it with util/faultsafe.h, never plain memcpy.
 *  4. Every read checks bounds: [off, off + len) must lie inside [0, size).
 *
 * Thread-safety: every function may be called from any thread; implementations
 * are thread-safe. ms_source_close() may be called more than once.
 */
#ifndef MS_CACHE_SOURCE_H
#define MS_CACHE_SOURCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ms_source;

struct ms_source_ops {
	const char *name;
	/* Copies [off, off + len) into dst. Bounds and the closed flag are already checked. */
	int (*read)(struct ms_source *src, void *dst, uint64_t off, size_t len);
	/* Zero-copy view of [off, off + len); -ENOTSUP when there is none. May be NULL. */
	int (*slice)(struct ms_source *src, uint64_t off, size_t len, const void **ptr);
	/*
	 * Optional: a zero-copy view whose lifetime is *hold's (a new reference the caller
	 * unrefs), not src's: for sources whose bytes can go while src lives (a paused
	 * guest's memfd, released under its readers). -ENOTSUP when there is none.
	 */
	int (*borrow)(struct ms_source *src, uint64_t off, size_t len, const void **ptr,
		      struct ms_source **hold);
	/* Every byte of [off, off + len) is present locally; never does I/O. */
	bool (*is_cached)(struct ms_source *src, uint64_t off, size_t len);
	/* Real on-disk usage in bytes (st_blocks * 512); memory-backed sources return 0. */
	uint64_t (*disk_bytes)(struct ms_source *src);
	/* Called once, by the first ms_source_close(): stop work, delete files. May be NULL. */
	void (*close)(struct ms_source *src);
	/* Releases everything; called by the last unref. */
	void (*free)(struct ms_source *src);
};

/* Implementations embed this as their first member and call ms_source_init(). */
struct ms_source {
	const struct ms_source_ops *ops;
	uint64_t size;	    /* immutable */
	atomic_uint refs;   /* lock-free */
	atomic_bool closed; /* lock-free; false -> true once */
};

/* Sets ops and size, one reference, open. */
void ms_source_init(struct ms_source *src, const struct ms_source_ops *ops, uint64_t size);

struct ms_source *ms_source_ref(struct ms_source *src);
/* Drops one reference; the last one frees the source. NULL is ignored. */
void ms_source_unref(struct ms_source *src);

/* 0, MS_ECLOSED, -ERANGE (outside [0, size)), or the implementation's error. */
int ms_source_read(struct ms_source *src, void *dst, uint64_t off, size_t len);
/* *ptr valid until the caller's unref (invariant 3). -ENOTSUP when no zero-copy view exists. */
int ms_source_slice(struct ms_source *src, uint64_t off, size_t len, const void **ptr);
/*
 * A zero-copy view of [off, off + len) valid until ms_source_unref(*hold): the
 * source's borrow, else its slice (*hold: a new reference to src). The errors
 * of ms_source_slice. Copy out of it with util/faultsafe.h (invariant 3).
 */
int ms_source_borrow(struct ms_source *src, uint64_t off, size_t len, const void **ptr,
		     struct ms_source **hold);
uint64_t ms_source_size(const struct ms_source *src);
/* false for a closed source or a range outside [0, size). */
bool ms_source_is_cached(struct ms_source *src, uint64_t off, size_t len);
uint64_t ms_source_disk_bytes(struct ms_source *src);
/* Marks the source closed (later reads: MS_ECLOSED) and runs ops->close once. */
void ms_source_close(struct ms_source *src);
bool ms_source_is_closed(const struct ms_source *src);
const char *ms_source_kind(const struct ms_source *src);

/* A source that reads as size zero bytes; disk_bytes 0. NULL on -ENOMEM. */
struct ms_source *ms_source_zero_new(uint64_t size);

/*
 * A local diff file opened read-only and mapped: every byte is present.
 * delete_on_close: ms_source_close() unlinks path (a file this node owns).
 * NULL on error with *err set (-errno from open/fstat/mmap, -EINVAL).
 */
struct ms_source *ms_source_file_open(const char *path, bool delete_on_close, int *err);

#endif
