/*
 * bench_header.c - header.merge_1m: merge + normalize of a diff over a
 * fragmented 1 M-entry parent, against one memcpy of the entry arrays (the
 * least any merge must do: read the parent and write the child).
 */
#include "bench.h"
#include "header/mapping.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENTRIES (1u << 20)
#define ROUNDS	5

int main(void)
{
	ms_uuid a, b;
	ms_uuid_generate(&a);
	ms_uuid_generate(&b);
	/* a fragmented parent: 1 Mi single-page entries alternating between builds and nil */
	struct ms_mappings parent = {0}, diff = {0};
	for (uint64_t i = 0; i < ENTRIES; i++) {
		struct ms_mapping e = {i * MS_PAGE_SIZE, MS_PAGE_SIZE, (i % 3) ? a : MS_UUID_NIL,
				       (i / 2) * 2 * MS_PAGE_SIZE};
		if (ms_mappings_push(&parent, &e))
			return 1;
	}
	/* a diff dirtying ~10 % of the pages in short runs */
	uint64_t storage = 0;
	for (uint64_t i = 0; i < ENTRIES; i += 37) {
		uint64_t len = 1 + i % 4;
		struct ms_mapping e = {i * MS_PAGE_SIZE, len * MS_PAGE_SIZE, b, storage};
		storage += e.length;
		if (ms_mappings_push(&diff, &e))
			return 1;
	}
	double best_merge = 1e9, best_copy = 1e9;
	size_t out_count = 0;
	struct ms_mapping *copy = malloc((parent.count + diff.count) * sizeof(*copy));
	for (int r = 0; r < ROUNDS; r++) {
		/* baseline: one memcpy of both entry arrays */
		double t0 = ms_bench_now();
		memcpy(copy, parent.entries, parent.count * sizeof(*copy));
		memcpy(copy + parent.count, diff.entries, diff.count * sizeof(*copy));
		double t1 = ms_bench_now();
		if (t1 - t0 < best_copy)
			best_copy = t1 - t0;
		struct ms_mappings merged, normal;
		t0 = ms_bench_now();
		if (ms_mappings_merge(&parent, &diff, &merged) ||
		    ms_mappings_normalize(&merged, &normal))
			return 1;
		t1 = ms_bench_now();
		if (t1 - t0 < best_merge)
			best_merge = t1 - t0;
		out_count = normal.count;
		if (ms_mappings_validate(&normal, ENTRIES * MS_PAGE_SIZE))
			return 1;
		ms_mappings_fini(&merged);
		ms_mappings_fini(&normal);
	}
	fprintf(stderr,
		"header.merge_1m: %zu + %zu entries -> %zu; merge+normalize %.2f ms, "
		"memcpy %.2f ms\n",
		parent.count, diff.count, out_count, best_merge * 1e3, best_copy * 1e3);
	ms_bench_report("header.merge_1m", best_merge * 1e3, "ms", "memcpy of the entry arrays",
			best_copy * 1e3, 20);
	free(copy);
	ms_mappings_fini(&parent);
	ms_mappings_fini(&diff);
	return 0;
}
