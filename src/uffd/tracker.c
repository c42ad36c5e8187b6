/*
 * tracker.c - per-page state of a restore session (see tracker.h for the lattice).
 *
 * Invariants:
 *  1. Only the event thread writes pages[], always under the write lock.
 *  2. DIRTY is never downgraded by an install; REMOVED is never lifted to CLEAN.
 */
#include "uffd/tracker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int ms_uffd_tracker_init(struct ms_uffd_tracker *t, uint64_t image_size, uint64_t page_size)
{
	memset(t, 0, sizeof(*t));
	if (page_size == 0 || page_size % 4096)
		return -EINVAL;
	uint64_t count = (image_size + page_size - 1) / page_size;
	/* Exported indices are 32-bit 4 KiB pages. */
	if (count * (page_size / 4096) > (1ULL << 32))
		return -EINVAL;
	t->pages = calloc(count ? count : 1, 1);
	if (!t->pages)
		return -ENOMEM;
	int err = -pthread_rwlock_init(&t->lock, NULL);
	if (err) {
		free(t->pages);
		t->pages = NULL;
		return err;
	}
	t->page_count = count;
	t->page_size = page_size;
	return 0;
}

void ms_uffd_tracker_fini(struct ms_uffd_tracker *t)
{
	if (!t->pages)
		return;
	pthread_rwlock_destroy(&t->lock);
	free(t->pages);
	t->pages = NULL;
}

void ms_uffd_tracker_set(struct ms_uffd_tracker *t, uint64_t first, uint64_t count,
			 enum ms_uffd_page_state state)
{
	if (first >= t->page_count)
		return;
	if (count > t->page_count - first)
		count = t->page_count - first;
	pthread_rwlock_wrlock(&t->lock);
	for (uint64_t p = first; p < first + count; p++)
		t->pages[p] = (uint8_t)((t->pages[p] & MS_UFFD_PAGE_INFLIGHT) | state);
	pthread_rwlock_unlock(&t->lock);
}

void ms_uffd_tracker_install(struct ms_uffd_tracker *t, uint64_t page,
			     enum ms_uffd_page_state state)
{
	if (page >= t->page_count)
		return;
	enum ms_uffd_page_state cur = MS_UFFD_PAGE_STATE(t->pages[page]);
	enum ms_uffd_page_state next = state;
	if (cur == MS_UFFD_PAGE_DIRTY)
		next = MS_UFFD_PAGE_DIRTY;
	else if (cur == MS_UFFD_PAGE_REMOVED && state == MS_UFFD_PAGE_CLEAN)
		next = MS_UFFD_PAGE_ZERO;
	if (next == cur)
		return;
	pthread_rwlock_wrlock(&t->lock);
	t->pages[page] = (uint8_t)((t->pages[page] & MS_UFFD_PAGE_INFLIGHT) | next);
	pthread_rwlock_unlock(&t->lock);
}

void ms_uffd_tracker_set_inflight(struct ms_uffd_tracker *t, uint64_t page, bool inflight)
{
	if (page >= t->page_count)
		return;
	/* The flag is private to the event thread, but the byte is shared with readers. */
	pthread_rwlock_wrlock(&t->lock);
	if (inflight)
		t->pages[page] |= MS_UFFD_PAGE_INFLIGHT;
	else
		t->pages[page] &= (uint8_t)~MS_UFFD_PAGE_INFLIGHT;
	pthread_rwlock_unlock(&t->lock);
}

int ms_uffd_tracker_export(struct ms_uffd_tracker *t, struct ms_pageset **dirty,
			   struct ms_pageset **empty)
{
	struct ms_pageset *d = ms_pageset_new();
	struct ms_pageset *e = ms_pageset_new();
	if (!d || !e) {
		ms_pageset_free(d);
		ms_pageset_free(e);
		return -ENOMEM;
	}
	uint64_t per = t->page_size / 4096;
	pthread_rwlock_rdlock(&t->lock);
	uint64_t p = 0;
	while (p < t->page_count) {
		enum ms_uffd_page_state s = MS_UFFD_PAGE_STATE(t->pages[p]);
		bool is_empty = s == MS_UFFD_PAGE_ZERO || s == MS_UFFD_PAGE_REMOVED;
		uint64_t q = p + 1;
		/* Extend the run while the class (dirty / empty / neither) stays the same. */
		while (q < t->page_count) {
			enum ms_uffd_page_state n = MS_UFFD_PAGE_STATE(t->pages[q]);
			bool n_empty = n == MS_UFFD_PAGE_ZERO || n == MS_UFFD_PAGE_REMOVED;
			if ((n == MS_UFFD_PAGE_DIRTY) != (s == MS_UFFD_PAGE_DIRTY) ||
			    n_empty != is_empty)
				break;
			q++;
		}
		if (s == MS_UFFD_PAGE_DIRTY)
			ms_pageset_add_range(d, p * per, q * per);
		else if (is_empty)
			ms_pageset_add_range(e, p * per, q * per);
		p = q;
	}
	pthread_rwlock_unlock(&t->lock);
	*dirty = d;
	*empty = e;
	return 0;
}

void ms_uffd_tracker_count(struct ms_uffd_tracker *t, uint64_t counts[MS_UFFD_PAGE_STATES])
{
	memset(counts, 0, sizeof(uint64_t) * MS_UFFD_PAGE_STATES);
	pthread_rwlock_rdlock(&t->lock);
	for (uint64_t p = 0; p < t->page_count; p++)
		counts[MS_UFFD_PAGE_STATE(t->pages[p])]++;
	pthread_rwlock_unlock(&t->lock);
}
