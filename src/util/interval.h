/*
 * interval.h - the entry of a sorted table of intervals that holds an offset.
 *
 * The header's mappings (device offsets) and a frame table (uncompressed
 * offsets) are both sorted lists of non-overlapping [start, start + length)
 * intervals, searched on every read; this is their one binary search. It is
 * inline so that the caller's accessor inlines into the loop.
 */
#ifndef MS_UTIL_INTERVAL_H
#define MS_UTIL_INTERVAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

/* Interval i of table: its start and its length. */
typedef void (*ms_interval_at_fn)(const void *table, size_t i, uint64_t *start, uint64_t *length);

/* Index of the interval of the count in table that holds off; -ERANGE if none does. */
static inline int ms_interval_find(const void *table, size_t count, uint64_t off,
				   ms_interval_at_fn at, size_t *index)
{
	size_t lo = 0, hi = count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t start, length;
		at(table, mid, &start, &length);
		if (off < start)
			hi = mid;
		else if (off - start >= length)
			lo = mid + 1;
		else {
			*index = mid;
			return 0;
		}
	}
	return -ERANGE;
}

#endif
