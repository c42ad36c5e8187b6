/*
 * fuzz_checksums.c - libFuzzer target for the checksum table parser
 * (storage/checksums.h). Whatever parses must have blocks that tile each
 * object, answer lookups and checks within its bounds, and serialize again to
 * exactly the bytes it came from.
 */
#include "storage/checksums.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The input as it is, then with its trailer made to match: a random mutation
 * almost never keeps the trailer right, and the fields behind it are the ones
 * to reach.
 */
static void ms_fuzz_one(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ms_fuzz_one(data, size);
	if (size < 24 || size > MS_SUMS_SIZE_MAX)
		return 0;
	uint8_t *sealed = malloc(size);
	if (!sealed)
		return 0;
	memcpy(sealed, data, size);
	uint64_t h = ms_sums_hash(sealed, size - 8);
	for (int i = 0; i < 8; i++)
		sealed[size - 8 + i] = (uint8_t)(h >> (8 * i));
	ms_fuzz_one(sealed, size);
	free(sealed);
	return 0;
}

static void ms_fuzz_one(const uint8_t *data, size_t size)
{
	struct ms_sums *sums = NULL;
	if (ms_sums_parse(data, size, &sums) != 0) {
		if (sums)
			abort(); /* nothing is returned on error */
		return;
	}
	for (unsigned i = 0; i < sums->count; i++) {
		const struct ms_sums_object *o = &sums->objects[i];
		if (o->starts[0] != 0 || o->starts[o->count] != o->size)
			abort();
		for (uint32_t b = 0; b < o->count; b++) {
			if (o->starts[b + 1] <= o->starts[b])
				abort();
			if (ms_sums_block_of(o, o->starts[b]) != b ||
			    ms_sums_block_of(o, o->starts[b + 1] - 1) != b)
				abort();
		}
		if (ms_sums_find(sums, o->name) != o)
			abort();
		/* a check of a small first block reads exactly that block */
		if (o->count && o->starts[1] <= 4096) {
			static uint8_t zeros[4096];
			uint32_t bad = 1;
			int err = ms_sums_check(o, 0, zeros, (size_t)o->starts[1], &bad);
			if (err && bad != 0)
				abort();
		}
	}
	uint8_t *out = NULL;
	size_t len = 0;
	if (ms_sums_serialize(sums, &out, &len) != 0)
		abort();
	if (len != size || memcmp(out, data, size) != 0)
		abort(); /* one table, one serialized form */
	free(out);
	ms_sums_unref(sums);
}
