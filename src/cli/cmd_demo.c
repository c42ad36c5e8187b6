/*
 * cmd_demo.c - "memsnap demo chain": what the foundation can do, end to end.
 *
 * Builds a chain of snapshot layers of a simulated guest memory in an object
 * store, the way a pause publishes them (diff data first, then the header;
 * data packed in ascending device order; the top layer zstd-framed), then
 * resolves every page of every layer through its header, reading from the
 * store, and compares it with a plain array model of memory. Prints timings.
 */
#include "build/storage.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "header/serialize.h"
#include "storage/artifact.h"
#include "storage/frames.h"
#include "storage/s3.h"
#include "storage/store.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P MS_PAGE_SIZE

struct demo_layer {
	ms_uuid id;
	struct ms_header *header;
	uint32_t *model; /* per page: content seed, 0 = zeros */
};

static void demo_fill(uint8_t *page, uint32_t seed)
{
	if (!seed) {
		memset(page, 0, P);
		return;
	}
	uint64_t x = seed;
	for (size_t i = 0; i < P; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(page + i, &x, 8);
	}
}

static uint64_t demo_rng(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

/* Reads one page of build id at offset_in_build from the store, per its builds entry. */
static int demo_read_page(struct ms_store *store, const struct ms_header *h, const ms_uuid *id,
			  uint64_t offset_in_build, uint8_t *page)
{
	const struct ms_build_data *b = ms_header_build(h, id);
	if (!b)
		return MS_ENOTFOUND;
	char key[MS_ARTIFACT_KEY_MAX];
	enum ms_compression type = b->frames ? b->frames->type : MS_COMPRESS_NONE;
	int err = ms_artifact_key(key, sizeof(key), id, MS_ARTIFACT_MEMFILE, type);
	if (err)
		return err;
	if (b->frames)
		return ms_frames_read(store, key, b->frames, offset_in_build, page, P);
	size_t got;
	err = ms_store_read_range(store, key, offset_in_build, page, P, &got);
	return err ? err : (got == P ? 0 : MS_ECORRUPT);
}

/* Publishes one layer: data (optionally framed), then the header. */
static int demo_publish(struct ms_store *store, struct demo_layer *layer, const uint8_t *data,
			size_t len, bool compress, uint64_t version, size_t *stored)
{
	char key[MS_ARTIFACT_KEY_MAX];
	struct ms_build_data self = {.build_id = layer->id, .size = (int64_t)len};
	int err;
	void *packed = NULL;
	size_t packed_len = len;
	if (compress) {
		if ((err = ms_frames_compress_buf(data, len, MS_COMPRESS_ZSTD, 1, MS_FRAME_DEFAULT_SIZE,
						  &packed, &packed_len, &self.frames,
						  self.checksum)))
			return err;
		data = packed;
	}
	ms_artifact_key(key, sizeof(key), &layer->id, MS_ARTIFACT_MEMFILE,
			compress ? MS_COMPRESS_ZSTD : MS_COMPRESS_NONE);
	struct ms_store_meta meta = {0};
	char size_text[32];
	snprintf(size_text, sizeof(size_text), "%zu", len);
	ms_store_meta_set(&meta, "uncompressed-size", size_text);
	err = ms_store_put_buf(store, key, data, packed_len, &meta);
	if (!err)
		err = ms_header_set_build(layer->header, &self);
	ms_frame_table_free(self.frames);
	free(packed);
	if (err)
		return err;
	layer->header->incomplete = false; /* data is durable: the header may follow */
	uint8_t *blob;
	size_t blob_len;
	if ((err = ms_header_serialize(layer->header, version, false, &blob, &blob_len)))
		return err;
	ms_artifact_key(key, sizeof(key), &layer->id, MS_ARTIFACT_MEMFILE_HEADER, MS_COMPRESS_NONE);
	err = ms_store_put_buf(store, key, blob, blob_len, NULL);
	free(blob);
	*stored = packed_len;
	return err;
}

/* Loads a layer's header back from the store and checks every page against the model. */
static int demo_verify(struct ms_store *store, const struct demo_layer *layer, uint64_t pages,
		       uint64_t *mismatches)
{
	struct ms_header *h;
	int err = ms_build_storage_load_header(store, &layer->id, MS_ARTIFACT_MEMFILE_HEADER, &h);
	if (err)
		return err;
	uint8_t got[P], want[P];
	for (uint64_t page = 0; page < pages && !err; page++) {
		ms_uuid id;
		uint64_t off_in, left;
		if ((err = ms_header_lookup(h, page * P, &id, &off_in, &left)))
			break;
		if (ms_uuid_is_nil(&id))
			memset(got, 0, P);
		else if ((err = demo_read_page(store, h, &id, off_in, got)))
			break;
		demo_fill(want, layer->model[page]);
		*mismatches += memcmp(got, want, P) != 0;
	}
	ms_header_free(h);
	return err;
}

int ms_cli_demo_chain(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'}, {"mem", required_argument, NULL, 'm'},
		{"layers", required_argument, NULL, 'l'}, {"endpoint", required_argument, NULL, 'e'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_uri = NULL, *endpoint = NULL;
	uint64_t mib = 64, nlayers = 3;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 's':
			store_uri = optarg;
			break;
		case 'e':
			endpoint = optarg;
			break;
		case 'm':
			mib = strtoull(optarg, &end, 10);
			if (!*optarg || *end || mib == 0 || mib > 4096)
				goto usage;
			break;
		case 'l':
			nlayers = strtoull(optarg, &end, 10);
			if (!*optarg || *end || nlayers < 1 || nlayers > 64)
				goto usage;
			break;
		case 'h':
			printf("usage: memsnap demo chain --store URI [--endpoint URL] [--mem MIB] "
			       "[--layers N]\n\n"
			       "Builds N snapshot layers (default 3) of MIB MiB (default 64) of\n"
			       "simulated guest memory in the store, then reads every page of every\n"
			       "layer back through its header and compares it with a model.\n"
			       "URI: file:///dir, or s3://bucket/prefix (the bucket is created).\n");
			return 0;
		default:
			goto usage;
		}
	}
	if (!store_uri || optind != argc)
		goto usage;
	int err;
	struct ms_store *store = ms_store_open(store_uri, endpoint, &err);
	if (!store)
		return ms_cli_fail(store_uri, err);
	if (strncmp(store_uri, "s3://", 5) == 0 && (err = ms_store_s3_create_bucket(store))) {
		ms_store_free(store);
		return ms_cli_fail("cannot create the bucket", err);
	}
	uint64_t pages = mib * 1024 * 1024 / P, rng = 0x5eed;
	struct demo_layer *layers = calloc(nlayers, sizeof(*layers));
	uint8_t *data = malloc(pages * P);
	int rc = 1;
	if (!layers || !data) {
		err = -ENOMEM;
		goto out;
	}
	printf("demo: %llu MiB of guest memory, %llu layers, store %s\n", (unsigned long long)mib,
	       (unsigned long long)nlayers, store_uri);
	for (uint64_t l = 0; l < nlayers; l++) {
		struct demo_layer *layer = &layers[l];
		ms_uuid_generate(&layer->id);
		if (!(layer->model = calloc(pages, sizeof(uint32_t)))) {
			err = -ENOMEM;
			goto out;
		}
		int64_t t0 = ms_clock_now_ns();
		size_t len = 0;
		struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
		if (l == 0) {
			/* the base: every page written, 1 in 16 left zero */
			for (uint64_t p = 0; p < pages; p++)
				layer->model[p] = p % 16 ? (uint32_t)(demo_rng(&rng) | 1) : 0;
			ms_pageset_add_range(dirty, 0, pages);
			struct ms_header *empty_base =
				ms_header_new_base(&layer->id, MS_HEADER_V4, P, pages * P, false);
			err = empty_base ? ms_header_new_diff(empty_base, &layer->id, dirty, empty, P,
							      false, &layer->header)
					 : -ENOMEM;
			ms_header_free(empty_base);
			if (!err) /* the template's base: generation 0, as a fresh build's header */
				layer->header->meta.generation = 0;
		} else {
			/* a pause: ~10 % of pages written in runs, ~2 % freed (zero) */
			memcpy(layer->model, layers[l - 1].model, pages * sizeof(uint32_t));
			for (uint64_t p = 0; p < pages; p++) {
				uint64_t r = demo_rng(&rng) % 1000;
				if (r < 25) {
					uint64_t run = 1 + demo_rng(&rng) % 8;
					ms_pageset_add_range(dirty, p, p + run > pages ? pages : p + run);
				} else if (r < 45) {
					ms_pageset_add(empty, (uint32_t)p);
				}
			}
			ms_pageset_subtract(empty, dirty);
			uint64_t cursor = 0, start, run_len;
			while (ms_pageset_next_run(dirty, &cursor, &start, &run_len))
				for (uint64_t p = start; p < start + run_len; p++)
					layer->model[p] = (uint32_t)(demo_rng(&rng) | 1);
			cursor = 0;
			while (ms_pageset_next_run(empty, &cursor, &start, &run_len))
				for (uint64_t p = start; p < start + run_len; p++)
					layer->model[p] = 0;
			err = ms_header_new_diff(layers[l - 1].header, &layer->id, dirty, empty, P,
						 false, &layer->header);
		}
		if (!err) { /* the diff: dirty pages packed in ascending order */
			uint64_t cursor = 0, start, run_len;
			while (ms_pageset_next_run(dirty, &cursor, &start, &run_len))
				for (uint64_t p = start; p < start + run_len; p++, len += P)
					demo_fill(data + len, layer->model[p]);
		}
		uint64_t ndirty = ms_pageset_count(dirty), nempty = ms_pageset_count(empty);
		ms_pageset_free(dirty);
		ms_pageset_free(empty);
		if (err)
			goto out;
		bool compress = l + 1 == nlayers && nlayers > 1;
		size_t stored = 0;
		if ((err = demo_publish(store, layer, data, len, compress,
					l % 2 ? MS_HEADER_V5 : MS_HEADER_V4, &stored)))
			goto out;
		char id[MS_UUID_STR_LEN];
		ms_uuid_format(&layer->id, id);
		printf("  layer %llu  %s  dirty %6llu  empty %5llu  mappings %6zu  data %7.2f MiB%s"
		       "  %6.1f ms\n",
		       (unsigned long long)l, id, (unsigned long long)ndirty,
		       (unsigned long long)nempty, layer->header->mappings.count,
		       (double)stored / 1048576.0, compress ? " (zstd frames)" : "",
		       (double)(ms_clock_now_ns() - t0) / 1e6);
	}
	printf("verify: every page of every layer, read through its header from the store\n");
	uint64_t total_bad = 0;
	for (uint64_t l = 0; l < nlayers; l++) {
		int64_t t0 = ms_clock_now_ns();
		uint64_t bad = 0;
		if ((err = demo_verify(store, &layers[l], pages, &bad)))
			goto out;
		double secs = (double)(ms_clock_now_ns() - t0) / 1e9;
		printf("  layer %llu  %llu pages  %llu mismatches  %.1f ms  (%.0f MiB/s)\n",
		       (unsigned long long)l, (unsigned long long)pages, (unsigned long long)bad,
		       secs * 1e3, (double)mib / secs);
		total_bad += bad;
	}
	printf("demo: %s\n", total_bad ? "FAILED: memory differs" : "ok, every byte matches");
	rc = total_bad ? 1 : 0;
out:
	if (err)
		rc = ms_cli_fail("demo chain", err);
	for (uint64_t l = 0; layers && l < nlayers; l++) {
		ms_header_free(layers[l].header);
		free(layers[l].model);
	}
	free(layers);
	free(data);
	ms_store_free(store);
	return rc;
usage:
	fprintf(stderr, "usage: memsnap demo chain --store URI [--mem MIB] [--layers N]\n");
	return 2;
}
