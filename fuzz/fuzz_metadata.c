/*
 * fuzz_metadata.c - libFuzzer target for the metadata.json trace parser (the
 * prefetch trace a resume reads from the store). Whatever parses must satisfy
 * the parser's own guarantees: every index inside the image, none twice, one
 * known access type per index; a refusal says why and allocates nothing.
 */
#include "uffd/trace.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMAGE (64ULL << 20)
#define BLOCK 4096ULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_uffd_trace t;
	char why[160];
	if (ms_uffd_trace_parse((const char *)data, size, IMAGE, BLOCK, &t, why, sizeof(why))) {
		if (t.count || t.indices || t.access || !why[0])
			abort();
		return 0;
	}
	uint8_t *seen = calloc(IMAGE / BLOCK, 1);
	if (!seen)
		return 0;
	for (size_t i = 0; i < t.count; i++) {
		if (t.indices[i] >= IMAGE / BLOCK || seen[t.indices[i]]++ ||
		    !memchr("rwp", t.access[i], 3))
			abort();
	}
	free(seen);
	ms_uffd_trace_fini(&t);
	return 0;
}
