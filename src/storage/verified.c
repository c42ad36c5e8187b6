/*
 * verified.c - the checking store wrapper (see verified.h).
 *
 * Design notes: a read first finds the build's table (cache, else one read of
 * "{id}/checksums", checked by its trailer and fetched once more if it does not
 * match), then reads the whole blocks under the range into dst when the range
 * is block-aligned (chunk fetches are), else into a bounce buffer. The cache
 * holds at most MS_VERIFIED_CACHE builds, least recently used out first.
 */
#include "storage/verified.h"
#include "storage/checksums.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"
#include "util/uuid.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_VERIFIED_CACHE 256

struct ms_verified_entry {
	bool used;
	ms_uuid id;
	struct ms_sums *sums; /* one reference; NULL: the build has no table */
	uint64_t touched;
};

struct ms_store_verified {
	struct ms_store base;
	struct ms_store *inner; /* immutable */
	bool own;		/* immutable */
	pthread_mutex_t lock;
	struct ms_verified_entry cache[MS_VERIFIED_CACHE]; /* guarded by lock */
	uint64_t tick;					   /* guarded by lock */
};

static const struct ms_store_ops ms_verified_ops;

static struct ms_store_verified *ms_verified(struct ms_store *store)
{
	return (struct ms_store_verified *)store;
}

/* Splits "{uuid}/{name}" (name without '/'); false for any other key. */
static bool ms_verified_split(const char *key, ms_uuid *id, const char **name)
{
	const char *slash = strchr(key, '/');
	if (!slash || slash - key != MS_UUID_STR_LEN - 1 || strchr(slash + 1, '/'))
		return false;
	char text[MS_UUID_STR_LEN];
	memcpy(text, key, MS_UUID_STR_LEN - 1);
	text[MS_UUID_STR_LEN - 1] = '\0';
	*name = slash + 1;
	return ms_uuid_parse(text, id) == 0;
}

static struct ms_verified_entry *ms_verified_find_locked(struct ms_store_verified *v,
							 const ms_uuid *id)
{
	MS_ASSERT_HELD(&v->lock);
	for (size_t i = 0; i < MS_VERIFIED_CACHE; i++)
		if (v->cache[i].used && ms_uuid_eq(&v->cache[i].id, id))
			return &v->cache[i];
	return NULL;
}

static void ms_verified_drop(struct ms_store_verified *v, const ms_uuid *id)
{
	pthread_mutex_lock(&v->lock);
	struct ms_verified_entry *e = ms_verified_find_locked(v, id);
	if (e) {
		ms_sums_unref(e->sums);
		memset(e, 0, sizeof(*e));
	}
	pthread_mutex_unlock(&v->lock);
}

/* Remembers id's table (NULL: none); true when this call added it. */
static bool ms_verified_insert(struct ms_store_verified *v, const ms_uuid *id, struct ms_sums *sums)
{
	pthread_mutex_lock(&v->lock);
	bool added = false;
	if (!ms_verified_find_locked(v, id)) {
		struct ms_verified_entry *slot = &v->cache[0];
		for (size_t i = 0; i < MS_VERIFIED_CACHE; i++) {
			if (!v->cache[i].used) {
				slot = &v->cache[i];
				break;
			}
			if (v->cache[i].touched < slot->touched)
				slot = &v->cache[i];
		}
		ms_sums_unref(slot->sums);
		*slot = (struct ms_verified_entry){.used = true,
						   .id = *id,
						   .sums = sums ? ms_sums_ref(sums) : NULL,
						   .touched = ++v->tick};
		added = true;
	}
	pthread_mutex_unlock(&v->lock);
	return added;
}

/* Reads and parses id's table: 0 with *out (or NULL when there is none), or an error. */
static int ms_verified_load(struct ms_store_verified *v, const ms_uuid *id, struct ms_sums **out)
{
	char text[MS_UUID_STR_LEN], key[MS_UUID_STR_LEN + 16];
	ms_uuid_format(id, text);
	snprintf(key, sizeof(key), "%s/checksums", text);
	*out = NULL;
	int err = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		void *buf = NULL;
		size_t len = 0;
		err = ms_store_read_all(v->inner, key, MS_SUMS_SIZE_MAX, &buf, &len);
		if (!err) {
			err = ms_sums_parse(buf, len, out);
			free(buf);
			if (!err)
				return 0;
			if (!attempt) /* one damaged read counts once, fetched again or not */
				ms_integrity_count(MS_INTEGRITY_CHECKSUMS);
			ms_warn("storage", "%s (%zu bytes) does not parse: %s%s", key, len,
				ms_strerror(err), attempt ? "" : "; fetching it once more");
			continue;
		}
		if (err == MS_ENOTFOUND)
			break;
		return err; /* the store failed: nothing is known */
	}
	if (err != MS_ENOTFOUND) {
		ms_err("storage", "build %s: its checksum table is corrupt: every read fails",
		       text);
		return MS_ECHECKSUM;
	}
	/* no table: an older build when its header is there, else not published yet */
	bool published = false;
	static const char *const headers[] = {"memfile.header", "rootfs.ext4.header"};
	for (size_t i = 0; !published && i < 2; i++) {
		snprintf(key, sizeof(key), "%s/%s", text, headers[i]);
		if ((err = ms_store_exists(v->inner, key, &published)))
			return err;
	}
	if (published && ms_verified_insert(v, id, NULL))
		ms_info(
		    "storage",
		    "build %s has no checksums (written before memsnap kept them, or by another "
		    "tool): its objects are read unverified",
		    text);
	return 0;
}

/* id's table with one reference, or NULL (none); cached. */
static int ms_verified_sums(struct ms_store_verified *v, const ms_uuid *id, struct ms_sums **out)
{
	pthread_mutex_lock(&v->lock);
	struct ms_verified_entry *e = ms_verified_find_locked(v, id);
	if (e) {
		e->touched = ++v->tick;
		*out = e->sums ? ms_sums_ref(e->sums) : NULL;
	}
	pthread_mutex_unlock(&v->lock);
	if (e)
		return 0;
	int err = ms_verified_load(v, id, out);
	if (!err && *out)
		ms_verified_insert(v, id, *out);
	return err;
}

/*
 * Reads the blocks [first, last] of object o of key into buf, checks them, and
 * once more if they do not match. 0 or MS_ECHECKSUM (counted, logged), or the
 * store's error.
 */
static int ms_verified_fetch(struct ms_store_verified *v, const char *key,
			     const struct ms_sums_object *o, uint32_t first, uint32_t last,
			     uint8_t *buf)
{
	uint64_t start = o->starts[first];
	size_t want = (size_t)(o->starts[last + 1] - start);
	enum ms_integrity_object kind = ms_integrity_classify(o->name);
	for (int attempt = 0; attempt < 2; attempt++) {
		size_t got = 0;
		int err = v->inner->ops->read_range(v->inner, key, start, buf, want, &got);
		if (err)
			return err;
		uint32_t bad = first;
		if (got == want && !(err = ms_sums_check(o, first, buf, want, &bad)))
			return 0;
		if (!attempt) /* one damaged read counts once, fetched again or not */
			ms_integrity_count(kind);
		if (got != want)
			ms_warn("storage", "%s: %zu bytes at %llu where %zu were expected (%s)%s",
				key, got, (unsigned long long)start, want,
				got < want ? "truncated" : "longer",
				attempt ? "" : ": fetching it once more");
		else
			ms_warn("storage", "%s: block %u at %llu does not match its checksum%s",
				key, bad, (unsigned long long)o->starts[bad],
				attempt ? "" : ": fetching it once more");
	}
	ms_err("storage", "%s: [%llu, +%zu) failed its checksum twice: the read fails", key,
	       (unsigned long long)start, want);
	return MS_ECHECKSUM;
}

static int ms_verified_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
				  size_t len, size_t *got)
{
	struct ms_store_verified *v = ms_verified(store);
	ms_uuid id;
	const char *name;
	struct ms_sums *sums = NULL;
	const struct ms_sums_object *o = NULL;
	if (ms_verified_split(key, &id, &name) && strcmp(name, "checksums") != 0) {
		int err = ms_verified_sums(v, &id, &sums);
		if (err)
			return err;
		o = sums ? ms_sums_find(sums, name) : NULL;
	}
	if (!o) {
		ms_sums_unref(sums);
		return v->inner->ops->read_range(v->inner, key, off, dst, len, got);
	}
	*got = 0;
	uint64_t end = off + len < o->size ? off + len : o->size;
	int err = 0;
	if (off < end) {
		uint32_t first = ms_sums_block_of(o, off), last = ms_sums_block_of(o, end - 1);
		bool aligned = o->starts[first] == off && o->starts[last + 1] == end;
		uint8_t *buf =
		    aligned ? dst : malloc((size_t)(o->starts[last + 1] - o->starts[first]));
		err = buf ? ms_verified_fetch(v, key, o, first, last, buf) : -ENOMEM;
		if (!err && !aligned)
			memcpy(dst, buf + (off - o->starts[first]), (size_t)(end - off));
		if (!aligned)
			free(buf);
		if (!err)
			*got = (size_t)(end - off);
	}
	ms_sums_unref(sums);
	return err;
}

/* A put or remove of a table drops what is cached of it. */
static void ms_verified_wrote(struct ms_store_verified *v, const char *key)
{
	ms_uuid id;
	const char *name;
	if (ms_verified_split(key, &id, &name) && strcmp(name, "checksums") == 0)
		ms_verified_drop(v, &id);
}

static int ms_verified_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
			       const struct ms_store_meta *meta)
{
	struct ms_store_verified *v = ms_verified(store);
	int err = v->inner->ops->put_buf(v->inner, key, buf, len, meta);
	ms_verified_wrote(v, key);
	return err;
}

static int ms_verified_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
				const struct ms_store_meta *meta)
{
	struct ms_store_verified *v = ms_verified(store);
	int err = v->inner->ops->put_file(v->inner, key, fd, size, meta);
	ms_verified_wrote(v, key);
	return err;
}

static int ms_verified_size(struct ms_store *store, const char *key, uint64_t *size)
{
	struct ms_store_verified *v = ms_verified(store);
	return v->inner->ops->size(v->inner, key, size);
}

static int ms_verified_remove(struct ms_store *store, const char *key)
{
	struct ms_store_verified *v = ms_verified(store);
	int err = v->inner->ops->remove(v->inner, key);
	ms_verified_wrote(v, key);
	return err;
}

static int ms_verified_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn,
			    void *ctx)
{
	struct ms_store_verified *v = ms_verified(store);
	return v->inner->ops->list(v->inner, prefix, fn, ctx);
}

static int ms_verified_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta)
{
	struct ms_store_verified *v = ms_verified(store);
	return v->inner->ops->get_meta(v->inner, key, meta);
}

static int ms_verified_remove_incomplete(struct ms_store *store, const char *prefix,
					 int64_t older_than_ms, bool dry_run, size_t *count)
{
	return ms_store_remove_incomplete(ms_verified(store)->inner, prefix, older_than_ms, dry_run,
					  count);
}

/* The inner store's answer, with the table that lists the object (the reader checks). */
static int ms_verified_local(struct ms_store *store, const char *key, char *path, size_t cap,
			     struct ms_sums **sums)
{
	struct ms_store_verified *v = ms_verified(store);
	int err = ms_store_local(v->inner, key, path, cap, sums);
	ms_uuid id;
	const char *name;
	if (err || !ms_verified_split(key, &id, &name) || strcmp(name, "checksums") == 0)
		return err;
	struct ms_sums *table = NULL;
	if ((err = ms_verified_sums(v, &id, &table)))
		return err;
	if (table && ms_sums_find(table, name)) {
		ms_sums_unref(*sums);
		*sums = table;
	} else {
		ms_sums_unref(table);
	}
	return 0;
}

static void ms_verified_free(struct ms_store *store)
{
	struct ms_store_verified *v = ms_verified(store);
	for (size_t i = 0; i < MS_VERIFIED_CACHE; i++)
		ms_sums_unref(v->cache[i].sums);
	if (v->own)
		ms_store_free(v->inner);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

static const struct ms_store_ops ms_verified_ops = {
    .name = "verified",
    .put_buf = ms_verified_put_buf,
    .put_file = ms_verified_put_file,
    .read_range = ms_verified_read_range,
    .size = ms_verified_size,
    .remove = ms_verified_remove,
    .list = ms_verified_list,
    .get_meta = ms_verified_get_meta,
    .free = ms_verified_free,
    .remove_incomplete = ms_verified_remove_incomplete,
    .local = ms_verified_local,
};

struct ms_store *ms_store_verified_new(struct ms_store *inner, bool own)
{
	if (!inner)
		return NULL;
	struct ms_store_verified *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->base.ops = &ms_verified_ops;
	v->inner = inner;
	v->own = own;
	pthread_mutex_init(&v->lock, NULL);
	return &v->base;
}

struct ms_store *ms_store_unverified(struct ms_store *store)
{
	return store && store->ops == &ms_verified_ops ? ms_verified(store)->inner : store;
}
