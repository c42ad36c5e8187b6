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
 */
#include "uffd/filesource.h"
#include "build/layered.h"

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

const struct ms_page_source_ops ms_layered_page_source_ops = {
    .read = ms_fs_read,
    .classify = ms_fs_classify,
    .size = ms_fs_size,
};
