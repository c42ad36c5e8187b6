/*
 * ms_chain.h - test helper: a 3-layer snapshot chain published into a store
 * the way a pause publishes it (data, then header), with the expected
 * contents of the top layer.
 *
 * Layer 0 is a full base, zstd-framed (256 KiB frames); layer 1 is a plain diff
 * that also hides the base's first frame (so the base's frame table in later
 * headers is trimmed); layer 2 is a zstd-framed diff. Some pages are freed
 * (empty -> zeros); dirty wins over empty. Headers alternate V4/V5.
 *
 * Also the two steps every test over such a chain repeats: a guest memfd
 * holding an image, and a page-by-page check of a layered file's contents.
 */
#ifndef MS_TEST_CHAIN_H
#define MS_TEST_CHAIN_H

#include "build/layered.h"
#include "storage/store.h"
#include "util/uuid.h"

#include <stdint.h>

#define MS_CHAIN_LAYERS 3
#define MS_CHAIN_FRAME	(256u << 10)

struct ms_test_chain {
	ms_uuid ids[MS_CHAIN_LAYERS];
	uint64_t pages;
	uint32_t *model; /* per page of the top layer: content seed, 0 = zeros */
};

/* Builds and publishes the chain; fails the running cmocka test on error. */
void ms_test_chain_build(struct ms_store *store, uint64_t pages, struct ms_test_chain *out);
/* The expected contents of page (4 KiB) of the top layer. */
void ms_test_chain_page(const struct ms_test_chain *chain, uint64_t page, uint8_t *out);
/* The whole expected image (pages * 4 KiB, malloc'd). */
uint8_t *ms_test_chain_image(const struct ms_test_chain *chain);
void ms_test_chain_fini(struct ms_test_chain *chain);

/* A guest memory memfd of pages * 4 KiB holding image. */
int ms_test_guest_memfd(const uint8_t *image, uint64_t pages);
/* Reads pages [first, first + count) of file; fails naming the first page that differs. */
void ms_test_check_pages(struct ms_layered *file, const uint8_t *expect, uint64_t first,
			 uint64_t count);

#endif
