/*
 * pagesource.h - the PAGE source: what the page server reads guest-memory
 * pages from, by device offset.
 *
 * Not to be confused with the BUILD source (cache/source.h, struct ms_source):
 * that one holds one build's bytes at storage offsets and is what the layered
 * file reads each planned segment from. A page source sits above the layered
 * file: the production one (uffd/filesource.c) is a layered file; tests and
 * benches implement it over a memory buffer and over slow or failing wrappers.
 * Offsets are device offsets into one memory image [0, size).
 *
 * Contract:
 *  1. read() may block (network) and must be thread-safe: the page server calls
 *     it from several worker threads at once. It fills dst completely or fails;
 *     a failure is retried by the page server (4 attempts, backoff 50 ms doubling
 *     to 500 ms), so a source need not retry itself.
 *  2. classify() is an optional hint (NULL = every page REMOTE) and must be
 *     cheap and non-blocking: the event thread calls it inline, once per fault
 *     for the fault's whole batch block. It answers every page of the block from
 *     one consistent view (the layered file: one header snapshot), so a block's
 *     plan never mixes two headers' answers.
 *  3. size() is constant for the source's lifetime.
 *  4. slice() is optional (NULL = every install copies out of a read): a zero-copy
 *     view of [off, off + len) that the page server hands straight to
 *     UFFDIO_COPY, saving the read's copy into a buffer. It must be cheap and
 *     non-blocking and never fetch (the event thread calls it inline for LOCAL
 *     jobs; workers call it too), and thread-safe. It answers -ENOTSUP (or any
 *     negative errno) when there is no view of the whole range - not held
 *     locally, more than one piece, zeros - and the page server reads instead.
 *     *ptr stays valid until unhold(ctx, *hold) (unhold may be NULL: nothing to
 *     release; it may be called on another thread than the slice). The view may
 *     be a mapping that cannot be read (a truncated file, a bad disk): the page
 *     server never reads it itself, only the kernel's copy does, which fails
 *     with -EFAULT instead of raising a signal; such an install goes back to
 *     the read path (whose copy is fault-safe).
 */
#ifndef MS_UFFD_PAGESOURCE_H
#define MS_UFFD_PAGESOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What classify() says of one page. */
enum ms_page_kind {
	MS_PAGE_REMOTE = 0, /* holds data; a read may wait on the network: served by a worker */
	MS_PAGE_LOCAL,	    /* holds data in memory or on local disk (present and cached): a
			       fault on it is served inline on the event thread, no hand-off */
	MS_PAGE_ZERO,	    /* reads as zeros without any I/O (the nil build) */
	MS_PAGE_ABSENT,	    /* not in the image: never batched as a neighbour of a fault */
};

/*
 * Where a page's bytes come from, for the fault-latency histogram: classify() may
 * add one of these in the high nibble of a kind (kind | from << MS_PAGE_FROM_SHIFT);
 * MS_PAGE_KIND() takes the kind back. UNKNOWN (0) when the source does not say.
 */
enum ms_page_from {
	MS_PAGE_FROM_UNKNOWN = 0,
	MS_PAGE_FROM_MEMFD, /* a paused guest's memory on this node */
	MS_PAGE_FROM_LOCAL, /* a local diff file or cached chunks */
	MS_PAGE_FROM_PEER,  /* another node */
	MS_PAGE_FROM_STORE, /* the object store */
	MS_PAGE_FROM_ZERO,  /* no I/O: reads as zeros */
	MS_PAGE_FROMS,
};
#define MS_PAGE_FROM_SHIFT 4
#define MS_PAGE_KIND(k)	   ((k) & ((1u << MS_PAGE_FROM_SHIFT) - 1))
#define MS_PAGE_FROM(k)	   ((k) >> MS_PAGE_FROM_SHIFT)

struct ms_page_source_ops {
	/* Reads len bytes at device offset off into dst. 0 or a negative errno / MS_E*. */
	int (*read)(void *ctx, void *dst, uint64_t off, size_t len);
	/* Optional: kinds[i] = enum ms_page_kind of the page at off + i * page_size, for
	 * i < npages (off page aligned), optionally with its enum ms_page_from (above). */
	void (*classify)(void *ctx, uint64_t off, uint64_t page_size, size_t npages,
			 uint8_t *kinds);
	/* Size of the memory image in bytes. */
	uint64_t (*size)(void *ctx);
	/* Optional (contract 4): *ptr = a view of len bytes at device offset off (page
	 * aligned), valid until unhold(ctx, *hold). 0 or a negative errno (-ENOTSUP). */
	int (*slice)(void *ctx, uint64_t off, size_t len, const void **ptr, void **hold);
	/* Releases a slice's hold; may be NULL (slices need no release). Any thread. */
	void (*unhold)(void *ctx, void *hold);
};

#endif
