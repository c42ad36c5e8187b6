/*
 * dedup.h - the two halves of a pause's dedup (docs/design.md §3 steps 3-5).
 *
 * compare: every dirty page of the captured memory at 4 KiB: all-zero -> empty
 * (becomes nil); parent page nil -> kept; best effort and the parent page not
 * held locally -> kept without fetching it; otherwise compared with the parent's
 * bytes (read through the parent's layered file), equal -> dropped (the page
 * keeps the parent mapping). Reading the captured memory is fault-safe: a
 * SIGBUS is an error, not a crash.
 *
 * drain: the survivors written, packed in ascending device order, into the
 * diff file with pwritev straight from the memory mapping; short writes and
 * EINTR handled; on error the partial file is removed.
 */
#ifndef MS_SNAPSHOT_DEDUP_H
#define MS_SNAPSHOT_DEDUP_H

#include "build/layered.h"
#include "snapshot/memfd.h"
#include "util/pageset.h"

#include <stdatomic.h>
#include <stdint.h>

struct ms_dedup_result {
	struct ms_pageset *keep;  /* survivors: written to the diff */
	struct ms_pageset *empty; /* all-zero pages: mapped to nil */
	uint64_t dirty_pages;	  /* compared */
	uint64_t equal_pages;	  /* dropped: equal to the parent */
};

/* How a pause dedups; the zero value is the default. */
enum ms_dedup_mode {
	MS_DEDUP_BEST_EFFORT = 0, /* compare with parent pages held locally; the others are
				     kept without fetching them */
	MS_DEDUP_FULL,		  /* compare with every parent page, fetching what it must */
	MS_DEDUP_OFF,		  /* no compare: every dirty page is kept (zero ones too) */
};

/*
 * Compares dirty pages (4 KiB indices) of memfd against parent (NULL: no
 * parent, every non-zero page is kept) as mode says. cancel (may be NULL) is
 * looked at between batches: set, the compare stops with MS_ECANCELED. On
 * success the result's sets are new (free them with ms_dedup_result_fini); on
 * error nothing is returned.
 */
int ms_dedup_compare(struct ms_memfd *memfd, const struct ms_pageset *dirty,
		     struct ms_layered *parent, enum ms_dedup_mode mode, const atomic_bool *cancel,
		     struct ms_dedup_result *out);
void ms_dedup_result_fini(struct ms_dedup_result *result);

/* Writes the survivors packed into a new file at path (must not exist). */
int ms_dedup_drain(struct ms_memfd *memfd, const struct ms_pageset *keep, const char *path,
		   uint64_t *written);

#endif
