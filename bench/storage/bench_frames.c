/*
 * bench_frames.c - frames.zstd_decode: throughput of the frame reader reading a
 * whole 64 MiB zstd-framed object from an fs store (fetch by compressed range,
 * decode, verify), against plain ZSTD_decompress of the same frames already in
 * memory. Both warmed first; best of several rounds.
 */
#include "bench.h"
#include "storage/frames.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define SIZE   (64u << 20)
#define ROUNDS 4

int main(void)
{
	/* semi-compressible memory-like content */
	uint8_t *data = malloc(SIZE), *out = malloc(SIZE);
	uint64_t x = 1;
	for (size_t i = 0; i < SIZE; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t v = (i / 4096) % 4 == 0 ? 0 : (x >> 40);
		memcpy(data + i, &v, 8);
	}
	void *packed;
	size_t packed_len;
	struct ms_frame_table *table;
	if (ms_frames_compress_buf(data, SIZE, MS_COMPRESS_ZSTD, 1, MS_FRAME_DEFAULT_SIZE, &packed,
				   &packed_len, &table, NULL))
		return 1;
	char dir[] = "/tmp/memsnap-bench-frames.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	int err;
	struct ms_store *store = ms_store_fs_new(dir, &err);
	if (!store || ms_store_put_buf(store, "b/memfile.zstd", packed, packed_len, NULL))
		return 1;
	double best_reader = 1e9, best_plain = 1e9;
	for (int r = 0; r < ROUNDS + 1; r++) {
		double t0 = ms_bench_now();
		if (ms_frames_read(store, "b/memfile.zstd", table, 0, out, SIZE))
			return 1;
		double t1 = ms_bench_now();
		for (uint32_t f = 0; f < table->count; f++) {
			const struct ms_frame *fr = &table->frames[f];
			size_t n =
			    ZSTD_decompress(out + fr->start_u, (size_t)fr->size_u,
					    (uint8_t *)packed + fr->start_c, (size_t)fr->size_c);
			if (ZSTD_isError(n))
				return 1;
		}
		double t2 = ms_bench_now();
		if (r == 0)
			continue; /* warm-up round */
		if (t1 - t0 < best_reader)
			best_reader = t1 - t0;
		if (t2 - t1 < best_plain)
			best_plain = t2 - t1;
	}
	if (memcmp(out, data, SIZE) != 0)
		return 1;
	double mib = SIZE / 1048576.0;
	fprintf(stderr,
		"frames.zstd_decode: reader %.0f MiB/s, plain ZSTD_decompress %.0f MiB/s "
		"(%u frames, ratio %.2f)\n",
		mib / best_reader, mib / best_plain, table->count, (double)SIZE / packed_len);
	ms_bench_report("frames.zstd_decode", mib / best_reader, "MiB/s",
			"ZSTD_decompress of the same frames in memory", mib / best_plain, 0.8);
	ms_store_remove(store, "b/memfile.zstd");
	ms_store_free(store);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	ms_frame_table_free(table);
	free(packed);
	free(out);
	free(data);
	return 0;
}
