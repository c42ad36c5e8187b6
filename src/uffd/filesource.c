/*
 * filesource.c - the production page source: a layered file (build/).
 *
 * classify() answers a whole batch block from one header snapshot
 * (ms_layered_page_flags): nil pages are ZERO, pages whose build's source holds
 * them locally (the memfd of a warm resume, a local diff file, cached chunks)
 * are LOCAL, the rest REMOTE; each with where it is (memfd, local, peer, store,
 * zero) for the fault-latency histogram (a file store's object read in place is
 * LOCAL, from the store). LOCAL faults are served inline on the page
 * server's event thread; before this answer existed every warm fault went
 * through a worker and two thread hand-offs.
 *
 * slice() is ms_layered_slice: a view when the range is one header run whose
 * source holds it (a paused guest's memfd view, a diff file, a file store's
 * object read in place); the hold is that source reference. It never fetches.
 * A chunker's cached chunks are not sliced: its slice skips what a cached read
 * does, sliding the read-ahead window (ms_chunker_hit), so a fault stream over
 * cached chunks would stop pulling the next ones in (bench_cold_s3's cold_fs
 * "through the chunker": 652 vs 748 MiB/s, medians of 5 runs, within this
 * machine's run-to-run noise of ~15%); they are read, as before.
 */
#include "uffd/filesource.h"
#include "build/layered.h"
#include "cache/chunker.h"
#include "cache/source.h"

#include <errno.h>

static int ms_fs_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	return ms_layered_read(ctx, dst, off, len);
}

static void ms_fs_classify(void *ctx, uint64_t off, uint64_t page_size, size_t npages,
			   uint8_t *kinds)
{
	ms_layered_page_flags(ctx, off, page_size, npages, kinds);
	for (size_t i = 0; i < npages; i++) {
		uint8_t f = kinds[i];
		unsigned kind = f & MS_LAYERED_PAGE_NIL	     ? MS_PAGE_ZERO
				: f & MS_LAYERED_PAGE_CACHED ? MS_PAGE_LOCAL
							     : MS_PAGE_REMOTE;
		unsigned from = f & MS_LAYERED_PAGE_NIL	     ? MS_PAGE_FROM_ZERO
				: f & MS_LAYERED_PAGE_MEMFD  ? MS_PAGE_FROM_MEMFD
				: f & MS_LAYERED_PAGE_STORE  ? MS_PAGE_FROM_STORE
				: f & MS_LAYERED_PAGE_CACHED ? MS_PAGE_FROM_LOCAL
				: f & MS_LAYERED_PAGE_PEER   ? MS_PAGE_FROM_PEER
							     : MS_PAGE_FROM_STORE;
		kinds[i] = (uint8_t)(kind | from << MS_PAGE_FROM_SHIFT);
	}
}

static uint64_t ms_fs_size(void *ctx)
{
	return ms_layered_size(ctx);
}

static int ms_fs_slice(void *ctx, uint64_t off, size_t len, const void **ptr, void **hold)
{
	struct ms_source *src = NULL;
	int err = ms_layered_slice(ctx, off, len, ptr, &src);
	if (!err && ms_source_is_chunker(src)) {
		ms_source_unref(src); /* read instead: the read slides the read-ahead (above) */
		return -ENOTSUP;
	}
	*hold = src;
	return err;
}

static void ms_fs_unhold(void *ctx, void *hold)
{
	(void)ctx;
	ms_source_unref(hold);
}

const struct ms_page_source_ops ms_layered_page_source_ops = {
    .read = ms_fs_read,
    .classify = ms_fs_classify,
    .size = ms_fs_size,
    .slice = ms_fs_slice,
    .unhold = ms_fs_unhold,
};
