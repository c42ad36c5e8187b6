/*
 * bench_checksums.c - checksums.xxh3 and checksums.crc32c: throughput of the two
 * candidate block checksums of storage/checksums.h over 64 MiB in 64 KiB blocks
 * (the table's default block), against memcpy of the same bytes measured in the
 * same run. XXH3-64 is libxxhash's (as the table uses it); CRC32C is the SSE4.2
 * crc32 instruction, 8 bytes a step (the usual single-stream loop). Best of
 * several rounds after a warm-up. The table chose XXH3 from this measurement.
 */
#include "bench.h"
#include "storage/checksums.h"

#include <nmmintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE   (64u << 20)
#define BLOCK  MS_SUMS_BLOCK_DEFAULT
#define ROUNDS 5

__attribute__((target("sse4.2"))) static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint64_t c = 0xffffffffu;
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
	}
	uint32_t c32 = (uint32_t)c;
	while (n--)
		c32 = _mm_crc32_u8(c32, *p++);
	return ~c32;
}

int main(void)
{
	uint8_t *data = malloc(SIZE), *copy = malloc(SIZE);
	if (!data || !copy)
		return 1;
	uint64_t x = 1;
	for (size_t i = 0; i < SIZE; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(data + i, &x, 8);
	}
	double best_xxh = 1e9, best_crc = 1e9, best_copy = 1e9;
	uint64_t sink = 0;
	for (int r = 0; r <= ROUNDS; r++) {
		double t0 = ms_bench_now();
		for (size_t off = 0; off < SIZE; off += BLOCK)
			sink += ms_sums_hash(data + off, BLOCK);
		double t1 = ms_bench_now();
		for (size_t off = 0; off < SIZE; off += BLOCK)
			sink += crc32c(data + off, BLOCK);
		double t2 = ms_bench_now();
		memcpy(copy, data, SIZE);
		sink += copy[(size_t)r * 4099];
		double t3 = ms_bench_now();
		if (r == 0)
			continue; /* warm-up */
		best_xxh = t1 - t0 < best_xxh ? t1 - t0 : best_xxh;
		best_crc = t2 - t1 < best_crc ? t2 - t1 : best_crc;
		best_copy = t3 - t2 < best_copy ? t3 - t2 : best_copy;
	}
	double gb = SIZE / 1e9;
	fprintf(stderr,
		"checksums: xxh3 %.2f GB/s, crc32c %.2f GB/s, memcpy %.2f GB/s (64 KiB blocks, "
		"sink %llu)\n",
		gb / best_xxh, gb / best_crc, gb / best_copy, (unsigned long long)(sink & 0xff));
	ms_bench_report("checksums.xxh3", gb / best_xxh, "GB/s", "memcpy of the same bytes",
			gb / best_copy, 0);
	ms_bench_report("checksums.crc32c", gb / best_crc, "GB/s", "memcpy of the same bytes",
			gb / best_copy, 0);
	free(copy);
	free(data);
	return 0;
}
