/*
 * fuzz_header.c - libFuzzer target for the header decoder (all versions).
 * Whatever parses must validate, re-serialize, and parse again to the same mappings.
 */
#include "header/serialize.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_header *h = NULL;
	if (ms_header_deserialize(data, size, &h) != 0)
		return 0;
	if (ms_header_validate(h) != 0)
		abort();
	uint64_t version = h->meta.version & 0xffff;
	uint8_t *out = NULL;
	size_t len = 0;
	if (ms_header_serialize(h, version, true, &out, &len) == 0) {
		struct ms_header *again = NULL;
		if (ms_header_deserialize(out, len, &again) != 0)
			abort();
		if (again->mappings.count != h->mappings.count ||
		    memcmp(again->mappings.entries, h->mappings.entries,
			   h->mappings.count * sizeof(struct ms_mapping)) != 0)
			abort();
		ms_header_free(again);
		free(out);
	}
	ms_header_free(h);
	return 0;
}
