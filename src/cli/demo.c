/* demo.c - what the three demo commands share (demo.h). */
#include "cli/demo.h"
#include "header/serialize.h"
#include "storage/artifact.h"
#include "storage/frames.h"
#include "uffd/filesource.h"
#include "uffd/pageserver.h"
#include "util/err.h"
#include "util/pageset.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define P MS_PAGE_SIZE

/* Reads a decimal in [min, max] into *out; false when optarg is not one. */
static bool ms_demo_number(const char *arg, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end = NULL;
	uint64_t v = strtoull(arg, &end, 10);
	if (!*arg || *end || arg[0] == '-' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool ms_demo_parse(int argc, char **argv, const char *letters, const char *help, const char *usage,
		   struct ms_demo_opts *o, int *rc)
{
	static const struct option opts[] = {
	    {"store", required_argument, NULL, 's'},   {"endpoint", required_argument, NULL, 'e'},
	    {"backend", required_argument, NULL, 'b'}, {"mem", required_argument, NULL, 'm'},
	    {"layers", required_argument, NULL, 'l'},  {"stall", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},	       {NULL, 0, NULL, 0},
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		if (c == 'h') {
			fputs(help, stdout);
			*rc = 0;
			return false;
		}
		if (c == '?' || !strchr(letters, c))
			goto usage;
		switch (c) {
		case 's':
			o->store_uri = optarg;
			break;
		case 'e':
			o->endpoint = optarg;
			break;
		case 'b':
			o->backend = optarg;
			break;
		case 'm':
			if (!ms_demo_number(optarg, 1, 4096, &o->mib))
				goto usage;
			break;
		case 'l':
			if (!ms_demo_number(optarg, 1, 64, &o->layers))
				goto usage;
			break;
		case 't':
			o->stall = strtod(optarg, &end);
			if (!*optarg || *end || o->stall < 0 || o->stall > 600)
				goto usage;
			break;
		}
	}
	if (o->store_uri && optind == argc)
		return true;
usage:
	fputs(usage, stderr);
	*rc = 2;
	return false;
}

int ms_demo_work_init(struct ms_demo_work *w, const char *name)
{
	snprintf(w->dir, sizeof(w->dir), "/tmp/memsnap-demo-%s.XXXXXX", name);
	if (!mkdtemp(w->dir))
		return -errno;
	snprintf(w->node_a, sizeof(w->node_a), "%s/node-a", w->dir);
	snprintf(w->node_b, sizeof(w->node_b), "%s/node-b", w->dir);
	snprintf(w->sock, sizeof(w->sock), "%s/uffd.sock", w->dir);
	if (mkdir(w->node_a, 0700) || mkdir(w->node_b, 0700)) {
		int err = -errno;
		ms_demo_work_fini(w);
		return err;
	}
	return 0;
}

int ms_demo_work_fini(struct ms_demo_work *w)
{
	char cmd[sizeof(w->dir) + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", w->dir);
	return system(cmd) == 0 ? 0 : -1;
}

void ms_demo_fill(uint8_t *page, uint32_t seed)
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

uint64_t ms_demo_rng(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

int ms_demo_base_header(struct ms_demo_layer *layer, uint64_t pages)
{
	struct ms_pageset *all = ms_pageset_new(), *none = ms_pageset_new();
	struct ms_header *nil_base =
	    ms_header_new_base(&layer->id, MS_HEADER_V4, P, pages * P, false);
	int err = -ENOMEM;
	if (all && none && nil_base) {
		ms_pageset_add_range(all, 0, pages);
		err = ms_header_new_diff(nil_base, &layer->id, all, none, P, false, &layer->header);
	}
	if (!err) /* the template's base: generation 0, as a fresh build's header */
		layer->header->meta.generation = 0;
	ms_header_free(nil_base);
	ms_pageset_free(all);
	ms_pageset_free(none);
	return err;
}

int ms_demo_publish(struct ms_store *store, struct ms_demo_layer *layer, const uint8_t *data,
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

struct ms_pageserver *ms_demo_pageserver(const char *sock, struct ms_layered *file, int *err)
{
	struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = 65536};
	return ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts, err);
}
