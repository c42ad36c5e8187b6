/* ms_chain.c - a published 3-layer chain for read-path tests (see ms_chain.h). */
#include "ms_test.h"
#include "ms_chain.h"
#include "header/serialize.h"
#include "storage/artifact.h"
#include "storage/frames.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define P MS_PAGE_SIZE

static void ms_chain_fill(uint8_t *page, uint32_t seed)
{
	if (!seed) {
		memset(page, 0, P);
		return;
	}
	for (size_t i = 0; i < P; i += 4) {
		memcpy(page + i, &seed, 4);
		seed = seed * 2654435761u + 1;
	}
}

void ms_test_chain_page(const struct ms_test_chain *chain, uint64_t page, uint8_t *out)
{
	ms_chain_fill(out, chain->model[page]);
}

uint8_t *ms_test_chain_image(const struct ms_test_chain *chain)
{
	uint8_t *image = malloc(chain->pages * P);
	assert_non_null(image);
	for (uint64_t p = 0; p < chain->pages; p++)
		ms_chain_fill(image + p * P, chain->model[p]);
	return image;
}

static void ms_chain_publish(struct ms_store *store, struct ms_header *h, const uint8_t *data,
			     size_t len, bool compress, uint64_t version)
{
	struct ms_build_data self = {.build_id = h->meta.build_id, .size = (int64_t)len};
	char key[MS_ARTIFACT_KEY_MAX];
	void *packed = NULL;
	size_t packed_len = len;
	if (compress) {
		assert_int_equal(ms_frames_compress_buf(data, len, MS_COMPRESS_ZSTD, 1,
							MS_CHAIN_FRAME, &packed, &packed_len,
							&self.frames, self.checksum),
				 0);
		data = packed;
	}
	ms_artifact_key(key, sizeof(key), &h->meta.build_id, MS_ARTIFACT_MEMFILE,
			compress ? MS_COMPRESS_ZSTD : MS_COMPRESS_NONE);
	assert_int_equal(ms_store_put_buf(store, key, data, packed_len, NULL), 0);
	free(packed);
	assert_int_equal(ms_header_set_build(h, &self), 0);
	ms_frame_table_free(self.frames);
	h->incomplete = false;
	uint8_t *blob;
	size_t blob_len;
	assert_int_equal(ms_header_serialize(h, version, false, &blob, &blob_len), 0);
	ms_artifact_key(key, sizeof(key), &h->meta.build_id, MS_ARTIFACT_MEMFILE_HEADER,
			MS_COMPRESS_NONE);
	assert_int_equal(ms_store_put_buf(store, key, blob, blob_len, NULL), 0);
	free(blob);
}

void ms_test_chain_build(struct ms_store *store, uint64_t pages, struct ms_test_chain *out)
{
	memset(out, 0, sizeof(*out));
	out->pages = pages;
	out->model = calloc(pages, sizeof(uint32_t));
	uint8_t *data = malloc(pages * P);
	assert_non_null(out->model);
	assert_non_null(data);
	struct ms_header *prev = NULL;
	for (uint32_t l = 0; l < MS_CHAIN_LAYERS; l++) {
		ms_uuid_generate(&out->ids[l]);
		struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
		if (l == 0)
			ms_pageset_add_range(dirty, 0, pages);
		if (l == 1)
			ms_pageset_add_range(dirty, 0, MS_CHAIN_FRAME / P);
		for (uint32_t p = 0; l > 0 && p < pages; p++) {
			if ((p * 7 + l * 13) % 11 == 0)
				ms_pageset_add(dirty, p);
			else if ((p + l) % 29 == 0)
				ms_pageset_add(empty, p);
		}
		ms_pageset_subtract(empty, dirty);
		size_t len = 0;
		uint64_t cursor = 0, start, run;
		while (ms_pageset_next_run(dirty, &cursor, &start, &run))
			for (uint64_t p = start; p < start + run; p++, len += P) {
				out->model[p] =
				    l == 0 && p % 5 == 0 ? 0 : (uint32_t)(p * 31 + l * 7 + 1);
				ms_chain_fill(data + len, out->model[p]);
			}
		cursor = 0;
		while (ms_pageset_next_run(empty, &cursor, &start, &run))
			for (uint64_t p = start; p < start + run; p++)
				out->model[p] = 0;
		struct ms_header *h;
		if (l == 0) {
			struct ms_header *nil_base =
			    ms_header_new_base(&out->ids[0], MS_HEADER_V4, P, pages * P, false);
			assert_int_equal(
			    ms_header_new_diff(nil_base, &out->ids[0], dirty, empty, P, false, &h),
			    0);
			ms_header_free(nil_base);
		} else {
			assert_int_equal(
			    ms_header_new_diff(prev, &out->ids[l], dirty, empty, P, false, &h), 0);
		}
		ms_chain_publish(store, h, data, len, l != 1, l == 1 ? MS_HEADER_V5 : MS_HEADER_V4);
		ms_header_free(prev);
		prev = h;
		ms_pageset_free(dirty);
		ms_pageset_free(empty);
	}
	ms_header_free(prev);
	free(data);
}

void ms_test_chain_fini(struct ms_test_chain *chain)
{
	free(chain->model);
	chain->model = NULL;
}

int ms_test_guest_memfd(const uint8_t *image, uint64_t pages)
{
	int fd = memfd_create("guest", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(pages * MS_PAGE_SIZE)), 0);
	assert_int_equal(pwrite(fd, image, pages * MS_PAGE_SIZE, 0),
			 (ssize_t)(pages * MS_PAGE_SIZE));
	return fd;
}

void ms_test_check_pages(struct ms_layered *file, const uint8_t *expect, uint64_t first,
			 uint64_t count)
{
	uint8_t *got = malloc(count * MS_PAGE_SIZE);
	assert_non_null(got);
	assert_int_equal(ms_layered_read(file, got, first * MS_PAGE_SIZE, count * MS_PAGE_SIZE), 0);
	for (uint64_t p = 0; p < count; p++)
		if (memcmp(got + p * MS_PAGE_SIZE, expect + (first + p) * MS_PAGE_SIZE,
			   MS_PAGE_SIZE) != 0)
			fail_msg("page %llu differs", (unsigned long long)(first + p));
	free(got);
}
