/*
 * tracker.h - per-page state of one restore session.
 *
 * One byte per page (of the session's page size) over the whole memory image:
 *
 *   NOT_PRESENT --install from source--> CLEAN --WP fault--> DIRTY
 *        |  \--install zeros-----------> ZERO  --WP fault--> DIRTY
 *   any state --REMOVE/UNMAP event--> REMOVED
 *
 * Lattice (E2B's page states): NOT_PRESENT < {ZERO, CLEAN, REMOVED} < DIRTY.
 * A write fault install goes straight to DIRTY. REMOVE moves any state to
 * REMOVED (the page reads as zero afterwards); a later zero install keeps it in
 * the empty set (ZERO), a later write makes it DIRTY.
 *
 * Export for the next pause: dirty = DIRTY; empty = ZERO or REMOVED; CLEAN
 * and NOT_PRESENT are in neither (they still equal the parent layer). Exported
 * sets are in 4 KiB page units even when the session uses 2 MiB pages, because
 * mappings are always in 4 KiB units (docs/design.md §1).
 *
 * Locking: the session's event thread is the only writer and writes under the
 * write lock; it may read without the lock. Any other thread reads under the
 * read lock (ms_uffd_tracker_export, ms_uffd_tracker_count).
 */
#ifndef MS_UFFD_TRACKER_H
#define MS_UFFD_TRACKER_H

#include "util/pageset.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum ms_uffd_page_state {
	MS_UFFD_PAGE_NOT_PRESENT = 0,
	MS_UFFD_PAGE_ZERO,
	MS_UFFD_PAGE_CLEAN,
	MS_UFFD_PAGE_DIRTY,
	MS_UFFD_PAGE_REMOVED,
	MS_UFFD_PAGE_STATES,
};

/* Flag bit kept beside the state: a fetch for this page is in flight (event thread only). */
#define MS_UFFD_PAGE_INFLIGHT 0x80
#define MS_UFFD_PAGE_STATE(b) ((enum ms_uffd_page_state)((b)&0x7f))

struct ms_uffd_tracker {
	pthread_rwlock_t lock; /* guards writes of pages[] against other threads' reads */
	uint8_t *pages;	       /* state | INFLIGHT per page; written by the event thread only */
	uint64_t page_count;
	uint64_t page_size;
};

/* 0, -ENOMEM, -EINVAL (page_size not a multiple of 4 KiB or too many pages). */
int ms_uffd_tracker_init(struct ms_uffd_tracker *t, uint64_t image_size, uint64_t page_size);
void ms_uffd_tracker_fini(struct ms_uffd_tracker *t);

/* Event thread only (no lock needed to read). */
static inline uint8_t ms_uffd_tracker_get(const struct ms_uffd_tracker *t, uint64_t page)
{
	return t->pages[page];
}
/* Event thread only; takes the write lock. Keeps the INFLIGHT bit unless set_flags says. */
void ms_uffd_tracker_set(struct ms_uffd_tracker *t, uint64_t first, uint64_t count,
			 enum ms_uffd_page_state state);
/* Raises pages to state following the lattice: never downgrades DIRTY, never lifts REMOVED
 * to CLEAN (a removed page reads as zero). Event thread only. */
void ms_uffd_tracker_install(struct ms_uffd_tracker *t, uint64_t page,
			     enum ms_uffd_page_state state);
void ms_uffd_tracker_set_inflight(struct ms_uffd_tracker *t, uint64_t page, bool inflight);

/* Any thread: the dirty and empty sets (new sets, caller frees), in 4 KiB units. */
int ms_uffd_tracker_export(struct ms_uffd_tracker *t, struct ms_pageset **dirty,
			   struct ms_pageset **empty);
/* Any thread: counts per state into counts[MS_UFFD_PAGE_STATES]. */
void ms_uffd_tracker_count(struct ms_uffd_tracker *t, uint64_t counts[MS_UFFD_PAGE_STATES]);

#endif
