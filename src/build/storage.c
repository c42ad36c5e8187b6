/*
 * storage.c - resolves builds to sources over an object store: a local (file store)
 * uncompressed object read in place, anything else chunked and cached on disk.
 */
#include "build/storage.h"
#include "cache/objsource.h"
#include "header/serialize.h"
#include "storage/checksums.h"
#include "storage/verified.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS_BUILD_HEADER_MAX	   (256u << 20)
#define MS_BUILD_READ_SIZE_DEFAULT (1u << 20)

int ms_build_storage_key(const struct ms_build_storage *bs, const ms_uuid *build_id, char *key,
			 size_t size)
{
	return ms_artifact_key(key, size, build_id, bs->data, MS_COMPRESS_NONE);
}

struct ms_build_create {
	struct ms_build_storage *bs;
	const ms_uuid *build_id;
	const struct ms_header *header;
};

int ms_build_storage_load_header(struct ms_store *store, const ms_uuid *build_id,
				 enum ms_artifact artifact, struct ms_header **out)
{
	char key[MS_ARTIFACT_KEY_MAX];
	int err = ms_artifact_key(key, sizeof(key), build_id, artifact, MS_COMPRESS_NONE);
	void *blob = NULL;
	size_t len;
	if (err || (err = ms_store_read_all(store, key, MS_BUILD_HEADER_MAX, &blob, &len)))
		return err;
	err = ms_header_deserialize(blob, len, out);
	free(blob);
	return err;
}

/* The build's complete self entry, from its own header in the store. */
static int ms_build_own_entry(struct ms_build_storage *bs, const ms_uuid *id,
			      struct ms_frame_table **frames, int64_t *size)
{
	enum ms_artifact hdr =
	    bs->data == MS_ARTIFACT_ROOTFS ? MS_ARTIFACT_ROOTFS_HEADER : MS_ARTIFACT_MEMFILE_HEADER;
	struct ms_header *own;
	int err = ms_build_storage_load_header(bs->store, id, hdr, &own);
	if (err)
		return err;
	const struct ms_build_data *self = ms_header_build(own, id);
	if (!self) {
		err = MS_ECORRUPT;
	} else {
		*size = self->size;
		*frames = self->frames ? ms_frame_table_copy(self->frames) : NULL;
		if (self->frames && !*frames)
			err = -ENOMEM;
	}
	ms_header_free(own);
	return err;
}

static bool ms_frames_cover(const struct ms_frame_table *t, int64_t size)
{
	int64_t end = 0;
	for (uint32_t i = 0; i < t->count; i++) {
		if (t->frames[i].start_u != end)
			return false;
		end += t->frames[i].size_u;
	}
	return end == size;
}

static int ms_build_create_source(const char *key, void *ctx, struct ms_source **out)
{
	(void)key;
	struct ms_build_create *c = ctx;
	struct ms_build_storage *bs = c->bs;
	const struct ms_build_data *entry = ms_header_build(c->header, c->build_id);
	struct ms_frame_table *frames = NULL;
	int64_t size = entry ? entry->size : 0;
	int err = 0;
	if (entry && entry->frames) {
		if (ms_frames_cover(entry->frames, entry->size))
			frames = ms_frame_table_copy(entry->frames);
		else if ((err = ms_build_own_entry(bs, c->build_id, &frames, &size)))
			return err;
		if (!frames && !err && entry->frames)
			return -ENOMEM;
	}
	enum ms_compression type = frames ? frames->type : MS_COMPRESS_NONE;
	char object[MS_ARTIFACT_KEY_MAX];
	if ((err = ms_artifact_key(object, sizeof(object), c->build_id, bs->data, type)))
		goto out;
	if (!frames && size <= 0) {
		/* size unknown (a V3 header's backfilled entry): ask the store */
		uint64_t object_size;
		if ((err = ms_store_size(bs->store, object, &object_size)))
			goto out;
		size = (int64_t)object_size;
	}
	if (type == MS_COMPRESS_NONE) {
		/* A local object is read in place (cache/objsource.h): no cache copy of it. */
		char local[4096];
		struct ms_sums *sums = NULL;
		err = ms_store_local(bs->store, object, local, sizeof(local), &sums);
		if (!err)
			*out = ms_source_object_open(local, object, (uint64_t)size, sums, &err);
		ms_sums_unref(sums);
		if (err && err != -ENOTSUP)
			ms_warn("build", "cannot open %s in place: %s", object, ms_strerror(err));
		if (err != -ENOTSUP)
			goto out;
		err = 0;
	}
	/*
	 * A fresh name per cache file: several resolvers (one per pause, one per
	 * template) may open the same build in one cache dir, and each one's serial
	 * starts at 0, so (pid, serial) alone collided (EEXIST).
	 */
	char path[4096], id[MS_UUID_STR_LEN], nonce[MS_UUID_STR_LEN];
	ms_uuid fresh;
	ms_uuid_generate(&fresh);
	ms_uuid_format(c->build_id, id);
	ms_uuid_format(&fresh, nonce);
	snprintf(path, sizeof(path), "%s/%s-%s-%d-%u-%.8s.cache", bs->cache_dir, id,
		 bs->data == MS_ARTIFACT_ROOTFS ? "rootfs" : "memfile", (int)getpid(),
		 atomic_fetch_add(&bs->serial, 1), nonce);
	/*
	 * Each sub-range of a chunk fetch is one store request, and object stores
	 * pay a latency per request: 1 MiB sub-ranges measured ~3x the touch
	 * throughput of 256 KiB ones from RGW here (bench pageserver.cold_s3_mib_s).
	 */
	struct ms_chunker_config chunker = bs->chunker;
	if (!chunker.read_size)
		chunker.read_size = MS_BUILD_READ_SIZE_DEFAULT;
	*out = ms_chunker_new(bs->store, object, (uint64_t)size, frames, path, &chunker, &err);
	if (!*out)
		ms_warn("build", "cannot open %s: %s", object, ms_strerror(err));
out:
	ms_frame_table_free(frames);
	return err;
}

int ms_build_storage_open(struct ms_build_storage *bs, const ms_uuid *build_id,
			  const struct ms_header *header, struct ms_source **out)
{
	struct ms_build_create c = {bs, build_id, header};
	return ms_build_create_source(NULL, &c, out);
}

#define MS_BUILD_METADATA_MAX (1u << 20)

int ms_build_storage_sums_finish(struct ms_store *store, const ms_uuid *build_id,
				 struct ms_sums *sums, const void *header, size_t header_len,
				 uint8_t **out, size_t *out_len)
{
	char key[MS_ARTIFACT_KEY_MAX];
	void *meta = NULL;
	size_t meta_len = 0;
	int err =
	    ms_artifact_key(key, sizeof(key), build_id, MS_ARTIFACT_METADATA, MS_COMPRESS_NONE);
	/* unless the pause put it itself (and listed it), a caller may have put one */
	if (!err && !ms_sums_find(sums, ms_artifact_name_of(key)) &&
	    !(err = ms_store_read_all(store, key, MS_BUILD_METADATA_MAX, &meta, &meta_len)))
		err = ms_sums_add_buf(sums, ms_artifact_name_of(key), meta, meta_len, 0);
	else if (err == MS_ENOTFOUND)
		err = 0; /* no metadata.json: nothing to list */
	free(meta);
	if (!err)
		err = ms_artifact_key(key, sizeof(key), build_id, MS_ARTIFACT_MEMFILE_HEADER,
				      MS_COMPRESS_NONE);
	if (!err)
		err = ms_sums_add_buf(sums, ms_artifact_name_of(key), header, header_len, 0);
	return err ? err : ms_sums_serialize(sums, out, out_len);
}

/* ---- build verify ---- */

const char *ms_verify_status_name(enum ms_verify_status status)
{
	static const char *const names[] = {"ok", "bad", "none", "missing"};
	return (unsigned)status <= MS_VERIFY_MISSING ? names[status] : "?";
}

#define MS_VERIFY_OBJECTS_MAX 64
#define MS_VERIFY_READ	      (8u << 20)

struct ms_verify_listing {
	size_t count;
	struct {
		char name[64];
		uint64_t size;
	} objects[MS_VERIFY_OBJECTS_MAX];
};

static int ms_verify_list_one(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	(void)mtime_ms;
	struct ms_verify_listing *l = ctx;
	const char *name = ms_artifact_name_of(key);
	if (l->count == MS_VERIFY_OBJECTS_MAX || strlen(name) >= sizeof(l->objects[0].name))
		return 0;
	snprintf(l->objects[l->count].name, sizeof(l->objects[0].name), "%s", name);
	l->objects[l->count++].size = size;
	return 0;
}

/* Reads object o of key whole, a run of blocks at a time, and checks each block. */
static void ms_verify_object(struct ms_store *raw, const char *key, const struct ms_sums_object *o,
			     struct ms_verify_row *row)
{
	if (row->bytes != o->size) {
		row->status = MS_VERIFY_BAD;
		row->bad_offset = row->bytes < o->size ? row->bytes : o->size;
		return;
	}
	uint8_t *buf = NULL;
	size_t cap = 0;
	row->status = MS_VERIFY_OK;
	for (uint32_t first = 0; first < o->count;) {
		uint32_t last = first;
		while (last + 1 < o->count &&
		       o->starts[last + 2] - o->starts[first] <= MS_VERIFY_READ)
			last++;
		size_t want = (size_t)(o->starts[last + 1] - o->starts[first]), got = 0;
		if (want > cap) {
			free(buf);
			cap = want;
			if (!(buf = malloc(cap))) {
				row->err = -ENOMEM;
				break;
			}
		}
		uint32_t bad = first;
		if ((row->err = ms_store_read_range(raw, key, o->starts[first], buf, want, &got)))
			break;
		if (got != want || ms_sums_check(o, first, buf, want, &bad)) {
			row->bad_offset = got != want ? o->starts[first] + got : o->starts[bad];
			row->status = MS_VERIFY_BAD;
			break;
		}
		first = last + 1;
	}
	if (row->err)
		row->status = MS_VERIFY_BAD;
	free(buf);
}

/* Checks the objects of one build; true when all are ok or none. */
static int ms_verify_build(struct ms_store *raw, const ms_uuid *id, ms_verify_fn fn, void *ctx,
			   bool *all_good)
{
	char prefix[MS_UUID_STR_LEN + 1], key[MS_ARTIFACT_KEY_MAX];
	ms_uuid_format(id, prefix);
	strcat(prefix, "/");
	struct ms_verify_listing *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	int err = ms_store_list(raw, prefix, ms_verify_list_one, l);
	struct ms_sums *sums = NULL;
	void *table = NULL;
	size_t table_len = 0;
	if (!err && !(err = ms_artifact_key(key, sizeof(key), id, MS_ARTIFACT_CHECKSUMS,
					    MS_COMPRESS_NONE))) {
		int terr = ms_store_read_all(raw, key, MS_SUMS_SIZE_MAX, &table, &table_len);
		if (!terr)
			terr = ms_sums_parse(table, table_len, &sums);
		free(table);
		if (terr && terr != MS_ENOTFOUND) {
			struct ms_verify_row row = {.build_id = *id,
						    .name = "checksums",
						    .bytes = table_len,
						    .status = MS_VERIFY_BAD,
						    .err = terr};
			fn(&row, ctx);
			*all_good = false;
		}
	}
	for (size_t i = 0; !err && i < l->count; i++) {
		struct ms_verify_row row = {.build_id = *id, .bytes = l->objects[i].size};
		memcpy(row.name, l->objects[i].name, sizeof(row.name));
		if (strcmp(row.name, "checksums") == 0) {
			if (!sums)
				continue;	   /* said above */
			row.status = MS_VERIFY_OK; /* its trailer matched */
		} else {
			const struct ms_sums_object *o = sums ? ms_sums_find(sums, row.name) : NULL;
			snprintf(key, sizeof(key), "%s%s", prefix, row.name);
			if (o)
				ms_verify_object(raw, key, o, &row);
			else
				row.status = MS_VERIFY_NONE;
		}
		*all_good &= row.status == MS_VERIFY_OK || row.status == MS_VERIFY_NONE;
		fn(&row, ctx);
	}
	for (unsigned k = 0; !err && sums && k < sums->count; k++) {
		bool listed = false;
		for (size_t i = 0; i < l->count; i++)
			listed |= strcmp(l->objects[i].name, sums->objects[k].name) == 0;
		if (listed)
			continue;
		struct ms_verify_row row = {.build_id = *id, .status = MS_VERIFY_MISSING};
		snprintf(row.name, sizeof(row.name), "%s", sums->objects[k].name);
		fn(&row, ctx);
		*all_good = false;
	}
	ms_sums_unref(sums);
	free(l);
	return err;
}

int ms_build_storage_verify(struct ms_store *store, const ms_uuid *build_id, ms_verify_fn fn,
			    void *ctx)
{
	struct ms_store *raw = ms_store_unverified(store);
	struct ms_header *h = NULL;
	int err = ms_build_storage_load_header(raw, build_id, MS_ARTIFACT_MEMFILE_HEADER, &h);
	bool all_good = true;
	if (err) {
		/* the objects still get their rows: the header may be what is bad */
		int lerr = ms_verify_build(raw, build_id, fn, ctx, &all_good);
		return lerr ? lerr : (all_good ? err : MS_ECHECKSUM);
	}
	err = ms_verify_build(raw, build_id, fn, ctx, &all_good);
	for (size_t i = 0; !err && i < h->mappings.count; i++) {
		const ms_uuid *id = &h->mappings.entries[i].build_id;
		bool seen = ms_uuid_is_nil(id) || ms_uuid_eq(id, build_id);
		for (size_t j = 0; !seen && j < i; j++)
			seen = ms_uuid_eq(&h->mappings.entries[j].build_id, id);
		if (!seen)
			err = ms_verify_build(raw, id, fn, ctx, &all_good);
	}
	ms_header_free(h);
	return err ? err : (all_good ? 0 : MS_ECHECKSUM);
}

int ms_build_storage_resolve(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
			     struct ms_source **out)
{
	struct ms_build_storage *bs = ctx;
	char key[MS_ARTIFACT_KEY_MAX];
	int err = ms_build_storage_key(bs, build_id, key, sizeof(key));
	if (err)
		return err;
	struct ms_build_create c = {bs, build_id, header};
	return ms_diffstore_get_or_create(bs->diffs, key, ms_build_create_source, &c, out);
}
