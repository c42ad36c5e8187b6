/*
 * cmd_demo.c - "memsnap demo chain": what the foundation can do, end to end.
 *
 * Builds a chain of snapshot layers of a simulated guest memory in an object
 * store, the way a pause publishes them (diff data first, then the header;
 * data packed in ascending device order; the top layer zstd-framed), then
 * resolves every page of every layer through its header, reading from the
 * store, and compares it with a plain array model of memory. Prints timings.
 */
#include "build/layered.h"
#include "build/storage.h"
#include "cli/demo_client.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "header/serialize.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "storage/artifact.h"
#include "storage/frames.h"
#include "storage/s3.h"
#include "storage/store.h"
#include "uffd/filesource.h"
#include "uffd/pageserver.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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
		if ((err = ms_frames_compress_buf(data, len, MS_COMPRESS_ZSTD, 1,
						  MS_FRAME_DEFAULT_SIZE, &packed, &packed_len,
						  &self.frames, self.checksum)))
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

/*
 * Loads a layer's header back from the store and checks every page against the
 * model, reading through the layered file (diff store + chunked, cached fetches).
 */
static int demo_verify(struct ms_store *store, const char *cache_dir,
		       const struct demo_layer *layer, uint64_t pages, uint64_t *mismatches)
{
	struct ms_header *h;
	int err = ms_build_storage_load_header(store, &layer->id, MS_ARTIFACT_MEMFILE_HEADER, &h);
	if (err)
		return err;
	struct ms_diffstore_config dcfg = {.cache_dir = cache_dir};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	if (!diffs) {
		ms_header_free(h);
		return err;
	}
	struct ms_build_storage bs = {
	    .store = store, .diffs = diffs, .cache_dir = cache_dir, .data = MS_ARTIFACT_MEMFILE};
	struct ms_layered *file = ms_layered_new(h, ms_build_storage_resolve, &bs);
	uint8_t *got = malloc(64 * P), want[P];
	err = file && got ? 0 : -ENOMEM;
	for (uint64_t page = 0; page < pages && !err; page += 64) {
		uint64_t n = pages - page < 64 ? pages - page : 64;
		if ((err = ms_layered_read(file, got, page * P, n * P)))
			break;
		for (uint64_t i = 0; i < n; i++) {
			demo_fill(want, layer->model[page + i]);
			*mismatches += memcmp(got + i * P, want, P) != 0;
		}
	}
	free(got);
	ms_layered_free(file);
	ms_diffstore_free(diffs);
	return err;
}

int ms_cli_demo_chain(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"store", required_argument, NULL, 's'},  {"mem", required_argument, NULL, 'm'},
	    {"layers", required_argument, NULL, 'l'}, {"endpoint", required_argument, NULL, 'e'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0},
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
			printf(
			    "usage: memsnap demo chain --store URI [--endpoint URL] [--mem MIB] "
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
			err = empty_base ? ms_header_new_diff(empty_base, &layer->id, dirty, empty,
							      P, false, &layer->header)
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
					ms_pageset_add_range(dirty, p,
							     p + run > pages ? pages : p + run);
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
usage:
	fprintf(stderr, "usage: memsnap demo chain --store URI [--mem MIB] [--layers N]\n");
	return 2;
}

/* ---- demo resume: pause -> warm resume during a stalled dedup -> cold resume ---- */

/* Serves file on a fresh socket and has the stand-in VMM touch every page. */
static int demo_resume_once(struct ms_layered *file, const char *sock, const uint8_t *expect,
			    uint64_t size, struct ms_demo_touch *touch)
{
	struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = 65536};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts);
	if (!srv)
		return -errno;
	int err = ms_demo_client_touch(sock, expect, size, touch);
	ms_pageserver_free(srv);
	return err;
}

int ms_cli_demo_resume(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"store", required_argument, NULL, 's'},
	    {"mem", required_argument, NULL, 'm'},
	    {"stall", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *store_uri = NULL;
	uint64_t mib = 64;
	double stall = 5;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 's':
			store_uri = optarg;
			break;
		case 'm':
			mib = strtoull(optarg, &end, 10);
			if (!*optarg || *end || mib < 1 || mib > 4096)
				goto usage;
			break;
		case 't':
			stall = strtod(optarg, &end);
			if (!*optarg || *end || stall < 0 || stall > 600)
				goto usage;
			break;
		case 'h':
			printf(
			    "usage: memsnap demo resume --store URI [--mem MIB] [--stall "
			    "SECONDS]\n\n"
			    "Pauses MIB MiB (default 64) of simulated guest memory over a base\n"
			    "layer in the store, with the dedup compare stalled for SECONDS\n"
			    "(default 5); resumes it warm through the page server while the\n"
			    "compare is stalled; lets dedup, drain and upload finish; then "
			    "resumes\n"
			    "it cold from the store with an empty cache. A stand-in VMM restores\n"
			    "with Firecracker's userfaultfd handshake and verifies every page.\n");
			return 0;
		default:
			goto usage;
		}
	}
	if (!store_uri || optind != argc)
		goto usage;
	if (!getenv("MEMSNAP_LOG"))
		ms_log_set_level(MS_LOG_WARN); /* the demo prints its own story */
	int err;
	int rc = 1;
	uint64_t pages = mib << 8, size = mib << 20, rng = 0xfeed;
	char work[] = "/tmp/memsnap-demo-resume.XXXXXX";
	if (!mkdtemp(work))
		return ms_cli_fail("work dir", -errno);
	char warm_cache[600], cold_cache[600], sock[600];
	snprintf(warm_cache, sizeof(warm_cache), "%s/node-a", work);
	snprintf(cold_cache, sizeof(cold_cache), "%s/node-b", work);
	snprintf(sock, sizeof(sock), "%s/uffd.sock", work);
	mkdir(warm_cache, 0700);
	mkdir(cold_cache, 0700);
	struct ms_store *store = ms_store_open(store_uri, NULL, &err);
	struct ms_diffstore *diffs = NULL, *cold_diffs = NULL;
	struct ms_layered *parent = NULL, *cold = NULL;
	struct ms_pause *pause = NULL;
	struct ms_future *gate = ms_future_new(NULL);
	uint8_t *image = malloc(size);
	uint32_t *model = calloc(pages, sizeof(uint32_t));
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	if (!store) {
		rc = ms_cli_fail(store_uri, err);
		goto out;
	}
	err = -ENOMEM;
	if (!gate || !image || !model || !dirty || !empty)
		goto fail;
	/* the template: a base layer in the store */
	struct demo_layer base = {.model = model};
	ms_uuid_generate(&base.id);
	for (uint64_t p = 0; p < pages; p++) {
		model[p] = p % 16 ? (uint32_t)(demo_rng(&rng) | 1) : 0;
		demo_fill(image + p * P, model[p]);
	}
	struct ms_pageset *all = ms_pageset_new(), *none = ms_pageset_new();
	ms_pageset_add_range(all, 0, pages);
	struct ms_header *nil_base = ms_header_new_base(&base.id, MS_HEADER_V4, P, size, false);
	err = nil_base ? ms_header_new_diff(nil_base, &base.id, all, none, P, false, &base.header)
		       : -ENOMEM;
	ms_header_free(nil_base);
	ms_pageset_free(all);
	ms_pageset_free(none);
	size_t stored;
	if (err || (err = demo_publish(store, &base, image, size, false, MS_HEADER_V4, &stored)))
		goto fail;
	struct ms_diffstore_config dcfg = {.cache_dir = warm_cache};
	if (!(diffs = ms_diffstore_new(&dcfg, &err)))
		goto fail;
	struct ms_build_storage parent_storage = {
	    .store = store, .diffs = diffs, .cache_dir = warm_cache, .data = MS_ARTIFACT_MEMFILE};
	err = -ENOMEM;
	if (!(parent = ms_layered_new(base.header, ms_build_storage_resolve, &parent_storage)))
		goto fail;
	base.header = NULL;
	/* the guest ran: ~10 % of pages written (a third with equal bytes), ~2 % freed */
	for (uint64_t p = 0; p < pages; p++) {
		uint64_t r = demo_rng(&rng) % 1000;
		if (r < 100) {
			ms_pageset_add(dirty, (uint32_t)p);
			if (r % 3)
				demo_fill(image + p * P, (uint32_t)(demo_rng(&rng) | 1));
		} else if (r < 120) {
			ms_pageset_add(dirty, (uint32_t)p);
			memset(image + p * P, 0, P);
		}
	}
	int memfd = memfd_create("guest", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, (off_t)size) ||
	    pwrite(memfd, image, size, 0) != (ssize_t)size) {
		err = -errno;
		if (memfd >= 0)
			close(memfd);
		goto fail;
	}
	printf("demo: %llu MiB of guest memory over a base layer in %s; the sandbox backends are\n"
	       "      not built yet, so a stand-in VMM restores with Firecracker's userfaultfd "
	       "handshake\n",
	       (unsigned long long)mib, store_uri);
	/* pause, the compare stalled */
	struct ms_pause_config pcfg = {.store = store,
				       .diffs = diffs,
				       .cache_dir = warm_cache,
				       .inflight = true,
				       .compare_gate = gate};
	int64_t t0 = ms_clock_now_ns();
	if ((err = ms_pause_start(&pcfg, parent, memfd, dirty, empty, "demo-state", 10, &pause)))
		goto fail;
	double t_pause = (double)(ms_clock_now_ns() - t0) / 1e6;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(ms_pause_build_id(pause), id);
	printf(
	    "pause:  build %s resumable after %.2f ms (%llu dirty pages); dedup stalled %.0f s\n",
	    id, t_pause, (unsigned long long)ms_pageset_count(dirty), stall);
	/* warm resume while the compare is stalled */
	struct ms_demo_touch warm;
	if ((err = demo_resume_once(ms_pause_file(pause), sock, image, size, &warm)))
		goto fail;
	bool still_stalled = ms_pause_wait(pause, MS_PAUSE_COMPARED, 0) == -ETIMEDOUT;
	printf("warm:   %llu pages verified, %llu mismatches, %.1f ms (%.0f MiB/s); dedup %s\n",
	       (unsigned long long)warm.pages, (unsigned long long)warm.mismatches,
	       warm.seconds * 1e3, (double)mib / warm.seconds,
	       still_stalled ? "still stalled: the resume did not wait for it" : "already done");
	int64_t stall_left = (int64_t)(stall * 1e9) - (ms_clock_now_ns() - t0);
	ms_clock_sleep_ns(stall_left);
	ms_future_set(gate, NULL);
	int64_t t1 = ms_clock_now_ns();
	if ((err = ms_pause_wait(pause, MS_PAUSE_COMPARED, -1)))
		goto fail;
	double t_cmp = (double)(ms_clock_now_ns() - t1) / 1e6;
	if ((err = ms_pause_wait(pause, MS_PAUSE_DRAINED, -1)))
		goto fail;
	double t_drain = (double)(ms_clock_now_ns() - t1) / 1e6;
	if ((err = ms_pause_wait(pause, MS_PAUSE_PUBLISHED, -1)))
		goto fail;
	double t_pub = (double)(ms_clock_now_ns() - t1) / 1e6;
	uint64_t n_dirty, n_equal, n_zero, n_kept;
	ms_pause_counts(pause, &n_dirty, &n_equal, &n_zero, &n_kept);
	printf("dedup:  %llu dirty -> %llu equal to the parent, %llu zero, %llu kept "
	       "(diff %.2f MiB)\n",
	       (unsigned long long)n_dirty, (unsigned long long)n_equal, (unsigned long long)n_zero,
	       (unsigned long long)n_kept, (double)(n_kept * P) / 1048576.0);
	printf("        compared +%.1f ms, drained +%.1f ms, uploaded and published +%.1f ms\n",
	       t_cmp, t_drain, t_pub);
	/* cold resume on "another node": an empty cache, everything from the store */
	struct ms_header *published;
	if ((err = ms_build_storage_load_header(store, ms_pause_build_id(pause),
						MS_ARTIFACT_MEMFILE_HEADER, &published)))
		goto fail;
	struct ms_diffstore_config ccfg = {.cache_dir = cold_cache};
	if (!(cold_diffs = ms_diffstore_new(&ccfg, &err))) {
		ms_header_free(published);
		goto fail;
	}
	struct ms_build_storage cold_storage = {.store = store,
						.diffs = cold_diffs,
						.cache_dir = cold_cache,
						.data = MS_ARTIFACT_MEMFILE};
	err = -ENOMEM;
	if (!(cold = ms_layered_new(published, ms_build_storage_resolve, &cold_storage)))
		goto fail;
	struct ms_demo_touch cold_touch;
	if ((err = demo_resume_once(cold, sock, image, size, &cold_touch)))
		goto fail;
	printf(
	    "cold:   %llu pages verified, %llu mismatches, %.1f ms (%.0f MiB/s) from the store\n",
	    (unsigned long long)cold_touch.pages, (unsigned long long)cold_touch.mismatches,
	    cold_touch.seconds * 1e3, (double)mib / cold_touch.seconds);
	bool ok = !warm.mismatches && !cold_touch.mismatches && warm.pages == pages &&
		  cold_touch.pages == pages;
	printf("demo: %s\n",
	       ok ? "ok, every byte matches (warm and cold)" : "FAILED: memory differs");
	rc = ok ? 0 : 1;
	goto out;
fail:
	rc = ms_cli_fail("demo resume", err);
out:
	if (pause && gate)
		ms_future_set(gate, NULL); /* never leave the pipeline stalled */
	ms_pause_free(pause);
	ms_layered_free(cold);
	ms_layered_free(parent);
	ms_diffstore_free(cold_diffs);
	ms_diffstore_free(diffs);
	if (gate)
		ms_future_unref(gate);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	free(model);
	free(image);
	ms_store_free(store);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", work);
	if (system(cmd) != 0)
		rc = rc ? rc : 1;
	return rc;
usage:
	fprintf(stderr, "usage: memsnap demo resume --store URI [--mem MIB] [--stall SECONDS]\n");
	return 2;
}

/* ---- demo sandbox: a real guest, paused, resumed warm during dedup and cold ---- */

/* Restores paused lazily from file through a page server; the guest then verifies itself. */
static int demo_sandbox_resume(const struct ms_sandbox_ops *backend, struct ms_layered *file,
			       const char *sock, const struct ms_sandbox_paused *paused,
			       uint64_t size, uint64_t seed, uint64_t epoch, uint64_t *mismatches,
			       double *ms, uint64_t *faults)
{
	struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = 65536};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts);
	if (!srv)
		return -errno;
	int64_t t0 = ms_clock_now_ns();
	struct ms_sandbox_spec spec = {.mem_size = size,
				       .memory = MS_SANDBOX_LAZY,
				       .lazy_socket = sock,
				       .snapfile = paused->snapfile,
				       .snapfile_len = paused->snapfile_len};
	struct ms_sandbox *p = NULL;
	struct ms_uffd_session *session = NULL;
	int err = ms_sandbox_create(backend, &spec, &p);
	/* the guest reports once (faulting its mailbox in), then verifies all its memory */
	if (!err && !(err = ms_sandbox_run(p)) &&
	    !(err = ms_sandbox_wait_report(p, 30 * MS_NSEC_PER_SEC))) {
		uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
		box[MS_GUEST_CMD / 8] = MS_PATTERN_VERIFY;
		box[MS_GUEST_ARG0 / 8] = seed;
		box[MS_GUEST_ARG1 / 8] = epoch;
		if (!(err = ms_sandbox_run(p)) &&
		    !(err = ms_sandbox_wait_report(p, 60 * MS_NSEC_PER_SEC)))
			*mismatches = box[MS_GUEST_RESULT0 / 8];
	}
	*ms = (double)(ms_clock_now_ns() - t0) / 1e6;
	if (err == -ECHILD)
		fprintf(stderr, "memsnap: the sandbox died: %s\n", ms_sandbox_death_cause(p));
	if (!err && !ms_pageserver_next_session(srv, 0, &session)) {
		const struct ms_uffd_metrics *m = ms_uffd_session_metrics(session);
		*faults = atomic_load(&m->faults_read) + atomic_load(&m->faults_write);
		ms_uffd_session_unref(session);
	}
	ms_sandbox_destroy(p);
	ms_pageserver_free(srv);
	return err;
}

int ms_cli_demo_sandbox(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"store", required_argument, NULL, 's'}, {"mem", required_argument, NULL, 'm'},
	    {"stall", required_argument, NULL, 't'}, {"backend", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},	     {NULL, 0, NULL, 0},
	};
	const char *store_uri = NULL, *backend = "auto";
	uint64_t mib = 64;
	double stall = 5;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 's':
			store_uri = optarg;
			break;
		case 'b':
			backend = optarg;
			break;
		case 'm':
			mib = strtoull(optarg, &end, 10);
			if (!*optarg || *end || mib < 1 || mib > 4096)
				goto usage;
			break;
		case 't':
			stall = strtod(optarg, &end);
			if (!*optarg || *end || stall < 0 || stall > 600)
				goto usage;
			break;
		case 'h':
			printf(
			    "usage: memsnap demo sandbox --store URI [--backend auto|kvm|proc] "
			    "[--mem MIB] [--stall SECONDS]\n\n"
			    "Runs the pattern guest in a sandbox (kvm where /dev/kvm opens, else "
			    "proc;\nthe kvm backend is not built yet, so auto picks proc), fills "
			    "its "
			    "memory, pauses\nit with the dedup compare stalled for SECONDS "
			    "(default 5), resumes it warm\nwhile dedup is stalled (the guest "
			    "verifies every page), lets dedup, drain and\nupload finish, then "
			    "resumes it cold from the store with an empty cache and\nverifies "
			    "again. Prints the timings.\n");
			return 0;
		default:
			goto usage;
		}
	}
	if (!store_uri || optind != argc)
		goto usage;
	const struct ms_sandbox_ops *backend_ops;
	char why[160];
	int picked = ms_sandbox_backend_pick(backend, &backend_ops, why, sizeof(why));
	if (picked == -EINVAL) {
		fprintf(stderr, "memsnap: %s\n", why);
		goto usage;
	}
	if (picked) {
		fprintf(stderr, "memsnap: %s; use --backend proc\n", why);
		return 1;
	}
	if (!getenv("MEMSNAP_LOG"))
		ms_log_set_level(MS_LOG_WARN);
	printf("sandbox: %s\n", why);
	int err, rc = 1;
	uint64_t size = mib << 20, seed = 0x5eed, epoch = 1;
	char work[] = "/tmp/memsnap-demo-sandbox.XXXXXX";
	if (!mkdtemp(work))
		return ms_cli_fail("work dir", -errno);
	char node_a[600], node_b[600], sock[600];
	snprintf(node_a, sizeof(node_a), "%s/node-a", work);
	snprintf(node_b, sizeof(node_b), "%s/node-b", work);
	snprintf(sock, sizeof(sock), "%s/uffd.sock", work);
	mkdir(node_a, 0700);
	mkdir(node_b, 0700);
	struct ms_store *store = ms_store_open(store_uri, NULL, &err);
	struct ms_diffstore *diffs = NULL, *cold_diffs = NULL;
	struct ms_layered *parent = NULL, *cold = NULL;
	struct ms_pause *pause = NULL;
	struct ms_sandbox *p = NULL;
	struct ms_sandbox_paused paused = {.memfd = -1};
	struct ms_future *gate = ms_future_new(NULL);
	if (!store) {
		rc = ms_cli_fail(store_uri, err);
		goto out;
	}
	err = -ENOMEM;
	if (!gate)
		goto fail;
	/* run: the guest fills its memory */
	int64_t t0 = ms_clock_now_ns();
	struct ms_sandbox_spec fresh = {
	    .guest = MS_GUEST_PATTERN, .mem_size = size, .memory = MS_SANDBOX_FRESH};
	if ((err = ms_sandbox_create(backend_ops, &fresh, &p)))
		goto fail;
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[MS_GUEST_CMD / 8] = MS_PATTERN_FILL;
	box[MS_GUEST_ARG0 / 8] = seed;
	box[MS_GUEST_ARG1 / 8] = epoch;
	if ((err = ms_sandbox_run(p)) || (err = ms_sandbox_wait_report(p, 60 * MS_NSEC_PER_SEC)))
		goto fail;
	box[MS_GUEST_CMD / 8] = 0; /* after a resume: report first */
	printf("run:    pattern guest, %llu MiB, filled in %.1f ms\n", (unsigned long long)mib,
	       (double)(ms_clock_now_ns() - t0) / 1e6);
	/* pause: stop, state, written set, memory handed to the pipeline */
	t0 = ms_clock_now_ns();
	if ((err = ms_sandbox_pause(p, &paused)))
		goto fail;
	double t_stop = (double)(ms_clock_now_ns() - t0) / 1e6;
	ms_sandbox_destroy(p);
	p = NULL;
	struct ms_diffstore_config dcfg = {.cache_dir = node_a};
	if (!(diffs = ms_diffstore_new(&dcfg, &err)))
		goto fail;
	ms_uuid template_id;
	ms_uuid_generate(&template_id);
	struct ms_build_storage storage = {
	    .store = store, .diffs = diffs, .cache_dir = node_a, .data = MS_ARTIFACT_MEMFILE};
	/* a fresh sandbox's parent: the empty template (all nil) */
	err = -ENOMEM;
	if (!(parent =
		  ms_layered_new(ms_header_new_base(&template_id, MS_HEADER_V4, P, size, false),
				 ms_build_storage_resolve, &storage)))
		goto fail;
	struct ms_pause_config cfg = {.store = store,
				      .diffs = diffs,
				      .cache_dir = node_a,
				      .inflight = true,
				      .compare_gate = gate};
	int memfd = paused.memfd;
	paused.memfd = -1;
	struct ms_pageset *no_empty = ms_pageset_new();
	int64_t t1 = ms_clock_now_ns();
	err = no_empty ? ms_pause_start(&cfg, parent, memfd, paused.written, no_empty,
					paused.snapfile, paused.snapfile_len, &pause)
		       : -ENOMEM;
	ms_pageset_free(no_empty);
	if (err)
		goto fail;
	double t_resumable = (double)(ms_clock_now_ns() - t1) / 1e6;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(ms_pause_build_id(pause), id);
	printf("pause:  build %s: stopped and saved in %.2f ms (%llu pages written), resumable "
	       "%.2f ms later; dedup stalled %.0f s\n",
	       id, t_stop, (unsigned long long)ms_pageset_count(paused.written), t_resumable,
	       stall);
	/* warm resume while the compare is stalled */
	uint64_t bad = 1, faults = 0;
	double ms;
	if ((err = demo_sandbox_resume(backend_ops, ms_pause_file(pause), sock, &paused, size, seed,
				       epoch, &bad, &ms, &faults)))
		goto fail;
	bool stalled = ms_pause_wait(pause, MS_PAUSE_COMPARED, 0) == -ETIMEDOUT;
	printf("warm:   lazy restore + the guest verified every page: %llu mismatches, %.1f ms, "
	       "%llu faults; dedup %s\n",
	       (unsigned long long)bad, ms, (unsigned long long)faults,
	       stalled ? "still stalled: the resume did not wait for it" : "had finished");
	uint64_t warm_bad = bad;
	ms_clock_sleep_ns((int64_t)(stall * 1e9) - (ms_clock_now_ns() - t1));
	ms_future_set(gate, NULL);
	int64_t t2 = ms_clock_now_ns();
	if ((err = ms_pause_wait(pause, MS_PAUSE_PUBLISHED, -1)))
		goto fail;
	uint64_t n_dirty, n_equal, n_zero, n_kept;
	ms_pause_counts(pause, &n_dirty, &n_equal, &n_zero, &n_kept);
	double t_dedup = (double)(ms_clock_now_ns() - t2) / 1e6;
	printf("dedup:  %llu written pages -> %llu zero, %llu kept (diff %.2f MiB); compared, "
	       "drained, uploaded and published in %.1f ms\n",
	       (unsigned long long)n_dirty, (unsigned long long)n_zero, (unsigned long long)n_kept,
	       (double)(n_kept * P) / 1048576.0, t_dedup);
	/* the control: a warm resume of the same build with no pause in flight */
	double warm_ms = ms, control_ms;
	uint64_t control_bad = 1;
	if ((err = demo_sandbox_resume(backend_ops, ms_pause_file(pause), sock, &paused, size, seed,
				       epoch, &control_bad, &control_ms, &faults)))
		goto fail;
	printf("control: warm resume of the published build, no pause in flight: %llu "
	       "mismatches, %.1f ms\n",
	       (unsigned long long)control_bad, control_ms);
	warm_bad |= control_bad;
	/* cold resume: another node, an empty cache, everything from the store */
	struct ms_header *published;
	if ((err = ms_build_storage_load_header(store, ms_pause_build_id(pause),
						MS_ARTIFACT_MEMFILE_HEADER, &published)))
		goto fail;
	struct ms_diffstore_config ccfg = {.cache_dir = node_b};
	if (!(cold_diffs = ms_diffstore_new(&ccfg, &err))) {
		ms_header_free(published);
		goto fail;
	}
	struct ms_build_storage cold_storage = {
	    .store = store, .diffs = cold_diffs, .cache_dir = node_b, .data = MS_ARTIFACT_MEMFILE};
	err = -ENOMEM;
	if (!(cold = ms_layered_new(published, ms_build_storage_resolve, &cold_storage)))
		goto fail;
	/* the snapfile comes from the store too */
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_SNAPFILE,
			MS_COMPRESS_NONE);
	void *snap;
	size_t snap_len;
	if ((err = ms_store_read_all(store, key, 1 << 20, &snap, &snap_len)))
		goto fail;
	struct ms_sandbox_paused from_store = {
	    .memfd = -1, .snapfile = snap, .snapfile_len = snap_len};
	err = demo_sandbox_resume(backend_ops, cold, sock, &from_store, size, seed, epoch, &bad,
				  &ms, &faults);
	free(snap);
	if (err)
		goto fail;
	printf("cold:   lazy restore from the store + the guest verified every page: %llu "
	       "mismatches, %.1f ms, %llu faults\n",
	       (unsigned long long)bad, ms, (unsigned long long)faults);
	rc = warm_bad == 0 && bad == 0 ? 0 : 1;
	printf("\ntimings (backend %s, %llu MiB guest, every resume verified by the guest):\n"
	       "  %-46s %10.2f ms\n  %-46s %10.2f ms\n  %-46s %10.1f ms\n"
	       "  %-46s %10.1f ms\n  %-46s %10.2f\n  %-46s %10.1f ms\n  %-46s %10.1f ms\n"
	       "  %-46s %10.1f %%\n\n",
	       backend_ops->name, (unsigned long long)mib, "pause: stop, state, written set",
	       t_stop, "pause: resumable after", t_resumable, "warm resume while dedup is stalled",
	       warm_ms, "control resume (no pause in flight)", control_ms, "warm / control",
	       warm_ms / control_ms, "dedup + drain + upload + publish (after stall)", t_dedup,
	       "cold resume from the store, empty cache", ms, "dedup: pages dropped or zero",
	       n_dirty ? 100.0 * (double)(n_dirty - n_kept) / (double)n_dirty : 0.0);
	printf("demo: %s\n", rc ? "FAILED: the guest found wrong memory"
				: "ok, the guest verified all its memory, warm and cold");
	goto out;
fail:
	rc = ms_cli_fail("demo sandbox", err);
out:
	if (pause && gate)
		ms_future_set(gate, NULL);
	ms_pause_free(pause);
	ms_sandbox_destroy(p);
	if (paused.memfd >= 0)
		close(paused.memfd);
	ms_pageset_free(paused.written);
	free(paused.snapfile);
	ms_layered_free(cold);
	ms_layered_free(parent);
	ms_diffstore_free(cold_diffs);
	ms_diffstore_free(diffs);
	if (gate)
		ms_future_unref(gate);
	ms_store_free(store);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", work);
	if (system(cmd) != 0 && !rc)
		rc = 1;
	return rc;
usage:
	fprintf(stderr, "usage: memsnap demo sandbox --store URI [--backend auto|kvm|proc] "
			"[--mem MIB] [--stall SECONDS]\n");
	return 2;
}
