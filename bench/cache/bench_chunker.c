/*
 * bench_chunker.c - the chunked source over an fs store.
 *
 *  chunker.cold_read: a fresh chunker reading a whole 64 MiB object (fetch
 *    sessions, cache-file writes, fault-safe copy out) against plain
 *    ms_store_read_range of the same object in 4 MiB pieces.
 *  chunker.cached_read: random 4 KiB page reads from the filled cache against
 *    memcpy of the same pages from a heap buffer.
 * Best of several rounds after a warm-up.
 */
#include "bench.h"
#include "cache/chunker.h"
#include "storage/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE	   (64u << 20)
#define ROUNDS	   3
#define PAGE	   4096u
#define PAGE_READS 200000u

static char dir[] = "/tmp/memsnap-bench-chunker.XXXXXX";

static struct ms_source *open_source(struct ms_store *store, int round)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/cache-%d", dir, round);
	int err;
	return ms_chunker_new(store, "b/memfile", SIZE, NULL, path, NULL, &err);
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

	double best_cold = 1e9, best_store = 1e9;
	struct ms_source *src = NULL;
	for (int r = 0; r < ROUNDS + 1; r++) {
		ms_source_unref(src);
		src = open_source(store, r);
		if (!src)
			return 1;
		double t0 = ms_bench_now();
		if (ms_source_read(src, out, 0, SIZE))
			return 1;
		double t1 = ms_bench_now();
		for (size_t off = 0; off < SIZE; off += 4u << 20) {
			size_t got;
			if (ms_store_read_range(store, "b/memfile", off, out + off, 4u << 20,
						&got) ||
			    got != 4u << 20)
				return 1;
		}
		double t2 = ms_bench_now();
		if (r == 0)
			continue;
		if (t1 - t0 < best_cold)
			best_cold = t1 - t0;
		if (t2 - t1 < best_store)
			best_store = t2 - t1;
	}
	if (memcmp(out, data, SIZE) != 0)
		return 1;

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
		"chunker.cold_read: %.0f MiB/s (store read_range %.0f MiB/s); "
		"chunker.cached_read: %.0f MiB/s (memcpy %.0f MiB/s)\n",
		mib / best_cold, mib / best_store, pages_mib / best_cached,
		pages_mib / best_memcpy);
	ms_bench_report("chunker.cold_read", mib / best_cold, "MiB/s",
			"ms_store_read_range of the same object (fs)", mib / best_store, 0.5);
	ms_bench_report("chunker.cached_read", pages_mib / best_cached, "MiB/s",
			"memcpy of the same 4 KiB pages from the heap", pages_mib / best_memcpy,
			0.5);
	ms_source_unref(src);
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
