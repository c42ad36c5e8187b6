/*
 * test_model.c - random chains of >= 30 layers resolved page by page against a
 * plain array model of memory (docs/design.md §8 "model checks").
 *
 * Each layer: a random dirty set (new contents) and a random empty set (zeros),
 * sometimes overlapping (dirty wins), sometimes with dirty pages rewritten with
 * identical content. The layer's object is its dirty pages packed in ascending
 * order, exactly as the drain writes them. Every page of every layer must read
 * back through its header (also after a V4 and a V5 round trip) as the model says.
 */
#include "ms_test.h"
#include "header/header.h"
#include "header/serialize.h"

#include <string.h>

#define PAGES  384
#define LAYERS 32
#define P      MS_PAGE_SIZE

struct layer {
	ms_uuid id;
	uint8_t *object; /* packed dirty pages */
	size_t object_len;
	struct ms_header *header;
	uint64_t model[PAGES]; /* seed of each page's content; 0 = zeros */
};

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_page(uint8_t *page, uint64_t seed)
{
	if (seed == 0) {
		memset(page, 0, P);
		return;
	}
	uint64_t x = seed;
	for (size_t i = 0; i < P; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(page + i, &x, 8);
	}
}

static const struct layer *find_layer(const struct layer *layers, size_t n, const ms_uuid *id)
{
	for (size_t i = 0; i < n; i++)
		if (ms_uuid_eq(&layers[i].id, id))
			return &layers[i];
	return NULL;
}

static void check_layer(const struct layer *layers, size_t n, const struct ms_header *h,
			const uint64_t *model)
{
	uint8_t want[P], got[P];
	for (uint64_t page = 0; page < PAGES; page++) {
		ms_uuid build;
		uint64_t off_in, left;
		assert_int_equal(ms_header_lookup(h, page * P, &build, &off_in, &left), 0);
		assert_true(left >= P);
		if (ms_uuid_is_nil(&build)) {
			memset(got, 0, P);
		} else {
			const struct layer *owner = find_layer(layers, n, &build);
			assert_non_null(owner);
			assert_true(off_in + P <= owner->object_len);
			memcpy(got, owner->object + off_in, P);
		}
		fill_page(want, model[page]);
		if (memcmp(want, got, P) != 0)
			fail_msg("page %llu: wrong bytes", (unsigned long long)page);
	}
}

static struct ms_header *round_trip(const struct ms_header *h, uint64_t version)
{
	struct ms_header *copy = ms_header_copy(h);
	copy->incomplete = false; /* as after upload */
	uint8_t *buf;
	size_t len;
	assert_int_equal(ms_header_serialize(copy, version, false, &buf, &len), 0);
	struct ms_header *back;
	assert_int_equal(ms_header_deserialize(buf, len, &back), 0);
	free(buf);
	ms_header_free(copy);
	return back;
}

static void run_chain(uint64_t seed)
{
	rng_state = seed;
	print_message("model chain seed %llu\n", (unsigned long long)seed);
	struct layer *layers = calloc(LAYERS + 1, sizeof(*layers));
	ms_uuid_generate(&layers[0].id);
	layers[0].header = ms_header_new_base(&layers[0].id, MS_HEADER_V4, P, PAGES * P, false);
	assert_non_null(layers[0].header);
	for (size_t l = 1; l <= LAYERS; l++) {
		struct layer *cur = &layers[l], *parent = &layers[l - 1];
		ms_uuid_generate(&cur->id);
		memcpy(cur->model, parent->model, sizeof(cur->model));
		struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
		unsigned density = 1 + (unsigned)(rng() % 40); /* percent */
		for (uint32_t p = 0; p < PAGES; p++) {
			uint64_t r = rng() % 100;
			if (r < density)
				ms_pageset_add(dirty, p);
			if (rng() % 100 < density / 3 + 1)
				ms_pageset_add(empty, p);
		}
		/* runs, to exercise splitting */
		if (rng() % 2) {
			uint64_t start = rng() % PAGES, len = rng() % 40;
			ms_pageset_add_range(dirty, start,
					     start + len > PAGES ? PAGES : start + len);
		}
		/* new contents: dirty wins over empty; some dirty pages keep equal content */
		for (uint32_t p = 0; p < PAGES; p++) {
			if (ms_pageset_contains(dirty, p)) {
				if (rng() % 8 != 0)
					cur->model[p] = rng() | 1;
			} else if (ms_pageset_contains(empty, p)) {
				cur->model[p] = 0;
			}
		}
		uint64_t ndirty = ms_pageset_count(dirty);
		cur->object_len = ndirty * P;
		cur->object = malloc(cur->object_len ? cur->object_len : 1);
		uint64_t cursor = 0, start, len, packed = 0;
		while (ms_pageset_next_run(dirty, &cursor, &start, &len))
			for (uint64_t p = start; p < start + len; p++, packed++)
				fill_page(cur->object + packed * P, cur->model[p]);
		assert_int_equal(ms_header_new_diff(parent->header, &cur->id, dirty, empty, P,
						    false, &cur->header),
				 0);
		struct ms_build_data bd = {.build_id = cur->id, .size = (int64_t)cur->object_len};
		assert_int_equal(ms_header_set_build(cur->header, &bd), 0);
		check_layer(layers, l + 1, cur->header, cur->model);
		ms_pageset_free(dirty);
		ms_pageset_free(empty);
	}
	/* every layer again, also through V3, V4 and V5 */
	for (size_t l = 1; l <= LAYERS; l++) {
		check_layer(layers, LAYERS + 1, layers[l].header, layers[l].model);
		for (uint64_t v = MS_HEADER_V3; v <= MS_HEADER_V5; v++) {
			struct ms_header *back = round_trip(layers[l].header, v);
			assert_int_equal(back->mappings.count, layers[l].header->mappings.count);
			check_layer(layers, LAYERS + 1, back, layers[l].model);
			ms_header_free(back);
		}
	}
	for (size_t l = 0; l <= LAYERS; l++) {
		ms_header_free(layers[l].header);
		free(layers[l].object);
	}
	free(layers);
}

static void test_model_chains(void **s)
{
	(void)s;
	uint64_t seeds[] = {0x1234567ULL, 0xdeadbeefULL, 42, 0x9e3779b97f4a7c15ULL, 7};
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
		run_chain(seeds[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_model_chains)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
