/*
 * pageset.h - sets of page indices (dirty sets, empty sets), over CRoaring.
 *
 * A page index is a device offset divided by the page (or block) size; indices
 * are 32-bit, which covers 16 TiB of 4 KiB pages. Runs are iterated in
 * ascending order, which is the packed layout's order (docs/design.md §1).
 *
 * Thread-safety: none; a set is owned by one thread at a time (concurrent
 * read-only use is fine).
 */
#ifndef MS_UTIL_PAGESET_H
#define MS_UTIL_PAGESET_H

#include <stdbool.h>
#include <stdint.h>

struct ms_pageset;

struct ms_pageset *ms_pageset_new(void);
void ms_pageset_free(struct ms_pageset *set);
struct ms_pageset *ms_pageset_copy(const struct ms_pageset *set);

void ms_pageset_add(struct ms_pageset *set, uint32_t page);
/* Adds [start, end) (end exclusive, end <= 2^32). */
void ms_pageset_add_range(struct ms_pageset *set, uint64_t start, uint64_t end);
void ms_pageset_remove(struct ms_pageset *set, uint32_t page);
void ms_pageset_remove_range(struct ms_pageset *set, uint64_t start, uint64_t end);
bool ms_pageset_contains(const struct ms_pageset *set, uint32_t page);
uint64_t ms_pageset_count(const struct ms_pageset *set);
bool ms_pageset_is_empty(const struct ms_pageset *set);
void ms_pageset_clear(struct ms_pageset *set);
/* set -= other (in place). */
void ms_pageset_subtract(struct ms_pageset *set, const struct ms_pageset *other);
/* set |= other (in place). */
void ms_pageset_union(struct ms_pageset *set, const struct ms_pageset *other);
bool ms_pageset_equal(const struct ms_pageset *a, const struct ms_pageset *b);

/*
 * Run iteration: *cursor starts at 0. Each call returns true with the next
 * maximal run [*start, *start + *len) at or after *cursor, and advances *cursor
 * past it; false when no page is left.
 */
bool ms_pageset_next_run(const struct ms_pageset *set, uint64_t *cursor, uint64_t *start,
			 uint64_t *len);

#endif
