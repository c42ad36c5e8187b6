/*
 * source.h - what the page server reads guest-memory pages from.
 *
 * The layered file (build/) implements this later; tests implement it over a
 * memory buffer and over slow or failing wrappers. Offsets are device offsets
 * into one memory image [0, size).
 *
 * Contract:
 *  1. read() may block (network) and must be thread-safe: the page server calls
 *     it from several worker threads at once. It fills dst completely or fails;
 *     a failure is retried by the page server (4 attempts, backoff 50 ms doubling
 *     to 500 ms), so a source need not retry itself.
 *  2. is_zero, is_present and is_cached are optional hints (NULL = unknown) and
 *     must be cheap and non-blocking: the event thread calls them inline.
 *  3. size() is constant for the source's lifetime.
 */
#ifndef MS_UFFD_SOURCE_H
#define MS_UFFD_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ms_page_source_ops {
	/* Reads len bytes at device offset off into dst. 0 or a negative errno / MS_E*. */
	int (*read)(void *ctx, void *dst, uint64_t off, size_t len);
	/* Optional: true when [off, off+len) is known to read as zeros without I/O (nil build). */
	bool (*is_zero)(void *ctx, uint64_t off, size_t len);
	/* Optional: true when the page at off is present in the image (block batching installs
	 * only present neighbours of a faulting page). NULL = every page is present. */
	bool (*is_present)(void *ctx, uint64_t off);
	/* Optional: true when a read of [off, off+len) completes from memory or local disk without
	 * waiting on the network. Such faults are served inline on the event thread, which saves
	 * two thread hand-offs per fault; all others go to the worker pool. NULL = never. */
	bool (*is_cached)(void *ctx, uint64_t off, size_t len);
	/* Size of the memory image in bytes. */
	uint64_t (*size)(void *ctx);
};

#endif
