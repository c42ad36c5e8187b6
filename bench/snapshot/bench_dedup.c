/*
 * bench_dedup.c - the pause pipeline's costs, each against a baseline of the
 * same run:
 *  dedup.compare_vs_memcmp  compare of 256 MiB of dirty pages against a parent
 *                           (half equal) vs plain memcmp of the same pages
 *                           where the compare reads them (the guest memfd and
 *                           the parent file, both mapped, warm);
 *  dedup.compare_memfd_parent_vs_file  the same compare with the parent still in
 *                           a memfd (identity source, zero-copy views) vs over its file;
 *  dedup.drain_vs_pwritev   drain of the survivors (runs of 1..16 pages) vs one
 *                           pwrite of as many bytes from a buffer;
 *  pause.latency_10pct/90pct  ms_pause_start (stop -> resumable) with 10 % and
 *                           90 % of 256 MiB dirty: it must not grow with dirty bytes.
 */
#include "bench.h"
#include "build/layered.h"
#include "snapshot/dedup.h"
#include "snapshot/pause.h"
#include "storage/artifact.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIZE  (256ull << 20)
#define PAGES (SIZE / 4096)
#define P     4096

static int resolve_one(void *ctx, const ms_uuid *id, const struct ms_header *h,
		       struct ms_source **out)
{
	(void)id;
	(void)h;
	*out = ms_source_ref(ctx);
	return 0;
}

static int make_memfd(const uint8_t *content)
{
	int fd = memfd_create("bench", MFD_CLOEXEC);
	if (ftruncate(fd, SIZE) || pwrite(fd, content, SIZE, 0) != (ssize_t)SIZE)
		exit(1);
	return fd;
}

int main(void)
{
	char dir[] = "/tmp/memsnap-bench-dedup.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	uint8_t *parent_bytes = malloc(SIZE), *guest = malloc(SIZE);
	volatile unsigned sink_warm = 0;
	uint64_t x = 3;
	for (size_t i = 0; i < SIZE; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(parent_bytes + i, &x, 8);
	}
	memcpy(guest, parent_bytes, SIZE);
	for (uint64_t p = 0; p < PAGES; p += 2) /* every other page changed */
		guest[p * P + 100] ^= 0xff;
	char path[256];
	snprintf(path, sizeof(path), "%s/parent", dir);
	int pfd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (pwrite(pfd, parent_bytes, SIZE, 0) != (ssize_t)SIZE)
		return 1;
	close(pfd);
	int err;
	struct ms_source *parent_src = ms_source_file_open(path, false, &err);
	ms_uuid base;
	ms_uuid_generate(&base);
	struct ms_layered *parent = ms_layered_new(
	    ms_header_new_base(&base, MS_HEADER_V4, P, SIZE, true), resolve_one, parent_src);
	int guest_fd = make_memfd(guest);
	/* the baseline compares the same memory the compare reads: the guest's memfd and
	 * the parent's file, both mapped (shmem and page cache: 4 KiB pages, unlike the heap) */
	pfd = open(path, O_RDONLY);
	const uint8_t *guest_map = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, guest_fd, 0);
	const uint8_t *parent_map = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, pfd, 0);
	if (guest_map == MAP_FAILED || parent_map == MAP_FAILED)
		return 1;
	for (uint64_t p = 0; p < PAGES; p++) /* warm both mappings */
		sink_warm += guest_map[p * P] + parent_map[p * P];
	struct ms_memfd *memfd = ms_memfd_new(fcntl(guest_fd, F_DUPFD_CLOEXEC, 0), SIZE, &err);
	struct ms_pageset *all = ms_pageset_new();
	ms_pageset_add_range(all, 0, PAGES);
	/* warm: page cache of the parent file and the memfd */
	struct ms_dedup_result r;
	if (ms_dedup_compare(memfd, all, parent, MS_DEDUP_FULL, NULL, &r))
		return 1;
	ms_dedup_result_fini(&r);
	double best_cmp = 1e9, best_memcmp = 1e9;
	volatile int sink = 0;
	for (int round = 0; round < 3; round++) {
		double t0 = ms_bench_now();
		if (ms_dedup_compare(memfd, all, parent, MS_DEDUP_FULL, NULL, &r))
			return 1;
		double t1 = ms_bench_now();
		for (uint64_t p = 0; p < PAGES; p++)
			sink += memcmp(guest_map + p * P, parent_map + p * P, P) == 0;
		double t2 = ms_bench_now();
		best_cmp = t1 - t0 < best_cmp ? t1 - t0 : best_cmp;
		best_memcmp = t2 - t1 < best_memcmp ? t2 - t1 : best_memcmp;
		if (round < 2)
			ms_dedup_result_fini(&r);
	}
	double mib = SIZE / 1048576.0;
	/* the sinks are printed: memcmp's results count, the warm-up reads happen */
	fprintf(stderr,
		"dedup.compare: %.0f MiB/s (memcmp %.0f MiB/s), %llu equal (memcmp: %d over 3 "
		"rounds; warm-up sum %u)\n",
		mib / best_cmp, mib / best_memcmp, (unsigned long long)r.equal_pages, sink,
		sink_warm);
	ms_bench_report("dedup.compare_vs_memcmp", mib / best_cmp, "MiB/s",
			"memcmp of the same pages, guest memfd vs parent file, both mapped",
			mib / best_memcmp, 0.8);
	/*
	 * The parent still in memory on this node (a paused build in its window: its
	 * provisional header over the memfd identity source): the compare reads it in
	 * place through the source's zero-copy view (finding 7), against the same
	 * compare over the parent's file, same run, alternating rounds, medians of 5.
	 */
	{
		int pmfd = make_memfd(parent_bytes);
		struct ms_memfd *pmem = ms_memfd_new(pmfd, SIZE, &err);
		struct ms_source *identity = pmem ? ms_memfd_identity_source_new(pmem) : NULL;
		ms_uuid pid;
		ms_uuid_generate(&pid);
		struct ms_layered *mparent =
		    identity ? ms_layered_new(ms_header_new_base(&pid, MS_HEADER_V4, P, SIZE, true),
					      resolve_one, identity)
			     : NULL;
		if (!mparent)
			return 1;
		double t_mem[5], t_file[5];
		for (int round = 0; round < 5; round++) {
			struct ms_dedup_result rm, rf;
			double t0 = ms_bench_now();
			if (ms_dedup_compare(memfd, all, mparent, MS_DEDUP_FULL, NULL, &rm))
				return 1;
			double t1 = ms_bench_now();
			if (ms_dedup_compare(memfd, all, parent, MS_DEDUP_FULL, NULL, &rf))
				return 1;
			double t2 = ms_bench_now();
			if (rm.equal_pages != rf.equal_pages)
				return 1;
			ms_dedup_result_fini(&rm);
			ms_dedup_result_fini(&rf);
			t_mem[round] = t1 - t0;
			t_file[round] = t2 - t1;
		}
		for (int i = 0; i < 5; i++) /* sort both for the medians */
			for (int j = i + 1; j < 5; j++) {
				double a = t_mem[i], b = t_file[i];
				if (t_mem[j] < a) {
					t_mem[i] = t_mem[j];
					t_mem[j] = a;
				}
				if (t_file[j] < b) {
					t_file[i] = t_file[j];
					t_file[j] = b;
				}
			}
		fprintf(stderr,
			"dedup.compare, parent in a memfd: %.0f MiB/s (file parent %.0f MiB/s)\n",
			mib / t_mem[2], mib / t_file[2]);
		ms_bench_report("dedup.compare_memfd_parent_vs_file", mib / t_mem[2], "MiB/s",
				"the same compare over the parent's file (zero-copy slices)",
				mib / t_file[2], 0.9);
		ms_layered_free(mparent);
		ms_source_unref(identity);
		ms_memfd_unref(pmem);
	}
	/* drain: survivors in runs of 1..16 pages */
	struct ms_pageset *keep = ms_pageset_new();
	for (uint64_t p = 0; p < PAGES;) {
		uint64_t run = 1 + p % 16;
		ms_pageset_add_range(keep, p, p + run > PAGES ? PAGES : p + run);
		p += 2 * run;
	}
	uint64_t keep_bytes = ms_pageset_count(keep) * P;
	double best_drain = 1e9, best_write = 1e9;
	for (int round = 0; round < 3; round++) {
		snprintf(path, sizeof(path), "%s/diff", dir);
		unlink(path);
		double t0 = ms_bench_now();
		if (ms_dedup_drain(memfd, keep, path, NULL))
			return 1;
		double t1 = ms_bench_now();
		snprintf(path, sizeof(path), "%s/plain", dir);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		size_t done = 0;
		while (done < keep_bytes) {
			ssize_t n = pwrite(fd, guest + done, keep_bytes - done, (off_t)done);
			if (n <= 0)
				return 1;
			done += (size_t)n;
		}
		fsync(fd);
		close(fd);
		double t2 = ms_bench_now();
		best_drain = t1 - t0 < best_drain ? t1 - t0 : best_drain;
		best_write = t2 - t1 < best_write ? t2 - t1 : best_write;
	}
	double kmib = keep_bytes / 1048576.0;
	fprintf(stderr, "dedup.drain: %.0f MiB/s (pwrite %.0f MiB/s), %.0f MiB\n",
		kmib / best_drain, kmib / best_write, kmib);
	ms_bench_report("dedup.drain_vs_pwritev", kmib / best_drain, "MiB/s",
			"one pwrite of as many bytes, fsynced", kmib / best_write, 0.8);
	/* pause latency: start -> resumable, 10 % vs 90 % dirty */
	snprintf(path, sizeof(path), "%s/cache", dir);
	mkdir(path, 0700);
	struct ms_diffstore_config dcfg = {.cache_dir = path};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	snprintf(path, sizeof(path), "%s/store", dir);
	struct ms_store *store = ms_store_fs_new(path, &err);
	char base_key[64];
	ms_artifact_key(base_key, sizeof(base_key), &base, MS_ARTIFACT_MEMFILE, MS_COMPRESS_NONE);
	char cache_path[256];
	snprintf(cache_path, sizeof(cache_path), "%s/cache", dir);
	double latency[2] = {0, 0};
	unsigned percents[2] = {10, 90};
	for (int k = 0; k < 2; k++) {
		struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
		for (uint64_t p = 0; p < PAGES; p++)
			if (p % 100 < percents[k])
				ms_pageset_add(dirty, (uint32_t)p);
		struct ms_future *gate = ms_future_new(NULL);
		struct ms_pause_config cfg = {.store = store,
					      .diffs = diffs,
					      .cache_dir = cache_path,
					      .inflight = true,
					      .compare_gate = gate};
		struct ms_pause *pause;
		int fd = make_memfd(guest);
		double t0 = ms_bench_now();
		if (ms_pause_start(&cfg, parent, fd, dirty, empty, "s", 1, &pause))
			return 1;
		latency[k] = (ms_bench_now() - t0) * 1e6;
		ms_future_set(gate, NULL);
		ms_pause_wait(pause, MS_PAUSE_DRAINED, -1);
		ms_pause_free(pause);
		ms_future_unref(gate);
		ms_pageset_free(dirty);
		ms_pageset_free(empty);
	}
	fprintf(stderr, "pause.latency: %.0f us at 10 %% dirty, %.0f us at 90 %% dirty\n",
		latency[0], latency[1]);
	ms_bench_report("pause.latency_10pct", latency[0], "us", "itself", latency[0], 1);
	ms_bench_report("pause.latency_90pct", latency[1], "us", "pause.latency_10pct", latency[0],
			2);
	ms_store_free(store);
	ms_diffstore_free(diffs);
	ms_dedup_result_fini(&r);
	ms_pageset_free(all);
	ms_pageset_free(keep);
	ms_memfd_unref(memfd);
	ms_layered_free(parent);
	ms_source_unref(parent_src);
	free(guest);
	free(parent_bytes);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
