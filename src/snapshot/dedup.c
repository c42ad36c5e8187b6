/* dedup.c - compare dirty pages with the parent; drain the survivors packed. */
#include "snapshot/dedup.h"
#include "cache/source.h"
#include "util/cancel.h"
#include "util/err.h"
#include "util/faultsafe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define P MS_PAGE_SIZE

/* Parent pages are read in runs of up to this many pages: one plan per run. */
#define MS_COMPARE_BATCH 64 /* pages: one uint64_t mask per batch (ms_classify) */
_Static_assert(MS_COMPARE_BATCH <= 64, "a batch is classified into 64-bit masks");

struct ms_compare_ctx {
	const struct ms_pageset *dirty;
	struct ms_layered *parent;
	const atomic_bool *cancel; /* may be NULL */
	bool best_effort;	   /* parent pages not held locally are kept, not fetched */
	struct ms_dedup_result *out;
	uint64_t pages;
	uint8_t *parent_buf; /* MS_COMPARE_BATCH pages */
};

/*
 * A parent page that maps to nil reads as zeros here; a non-zero guest page
 * never equals it, so it is kept, as "parent nil -> kept" requires, without a
 * per-page header lookup.
 */
/*
 * One batch whose parent bytes (if any) are all at hand, classified in one
 * protected run that touches only memory: bit i of empty/keep is page first + i.
 */
struct ms_classify {
	const uint8_t *pages, *parent_pages; /* parent_pages NULL: no parent */
	uint64_t n;			     /* <= 64 */
	uint64_t empty, keep, equal;
};

static int ms_classify_fn(void *arg)
{
	struct ms_classify *k = arg;
	for (uint64_t i = 0; i < k->n; i++) {
		const uint8_t *page = k->pages + i * P;
		if (ms_mem_is_zero(page, P))
			k->empty |= 1ULL << i;
		else if (k->parent_pages && memcmp(page, k->parent_pages + i * P, P) == 0)
			k->equal++;
		else
			k->keep |= 1ULL << i;
	}
	return 0;
}

/* Adds the runs of set bits of mask (bit i: page first + i) to set. */
static void ms_add_mask(struct ms_pageset *set, uint64_t first, uint64_t mask)
{
	while (mask) {
		unsigned lo = (unsigned)__builtin_ctzll(mask);
		uint64_t rest = ~(mask >> lo);
		unsigned run = rest ? (unsigned)__builtin_ctzll(rest) : 64 - lo;
		ms_pageset_add_range(set, first + lo, first + lo + run);
		mask = run + lo >= 64 ? 0 : mask & ~(((1ULL << run) - 1) << lo);
	}
}

/* Pages [batch, batch + n) of one dirty run. */
static int ms_compare_batch(struct ms_compare_ctx *c, const uint8_t *mapping, uint64_t batch,
			    uint64_t n)
{
	int err = 0;
	/* best effort: a batch not all held locally is compared page by page, the pages
	 * not held are kept */
	bool whole =
	    c->parent && (!c->best_effort || ms_layered_is_cached(c->parent, batch * P, n * P));
	/* the parent's bytes in place when its source has them mapped, else a copy */
	const uint8_t *parent_pages = c->parent_buf;
	struct ms_source *hold = NULL;
	if (whole && ms_layered_slice(c->parent, batch * P, n * P, (const void **)&parent_pages,
				      &hold) != 0) {
		parent_pages = c->parent_buf;
		if ((err = ms_layered_read(c->parent, c->parent_buf, batch * P, n * P)))
			return err;
	}
	if (whole || !c->parent) { /* every byte at hand: one protected run for the batch */
		struct ms_classify k = {.pages = mapping + batch * P,
					.parent_pages = c->parent ? parent_pages : NULL,
					.n = n};
		err = ms_faultsafe_call(ms_classify_fn, &k);
		ms_source_unref(hold);
		if (err)
			return err;
		c->out->dirty_pages += n;
		c->out->equal_pages += k.equal;
		ms_add_mask(c->out->empty, batch, k.empty);
		ms_add_mask(c->out->keep, batch, k.keep);
		return 0;
	}
	for (uint64_t i = 0; i < n && !err; i++) {
		const uint8_t *page = mapping + (batch + i) * P;
		bool zero, equal = false, have = whole;
		if ((err = ms_faultsafe_is_zero(page, P, &zero)))
			break;
		c->out->dirty_pages++;
		if (zero) {
			ms_pageset_add(c->out->empty, (uint32_t)(batch + i));
			continue;
		}
		if (c->parent && !whole && ms_layered_is_cached(c->parent, (batch + i) * P, P)) {
			if ((err = ms_layered_read(c->parent, c->parent_buf + i * P,
						   (batch + i) * P, P)))
				break;
			have = true;
		}
		if (have && (err = ms_faultsafe_equal(page, parent_pages + i * P, P, &equal)))
			break;
		if (equal)
			c->out->equal_pages++;
		else
			ms_pageset_add(c->out->keep, (uint32_t)(batch + i));
	}
	ms_source_unref(hold);
	return err;
}

static int ms_compare_fn(void *ctx, const uint8_t *mapping)
{
	struct ms_compare_ctx *c = ctx;
	uint64_t cursor = 0, start, len;
	while (ms_pageset_next_run(c->dirty, &cursor, &start, &len)) {
		if (start + len > c->pages)
			return -ERANGE; /* a dirty page past the memory */
		for (uint64_t batch = start; batch < start + len; batch += MS_COMPARE_BATCH) {
			uint64_t n = start + len - batch < MS_COMPARE_BATCH ? start + len - batch
									    : MS_COMPARE_BATCH;
			if (c->cancel && atomic_load(c->cancel))
				return MS_ECANCELED; /* between batches: fetches stop too */
			int err = ms_compare_batch(c, mapping, batch, n);
			if (err)
				return err;
		}
	}
	return 0;
}

void ms_dedup_result_fini(struct ms_dedup_result *result)
{
	ms_pageset_free(result->keep);
	ms_pageset_free(result->empty);
	memset(result, 0, sizeof(*result));
}

int ms_dedup_compare(struct ms_memfd *memfd, const struct ms_pageset *dirty,
		     struct ms_layered *parent, enum ms_dedup_mode mode, const atomic_bool *cancel,
		     struct ms_dedup_result *out)
{
	memset(out, 0, sizeof(*out));
	out->keep = mode == MS_DEDUP_OFF ? ms_pageset_copy(dirty) : ms_pageset_new();
	out->empty = ms_pageset_new();
	if (!out->keep || !out->empty) {
		ms_dedup_result_fini(out);
		return -ENOMEM;
	}
	if (mode == MS_DEDUP_OFF) { /* every dirty page is kept as it is */
		out->dirty_pages = ms_pageset_count(dirty);
		return 0;
	}
	struct ms_compare_ctx c = {
	    .dirty = dirty,
	    .parent = parent,
	    .cancel = cancel,
	    .best_effort = mode == MS_DEDUP_BEST_EFFORT,
	    .out = out,
	    .pages = ms_memfd_size(memfd) / P,
	    .parent_buf = parent ? malloc(MS_COMPARE_BATCH * P) : NULL,
	};
	/* the parent's fetches below (a chunk read from the store) see the token too */
	const atomic_bool *outer = ms_cancel_swap(cancel);
	int err =
	    parent && !c.parent_buf ? -ENOMEM : ms_memfd_with_mapping(memfd, ms_compare_fn, &c);
	ms_cancel_swap(outer);
	free(c.parent_buf);
	if (err)
		ms_dedup_result_fini(out);
	return err;
}

/* ---- drain ---- */

struct ms_drain_ctx {
	const struct ms_pageset *keep;
	int fd;
	uint64_t pages;
	uint64_t written;
};

/* Writes iov[0..count) fully at offset, advancing over short writes. */
static int ms_pwritev_all(int fd, struct iovec *iov, int count, off_t offset, uint64_t *written)
{
	while (count > 0) {
		ssize_t n = pwritev(fd, iov, count, offset);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		offset += n;
		*written += (uint64_t)n;
		while (count > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			count--;
		}
		if (count > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int ms_drain_fn(void *ctx, const uint8_t *mapping)
{
	struct ms_drain_ctx *c = ctx;
	struct iovec iov[64];
	int count = 0;
	off_t batch_offset = 0;
	uint64_t pending = 0;
	uint64_t cursor = 0, start, len;
	while (ms_pageset_next_run(c->keep, &cursor, &start, &len)) {
		if (start + len > c->pages)
			return -ERANGE;
		/* runs are not merged across gaps: each is one iovec, at most 1 GiB */
		for (uint64_t done = 0; done < len;) {
			uint64_t n = len - done > (1u << 18) ? (1u << 18) : len - done;
			iov[count].iov_base = (void *)(mapping + (start + done) * P);
			iov[count].iov_len = n * P;
			count++;
			pending += n * P;
			done += n;
			if (count == 64) {
				int err =
				    ms_pwritev_all(c->fd, iov, count, batch_offset, &c->written);
				if (err)
					return err;
				batch_offset += (off_t)pending;
				pending = 0;
				count = 0;
			}
		}
	}
	if (count)
		return ms_pwritev_all(c->fd, iov, count, batch_offset, &c->written);
	return 0;
}

int ms_dedup_drain(struct ms_memfd *memfd, const struct ms_pageset *keep, const char *path,
		   uint64_t *written)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	struct ms_drain_ctx c = {.keep = keep, .fd = fd, .pages = ms_memfd_size(memfd) / P};
	int err = ms_memfd_with_mapping(memfd, ms_drain_fn, &c);
	if (!err && fsync(fd))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (err) {
		unlink(path); /* never leave a partial diff */
		return err;
	}
	if (written)
		*written = c.written;
	return 0;
}
