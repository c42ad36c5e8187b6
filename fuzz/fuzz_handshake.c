/*
 * fuzz_handshake.c - libFuzzer target for Firecracker's handshake parser (the
 * JSON region list a VMM sends the page server). Whatever parses must satisfy
 * the parser's own guarantees: sorted, non-overlapping regions inside the image.
 */
#include "uffd/handshake.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_uffd_handshake hs;
	if (ms_uffd_handshake_parse((const char *)data, size, 1ULL << 30, &hs) != 0)
		return 0;
	if (hs.page_size != 4096 && hs.page_size != (2u << 20))
		abort();
	for (size_t i = 0; i < hs.region_count; i++) {
		const struct ms_uffd_region *r = &hs.regions[i];
		if (r->size == 0 || r->offset + r->size > (1ULL << 30) ||
		    r->offset + r->size < r->offset)
			abort();
		if (i && hs.regions[i - 1].base + hs.regions[i - 1].size > r->base)
			abort();
	}
	ms_uffd_handshake_fini(&hs);
	return 0;
}
