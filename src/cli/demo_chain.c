/*
 * demo_chain.c - "memsnap demo chain": what the foundation can do, end to end.
 *
 * Builds a chain of snapshot layers of a simulated guest memory in an object
 * store, the way a pause publishes them (diff data first, then the header;
 * data packed in ascending device order; the top layer zstd-framed), then
 * resolves every page of every layer through its header, reading from the
 * store, and compares it with a plain array model of memory. Prints timings.
 */
#include "build/buildfile.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/demo.h"
#include "storage/s3.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/pageset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define P MS_PAGE_SIZE

static const char demo_chain_usage[] =
    "usage: memsnap demo chain --store URI [--endpoint URL] [--mem MIB] [--layers N]\n";
static const char demo_chain_help[] =
    "usage: memsnap demo chain --store URI [--endpoint URL] [--mem MIB] [--layers N]\n\n"
    "Builds N snapshot layers (default 3) of MIB MiB (default 64) of\n"
    "simulated guest memory in the store, then reads every page of every\n"
    "layer back through its header and compares it with a model.\n"
    "URI: file:///dir, or s3://bucket/prefix (the bucket is created).\n";

/*
 * Loads a layer's header back from the store and checks every page against the
 * model, reading through the layered file (diff store + chunked, cached fetches).
 */
static int demo_verify(struct ms_store *store, const char *cache_dir,
		       const struct ms_demo_layer *layer, uint64_t pages, uint64_t *mismatches)
{
	int err;
	struct ms_build_file *bf = ms_build_file_open(store, &layer->id, cache_dir, &err);
	if (!bf)
		return err;
	uint8_t *got = malloc(64 * P), want[P];
	err = got ? 0 : -ENOMEM;
	for (uint64_t page = 0; page < pages && !err; page += 64) {
		uint64_t n = pages - page < 64 ? pages - page : 64;
		if ((err = ms_layered_read(bf->file, got, page * P, n * P)))
			break;
		for (uint64_t i = 0; i < n; i++) {
			ms_demo_fill(want, layer->model[page + i]);
			*mismatches += memcmp(got + i * P, want, P) != 0;
		}
	}
	free(got);
	ms_build_file_free(bf);
	return err;
}

/* A pause over prev: ~10 % of pages written in runs, ~2 % freed (zero); the model follows. */
static void demo_pause_sets(uint32_t *model, uint64_t pages, uint64_t *rng,
			    struct ms_pageset *dirty, struct ms_pageset *empty)
{
	for (uint64_t p = 0; p < pages; p++) {
		uint64_t r = ms_demo_rng(rng) % 1000;
		if (r < 25) {
			uint64_t run = 1 + ms_demo_rng(rng) % 8;
			ms_pageset_add_range(dirty, p, p + run > pages ? pages : p + run);
		} else if (r < 45) {
			ms_pageset_add(empty, (uint32_t)p);
		}
	}
	ms_pageset_subtract(empty, dirty);
	uint64_t cursor = 0, start, run_len;
	while (ms_pageset_next_run(dirty, &cursor, &start, &run_len))
		for (uint64_t p = start; p < start + run_len; p++)
			model[p] = (uint32_t)(ms_demo_rng(rng) | 1);
	cursor = 0;
	while (ms_pageset_next_run(empty, &cursor, &start, &run_len))
		for (uint64_t p = start; p < start + run_len; p++)
			model[p] = 0;
}

/* Builds layer l over layers[l - 1] (l == 0: the base) and publishes it. */
static int demo_layer(struct ms_store *store, struct ms_demo_layer *layers, uint64_t l,
		      uint64_t nlayers, uint64_t pages, uint64_t *rng, uint8_t *data)
{
	struct ms_demo_layer *layer = &layers[l];
	ms_uuid_generate(&layer->id);
	if (!(layer->model = calloc(pages, sizeof(uint32_t))))
		return -ENOMEM;
	int64_t t0 = ms_clock_now_ns();
	size_t len = 0;
	int err;
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	if (!dirty || !empty) {
		err = -ENOMEM;
	} else if (l == 0) {
		/* the base: every page written, 1 in 16 left zero */
		for (uint64_t p = 0; p < pages; p++)
			layer->model[p] = p % 16 ? (uint32_t)(ms_demo_rng(rng) | 1) : 0;
		ms_pageset_add_range(dirty, 0, pages);
		err = ms_demo_base_header(layer, pages);
	} else {
		memcpy(layer->model, layers[l - 1].model, pages * sizeof(uint32_t));
		demo_pause_sets(layer->model, pages, rng, dirty, empty);
		err = ms_header_new_diff(layers[l - 1].header, &layer->id, dirty, empty, P, false,
					 &layer->header);
	}
	if (!err) { /* the diff: dirty pages packed in ascending order */
		uint64_t cursor = 0, start, run_len;
		while (ms_pageset_next_run(dirty, &cursor, &start, &run_len))
			for (uint64_t p = start; p < start + run_len; p++, len += P)
				ms_demo_fill(data + len, layer->model[p]);
	}
	uint64_t ndirty = dirty ? ms_pageset_count(dirty) : 0;
	uint64_t nempty = empty ? ms_pageset_count(empty) : 0;
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	if (err)
		return err;
	bool compress = l + 1 == nlayers && nlayers > 1;
	size_t stored = 0;
	if ((err = ms_demo_publish(store, layer, data, len, compress,
				   l % 2 ? MS_HEADER_V5 : MS_HEADER_V4, &stored)))
		return err;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&layer->id, id);
	printf("  layer %llu  %s  dirty %6llu  empty %5llu  mappings %6zu  data %7.2f MiB%s"
	       "  %6.1f ms\n",
	       (unsigned long long)l, id, (unsigned long long)ndirty, (unsigned long long)nempty,
	       layer->header->mappings.count, (double)stored / 1048576.0,
	       compress ? " (zstd frames)" : "", (double)(ms_clock_now_ns() - t0) / 1e6);
	return 0;
}

int ms_cli_demo_chain(int argc, char **argv)
{
	struct ms_demo_opts o = {.mib = 64, .layers = 3};
	int rc;
	if (!ms_demo_parse(argc, argv, "seml", demo_chain_help, demo_chain_usage, &o, &rc))
		return rc;
	int err;
	struct ms_store *store = ms_cli_store_open(o.store_uri, o.endpoint, &err);
	if (!store)
		return ms_cli_fail(o.store_uri, err);
	if (strncmp(o.store_uri, "s3://", 5) == 0 && (err = ms_store_s3_create_bucket(store))) {
		ms_store_free(store);
		return ms_cli_fail("cannot create the bucket", err);
	}
	uint64_t mib = o.mib, nlayers = o.layers;
	uint64_t pages = mib * 1024 * 1024 / P, rng = 0x5eed;
	struct ms_demo_layer *layers = calloc(nlayers, sizeof(*layers));
	uint8_t *data = malloc(pages * P);
	rc = 1;
	if (!layers || !data) {
		err = -ENOMEM;
		goto out;
	}
	printf("demo: %llu MiB of guest memory, %llu layers, store %s\n", (unsigned long long)mib,
	       (unsigned long long)nlayers, o.store_uri);
	for (uint64_t l = 0; l < nlayers; l++)
		if ((err = demo_layer(store, layers, l, nlayers, pages, &rng, data)))
			goto out;
	printf("verify: every page of every layer, read through its header from the store\n"
	       "        (layered file, diff store, chunked fetches; a fresh cache per layer)\n");
	uint64_t total_bad = 0;
	for (uint64_t l = 0; l < nlayers; l++) {
		int64_t t0 = ms_clock_now_ns();
		uint64_t bad = 0;
		char cache[64];
		snprintf(cache, sizeof(cache), "/tmp/memsnap-demo-cache.XXXXXX");
		if (!mkdtemp(cache)) {
			err = -errno;
			goto out;
		}
		err = demo_verify(store, cache, &layers[l], pages, &bad);
		rmdir(cache);
		if (err)
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
}
