/*
 * fuzz_snapfile.c - libFuzzer target for the snapfile parser (sandbox/snapfile.h),
 * the VMM state a restore reads from the store. Each input is parsed twice for
 * each backend: as it is (the checksum must turn away nearly everything), and
 * with its trailing XXH64 recomputed, so the fuzzer reaches the header and
 * section checks behind it. Whatever parses must describe sections that lie
 * inside the blob, one after another, and a blob of the backend asked for.
 */
#include "sandbox/snapfile.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *blob, size_t len, enum ms_backend_id backend)
{
	uint64_t mem_size = 0;
	if (len >= 24)
		memcpy(&mem_size, blob + 16,
		       8); /* the size it claims, so the sections are reached */
	struct ms_snap_part parts[MS_SNAPFILE_MAX_SECTIONS];
	unsigned count = 0;
	if (ms_snapfile_parse(blob, len, backend, mem_size, parts, &count) != 0)
		return;
	uint32_t stored_backend;
	memcpy(&stored_backend, blob + 12, 4);
	if (len < 40 || count > MS_SNAPFILE_MAX_SECTIONS || stored_backend != (uint32_t)backend)
		abort();
	const uint8_t *next = blob + 32;
	for (unsigned i = 0; i < count; i++) {
		const uint8_t *d = parts[i].data;
		if (d != next + 8 || d + parts[i].length > blob + len - 8)
			abort();
		next = d + ((parts[i].length + 7u) & ~7u);
		if (parts[i].length && ((const volatile uint8_t *)d)[parts[i].length - 1] == 0x5a)
			(void)0; /* touch the last byte: ASan sees any read past the blob */
	}
	if (next != blob + len - 8)
		abort();
	if (count && ms_snapfile_find(parts, count, parts[0].type) != &parts[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a copy of exactly size bytes: ASan catches a read past its end */
	uint8_t *blob = malloc(size ? size : 1);
	if (!blob)
		return 0;
	memcpy(blob, data, size);
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			if (size < 40)
				break;
			uint64_t sum = XXH64(blob, size - 8, 0);
			memcpy(blob + size - 8, &sum, 8);
		}
		check(blob, size, MS_BACKEND_PROC);
		check(blob, size, MS_BACKEND_KVM);
	}
	free(blob);
	return 0;
}
