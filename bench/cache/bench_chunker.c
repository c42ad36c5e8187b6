/*
 * bench_chunker.c - the chunked source over an fs store.
 *
 *  chunker.cold_read: a fresh chunker reading a whole 64 MiB object (fetch
 *    sessions, cache-file writes, fault-safe copy out) against plain
 *    ms_store_read_range of the same object in 4 MiB pieces: the median of 7
 *    rounds that alternate the two (ratio: median over the rounds' ratios).
 *    MEMSNAP_BENCH_SWEEP=1 first prints it for other chunk sizes, piece sizes
 *    and reads in flight per chunk.
 *  chunker.cached_read: random 4 KiB page reads from the filled cache against
 *    memcpy of the same pages from a heap buffer.
 *  build.cold_read_fs: what a cold resume from the file store reads through now,
 *    a plain object read in place (cache/objsource.h: ms_store_local through the
 *    checking wrapper, every 64 KiB block checked against the build's table on
 *    first touch), fresh each round, reading the whole 64 MiB object, against the
 *    same ms_store_read_range (unchecked) in 4 MiB pieces: median ratio of 7
 *    alternating rounds. The chunker above is what the file store's compressed
 *    objects, S3 and peers go through; for a plain local object it would only
 *    write a second copy to the same disk.
 * Best of several rounds after a warm-up.
 */
#include "bench.h"
#include "cache/chunker.h"
#include "cache/objsource.h"
#include "storage/checksums.h"
#include "storage/store.h"
#include "storage/verified.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE	    (64u << 20)
#define ROUNDS	    3
#define COLD_ROUNDS 7
#define PAGE	    4096u
#define PAGE_READS  200000u

static char dir[] = "/tmp/memsnap-bench-chunker.XXXXXX";

static struct ms_source *open_source(struct ms_store *store, int round,
				     const struct ms_chunker_config *cfg)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/cache-%d", dir, round);
	int err;
	return ms_chunker_new(store, "b/memfile", SIZE, NULL, path, cfg, &err);
}

/* The baseline: the whole object by plain ms_store_read_range in 4 MiB pieces; 0 or 1. */
static int raw_read(struct ms_store *store, const char *key, uint8_t *out)
{
	for (size_t off = 0; off < SIZE; off += 4u << 20) {
		size_t got;
		if (ms_store_read_range(store, key, off, out + off, 4u << 20, &got) ||
		    got != 4u << 20)
			return 1;
	}
	return 0;
}

/*
 * Rounds alternating a cold chunker read of everything and plain 4 MiB store reads;
 * medians of both and of their ratio, each round's ratio in ratios[] (rounds of them).
 * The last round's source is left in *last (fully cached). 0, or 1 on an error or
 * wrong bytes.
 */
static int cold_rounds(struct ms_store *store, const uint8_t *data, uint8_t *out,
		       const struct ms_chunker_config *cfg, int rounds, double *cold_s,
		       double *store_s, double *ratio, double *ratios, struct ms_source **last)
{
	double colds[COLD_ROUNDS], stores[COLD_ROUNDS];
	static int serial;
	struct ms_source *src = NULL;
	for (int r = 0; r < rounds; r++) {
		ms_source_unref(src);
		if (!(src = open_source(store, serial++, cfg)))
			return 1;
		double t0 = ms_bench_now();
		if (ms_source_read(src, out, 0, SIZE))
			return 1;
		double t1 = ms_bench_now();
		if (memcmp(out, data, SIZE) != 0)
			return 1;
		double t2 = ms_bench_now();
		if (raw_read(store, "b/memfile", out))
			return 1;
		double t3 = ms_bench_now();
		colds[r] = t1 - t0;
		stores[r] = t3 - t2;
		ratios[r] = stores[r] / colds[r];
	}
	*cold_s = ms_bench_median(colds, rounds);
	*store_s = ms_bench_median(stores, rounds);
	*ratio = ms_bench_median(ratios, rounds);
	if (last)
		*last = src;
	else
		ms_source_unref(src);
	return 0;
}

static void sweep(struct ms_store *store, const uint8_t *data, uint8_t *out)
{
	static const uint64_t chunks[] = {1u << 20, 4u << 20, 16u << 20};
	static const uint64_t pieces[] = {256u << 10, 1u << 20, 4u << 20};
	static const uint32_t parallel[] = {1, 2, 4};
	fprintf(stderr, "%-9s %-9s %-9s %-10s %-10s %s\n", "chunk KiB", "piece KiB", "in-flight",
		"cold MiB/s", "store MiB/s", "ratio (median of 3)");
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++)
		for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++)
			for (size_t l = 0; l < sizeof(parallel) / sizeof(parallel[0]); l++) {
				if (pieces[p] > chunks[c] || (pieces[p] == chunks[c] && l > 0))
					continue;
				struct ms_chunker_config cfg = {.chunk_size = chunks[c],
								.read_size = pieces[p],
								.parallel = parallel[l]};
				double cold, raw, ratio, ratios[3];
				if (cold_rounds(store, data, out, &cfg, 3, &cold, &raw, &ratio,
						ratios, NULL))
					return;
				fprintf(stderr, "%-9llu %-9llu %-9u %-10.0f %-10.0f %.2f\n",
					(unsigned long long)(chunks[c] >> 10),
					(unsigned long long)(pieces[p] >> 10), parallel[l],
					SIZE / 1048576.0 / cold, SIZE / 1048576.0 / raw, ratio);
			}
}

#define OBJ_ID "7d0f4b8e-2a61-4c3e-9f0a-5b8c1e2d3f40"

/*
 * Rounds alternating a fresh in-place source reading everything (checked) and plain
 * 4 MiB store reads; medians and ratios[] (COLD_ROUNDS) as cold_rounds. 0, or 1 on an
 * error or wrong bytes.
 */
static int in_place_rounds(struct ms_store *raw, struct ms_store *checked, const uint8_t *data,
			   uint8_t *out, double *obj_s, double *store_s, double *ratio,
			   double *ratios)
{
	double objs[COLD_ROUNDS], stores[COLD_ROUNDS];
	for (int r = 0; r < COLD_ROUNDS; r++) {
		double t0 = ms_bench_now();
		char path[4096];
		struct ms_sums *sums = NULL;
		int err = ms_store_local(checked, OBJ_ID "/memfile", path, sizeof(path), &sums);
		struct ms_source *src =
		    err ? NULL : ms_source_object_open(path, OBJ_ID "/memfile", SIZE, sums, &err);
		ms_sums_unref(sums);
		if (!src || ms_source_object_checked(src) != 0 || ms_source_read(src, out, 0, SIZE))
			return 1;
		double t1 = ms_bench_now();
		bool all_checked = ms_source_object_checked(src) == SIZE / (64u << 10);
		ms_source_unref(src);
		if (!all_checked || memcmp(out, data, SIZE) != 0)
			return 1;
		double t2 = ms_bench_now();
		if (raw_read(raw, OBJ_ID "/memfile", out))
			return 1;
		double t3 = ms_bench_now();
		objs[r] = t1 - t0;
		stores[r] = t3 - t2;
		ratios[r] = stores[r] / objs[r];
	}
	*obj_s = ms_bench_median(objs, COLD_ROUNDS);
	*store_s = ms_bench_median(stores, COLD_ROUNDS);
	*ratio = ms_bench_median(ratios, COLD_ROUNDS);
	return 0;
}

int main(void)
{
	uint8_t *data = malloc(SIZE), *out = malloc(SIZE);
	if (!data || !out)
		return 1;
	uint64_t x = 1;
	for (size_t i = 0; i < SIZE; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(data + i, &x, 8);
	}
	if (!mkdtemp(dir))
		return 1;
	char objects[160];
	snprintf(objects, sizeof(objects), "%s/objects", dir);
	int err;
	struct ms_store *store = ms_store_fs_new(objects, &err);
	if (!store || ms_store_put_buf(store, "b/memfile", data, SIZE, NULL))
		return 1;

	if (getenv("MEMSNAP_BENCH_SWEEP"))
		sweep(store, data, out);
	double cold, raw, cold_ratio, cold_ratios[COLD_ROUNDS];
	struct ms_source *src = NULL;
	if (cold_rounds(store, data, out, NULL, COLD_ROUNDS, &cold, &raw, &cold_ratio, cold_ratios,
			&src))
		return 1;

	struct ms_chunker_stats st;
	ms_chunker_get_stats(src, &st);
	fprintf(stderr,
		"chunker.cold_read counts (last round): %llu bytes fetched for %u served, in %llu "
		"sessions (%llu by read-ahead), %llu failed\n",
		(unsigned long long)st.fetched_bytes, SIZE, (unsigned long long)st.sessions,
		(unsigned long long)st.readahead, (unsigned long long)st.failures);

	/* src is now fully cached. */
	double best_cached = 1e9, best_memcpy = 1e9;
	uint8_t page[PAGE];
	for (int r = 0; r < ROUNDS + 1; r++) {
		uint64_t y = 7;
		double t0 = ms_bench_now();
		for (unsigned i = 0; i < PAGE_READS; i++) {
			y = y * 6364136223846793005ULL + 1;
			if (ms_source_read(src, page, (y >> 20) % (SIZE / PAGE) * PAGE, PAGE))
				return 1;
		}
		double t1 = ms_bench_now();
		y = 7;
		for (unsigned i = 0; i < PAGE_READS; i++) {
			y = y * 6364136223846793005ULL + 1;
			memcpy(page, data + (y >> 20) % (SIZE / PAGE) * PAGE, PAGE);
			__asm__ volatile("" : : "r"(page) : "memory");
		}
		double t2 = ms_bench_now();
		if (r == 0)
			continue;
		if (t1 - t0 < best_cached)
			best_cached = t1 - t0;
		if (t2 - t1 < best_memcpy)
			best_memcpy = t2 - t1;
	}

	double mib = SIZE / 1048576.0, pages_mib = (double)PAGE_READS * PAGE / 1048576.0;
	fprintf(stderr,
		"chunker.cold_read: %.0f MiB/s (store read_range %.0f MiB/s; median ratio of %d "
		"rounds %.2f); chunker.cached_read: %.0f MiB/s (memcpy %.0f MiB/s)\n",
		mib / cold, mib / raw, COLD_ROUNDS, cold_ratio, pages_mib / best_cached,
		pages_mib / best_memcpy);
	ms_bench_report_spread("chunker.cold_read", mib / cold, "MiB/s",
			       "ms_store_read_range of the same object (fs)", mib / raw, cold_ratio,
			       cold_ratios, COLD_ROUNDS, 0.8);
	ms_bench_report("chunker.cached_read", pages_mib / best_cached, "MiB/s",
			"memcpy of the same 4 KiB pages from the heap", pages_mib / best_memcpy,
			0.5);
	ms_source_unref(src);

	/* The file store's plain object in place, checked against its table. */
	struct ms_sums *sums = ms_sums_new();
	uint8_t *table = NULL;
	size_t table_len = 0;
	struct ms_store *checked = ms_store_verified_new(store, false);
	if (!sums || !checked || ms_sums_add_buf(sums, "memfile", data, SIZE, 64u << 10) ||
	    ms_sums_serialize(sums, &table, &table_len) ||
	    ms_store_put_buf(store, OBJ_ID "/memfile", data, SIZE, NULL) ||
	    ms_store_put_buf(store, OBJ_ID "/checksums", table, table_len, NULL))
		return 1;
	double obj, obj_raw, obj_ratio, obj_ratios[COLD_ROUNDS];
	if (in_place_rounds(store, checked, data, out, &obj, &obj_raw, &obj_ratio, obj_ratios))
		return 1;
	fprintf(stderr,
		"build.cold_read_fs: %.0f MiB/s in place, checked (store read_range %.0f MiB/s; "
		"median ratio of %d rounds %.2f)\n",
		mib / obj, mib / obj_raw, COLD_ROUNDS, obj_ratio);
	ms_bench_report_spread("build.cold_read_fs", mib / obj, "MiB/s",
			       "ms_store_read_range of the same object (fs, unchecked)",
			       mib / obj_raw, obj_ratio, obj_ratios, COLD_ROUNDS, 0.8);
	free(table);
	ms_sums_unref(sums);
	ms_store_free(checked);
	ms_store_remove(store, OBJ_ID "/memfile");
	ms_store_remove(store, OBJ_ID "/checksums");
	ms_store_remove(store, "b/memfile");
	ms_store_free(store);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	free(out);
	free(data);
	return 0;
}
