/* pageset.c - page sets over CRoaring bitmaps. */
#include "util/pageset.h"

#include <roaring/roaring.h>
#include <stdlib.h>

struct ms_pageset {
	roaring_bitmap_t *bits;
};

struct ms_pageset *ms_pageset_new(void)
{
	struct ms_pageset *set = malloc(sizeof(*set));
	if (!set)
		return NULL;
	set->bits = roaring_bitmap_create();
	if (!set->bits) {
		free(set);
		return NULL;
	}
	return set;
}

void ms_pageset_free(struct ms_pageset *set)
{
	if (!set)
		return;
	roaring_bitmap_free(set->bits);
	free(set);
}

struct ms_pageset *ms_pageset_copy(const struct ms_pageset *set)
{
	struct ms_pageset *copy = malloc(sizeof(*copy));
	if (!copy)
		return NULL;
	copy->bits = roaring_bitmap_copy(set->bits);
	if (!copy->bits) {
		free(copy);
		return NULL;
	}
	return copy;
}

void ms_pageset_add(struct ms_pageset *set, uint32_t page)
{
	roaring_bitmap_add(set->bits, page);
}

void ms_pageset_add_range(struct ms_pageset *set, uint64_t start, uint64_t end)
{
	if (end > (1ULL << 32))
		end = 1ULL << 32;
	if (start < end)
		roaring_bitmap_add_range_closed(set->bits, (uint32_t)start, (uint32_t)(end - 1));
}

void ms_pageset_remove(struct ms_pageset *set, uint32_t page)
{
	roaring_bitmap_remove(set->bits, page);
}

void ms_pageset_remove_range(struct ms_pageset *set, uint64_t start, uint64_t end)
{
	if (end > (1ULL << 32))
		end = 1ULL << 32;
	if (start < end)
		roaring_bitmap_remove_range_closed(set->bits, (uint32_t)start, (uint32_t)(end - 1));
}

bool ms_pageset_contains(const struct ms_pageset *set, uint32_t page)
{
	return roaring_bitmap_contains(set->bits, page);
}

uint64_t ms_pageset_count(const struct ms_pageset *set)
{
	return roaring_bitmap_get_cardinality(set->bits);
}

bool ms_pageset_is_empty(const struct ms_pageset *set)
{
	return roaring_bitmap_is_empty(set->bits);
}

void ms_pageset_clear(struct ms_pageset *set)
{
	roaring_bitmap_clear(set->bits);
}

void ms_pageset_subtract(struct ms_pageset *set, const struct ms_pageset *other)
{
	roaring_bitmap_andnot_inplace(set->bits, other->bits);
}

void ms_pageset_union(struct ms_pageset *set, const struct ms_pageset *other)
{
	roaring_bitmap_or_inplace(set->bits, other->bits);
}

bool ms_pageset_equal(const struct ms_pageset *a, const struct ms_pageset *b)
{
	return roaring_bitmap_equals(a->bits, b->bits);
}

bool ms_pageset_next_run(const struct ms_pageset *set, uint64_t *cursor, uint64_t *start,
			 uint64_t *len)
{
	if (*cursor > UINT32_MAX)
		return false;
	roaring_uint32_iterator_t it;
	roaring_init_iterator(set->bits, &it);
	if (!roaring_move_uint32_iterator_equalorlarger(&it, (uint32_t)*cursor))
		return false;
	uint64_t first = it.current_value;
	uint64_t last = first;
	/* Extend the run page by page; runs are what the caller consumes anyway. */
	while (roaring_advance_uint32_iterator(&it) && it.current_value == last + 1)
		last = it.current_value;
	*start = first;
	*len = last - first + 1;
	*cursor = last + 1;
	return true;
}
