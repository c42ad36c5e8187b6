/*
 * catalog.c - a store's builds, leases and what a collector may remove
 * (catalog.h has the model and the plan's invariants).
 *
 * One listing of the whole store groups the objects by their first key
 * segment: a UUID is a build, "peers" and "uploads" are leases, anything else
 * is left alone. Then every "*.header" object of every build is loaded and its
 * mappings give the builds it reaches; a build reached by nobody, leased by
 * nobody and old enough is a leftover.
 */
#include "build/catalog.h"
#include "build/storage.h"
#include "header/header.h"
#include "storage/artifact.h"
#include "storage/lease.h"
#include "util/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ms_catalog_load {
	struct ms_catalog *c;
	size_t cap, lease_cap;
	int err;
};

static int ms_catalog_build_cmp(const void *a, const void *b)
{
	return memcmp(&((const struct ms_catalog_build *)a)->id,
		      &((const struct ms_catalog_build *)b)->id, sizeof(ms_uuid));
}

static int ms_catalog_uuid_cmp(const void *a, const void *b)
{
	return ms_uuid_cmp(a, b);
}

/* The build for id: the last one added (a listing comes in key order), else a new one. */
static struct ms_catalog_build *ms_catalog_build_of(struct ms_catalog_load *l, const ms_uuid *id)
{
	struct ms_catalog *c = l->c;
	if (c->count && ms_uuid_eq(&c->builds[c->count - 1].id, id))
		return &c->builds[c->count - 1];
	if (c->count == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct ms_catalog_build *grown = realloc(c->builds, cap * sizeof(*grown));
		if (!grown)
			return NULL;
		c->builds = grown;
		l->cap = cap;
	}
	struct ms_catalog_build *b = &c->builds[c->count++];
	memset(b, 0, sizeof(*b));
	b->id = *id;
	return b;
}

static int ms_catalog_add_key(struct ms_catalog_build *b, const char *key, uint64_t size)
{
	char **keys = realloc(b->keys, (b->objects + 1) * sizeof(*keys));
	if (keys)
		b->keys = keys;
	uint64_t *bytes = realloc(b->key_bytes, (b->objects + 1) * sizeof(*bytes));
	if (bytes)
		b->key_bytes = bytes;
	char *copy = strdup(key);
	if (!keys || !bytes || !copy) {
		free(copy);
		return -ENOMEM;
	}
	/* headers first (invariant 2): a header goes to the front */
	size_t at = b->objects;
	size_t len = strlen(key);
	if (len > 7 && !strcmp(key + len - 7, ".header")) {
		memmove(b->keys + 1, b->keys, b->objects * sizeof(*keys));
		memmove(b->key_bytes + 1, b->key_bytes, b->objects * sizeof(*bytes));
		at = 0;
	}
	b->keys[at] = copy;
	b->key_bytes[at] = size;
	b->objects++;
	return 0;
}

static int ms_catalog_add_lease(struct ms_catalog_load *l, const char *key, uint64_t size)
{
	struct ms_catalog *c = l->c;
	if (c->nleases == l->lease_cap) {
		size_t cap = l->lease_cap ? l->lease_cap * 2 : 16;
		struct ms_catalog_lease *grown = realloc(c->leases, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		c->leases = grown;
		l->lease_cap = cap;
	}
	struct ms_catalog_lease *lease = &c->leases[c->nleases++];
	memset(lease, 0, sizeof(*lease));
	snprintf(lease->key, sizeof(lease->key), "%s", key);
	lease->bytes = size;
	return 0;
}

static int ms_catalog_on_key(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	struct ms_catalog_load *l = ctx;
	const char *slash = strchr(key, '/');
	size_t first = slash ? (size_t)(slash - key) : strlen(key);
	char head[MS_UUID_STR_LEN];
	ms_uuid id;
	int err = 0;
	if (slash && first == MS_UUID_STR_LEN - 1) {
		memcpy(head, key, first);
		head[first] = '\0';
		if (!ms_uuid_parse(head, &id) && !ms_uuid_is_nil(&id)) {
			struct ms_catalog_build *b = ms_catalog_build_of(l, &id);
			if (!b || ms_catalog_add_key(b, key, size)) {
				l->err = -ENOMEM;
				return -1;
			}
			b->bytes += size;
			l->c->total_bytes += size;
			if (mtime_ms > b->mtime_ms)
				b->mtime_ms = mtime_ms;
			if (!strcmp(slash + 1, "memfile.header"))
				b->has_header = true;
			return 0;
		}
	}
	if (slash && ((first == 5 && !strncmp(key, MS_LEASE_PEERS, 5)) ||
		      (first == 7 && !strncmp(key, MS_LEASE_UPLOADS, 7))))
		err = ms_catalog_add_lease(l, key, size);
	else
		l->c->other_keys++;
	if (err) {
		l->err = err;
		return -1;
	}
	return 0;
}

/* Loads one header of b (memfile or rootfs) and adds the other builds it maps to to refs. */
static int ms_catalog_read_header(struct ms_store *store, struct ms_catalog_build *b, bool own)
{
	struct ms_header *h = NULL;
	int err = ms_build_storage_load_header(
	    store, &b->id, own ? MS_ARTIFACT_MEMFILE_HEADER : MS_ARTIFACT_ROOTFS_HEADER, &h);
	if (err)
		return err;
	if (own) {
		b->generation = h->meta.generation;
		b->mem_bytes = h->meta.size;
	}
	ms_uuid *refs = realloc(b->refs, (b->nrefs + h->mappings.count) * sizeof(*refs));
	if (!refs) {
		ms_header_free(h);
		return -ENOMEM;
	}
	b->refs = refs;
	for (size_t i = 0; i < h->mappings.count; i++) {
		const ms_uuid *ref = &h->mappings.entries[i].build_id;
		if (!ms_uuid_is_nil(ref) && !ms_uuid_eq(ref, &b->id))
			b->refs[b->nrefs++] = *ref;
	}
	ms_header_free(h);
	/* sorted, no duplicates */
	qsort(b->refs, b->nrefs, sizeof(*b->refs), ms_catalog_uuid_cmp);
	size_t n = 0;
	for (size_t i = 0; i < b->nrefs; i++)
		if (!n || !ms_uuid_eq(&b->refs[n - 1], &b->refs[i]))
			b->refs[n++] = b->refs[i];
	b->nrefs = n;
	return 0;
}

static struct ms_catalog_build *ms_catalog_lookup(struct ms_catalog *c, const ms_uuid *id)
{
	struct ms_catalog_build key = {.id = *id};
	return c->count ? bsearch(&key, c->builds, c->count, sizeof(key), ms_catalog_build_cmp)
			: NULL;
}

const struct ms_catalog_build *ms_catalog_find(const struct ms_catalog *catalog, const ms_uuid *id)
{
	return ms_catalog_lookup((struct ms_catalog *)catalog, id);
}

int ms_catalog_load(struct ms_store *store, int64_t now_ms, struct ms_catalog **out)
{
	struct ms_catalog *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	struct ms_catalog_load l = {.c = c};
	int err = ms_store_list(store, "", ms_catalog_on_key, &l);
	if (l.err)
		err = l.err;
	if (err)
		goto fail;
	/* listings are in key order, so ids come sorted; a backend that lists otherwise
	 * would merely repeat an id (ms_catalog_build_of joins only neighbours): sort */
	if (c->count) /* qsort's base may not be NULL, even for no element */
		qsort(c->builds, c->count, sizeof(*c->builds), ms_catalog_build_cmp);
	for (size_t i = 0; i < c->count; i++) {
		struct ms_catalog_build *b = &c->builds[i];
		for (unsigned k = 0; k < b->objects; k++) {
			const char *name = b->keys[k] + MS_UUID_STR_LEN;
			bool own = !strcmp(name, "memfile.header");
			if (!own && strcmp(name, "rootfs.ext4.header"))
				continue;
			int herr = ms_catalog_read_header(store, b, own);
			if (herr == -ENOMEM) {
				err = herr;
				goto fail;
			}
			if (herr && !b->header_error)
				b->header_error = herr;
		}
	}
	/* reached: a header maps to it (a build with its own header reaches itself) */
	for (size_t i = 0; i < c->count; i++) {
		struct ms_catalog_build *b = &c->builds[i];
		if (b->has_header && !b->header_error)
			b->reached = true;
		uint64_t best_gen = 0;
		for (size_t r = 0; r < b->nrefs; r++) {
			struct ms_catalog_build *a = ms_catalog_lookup(c, &b->refs[r]);
			if (!a)
				continue;
			a->reached = true;
			/* the parent: the newest ancestor with a header of its own */
			if (a->has_header && !a->header_error &&
			    (!b->has_parent || a->generation > best_gen)) {
				b->parent = a->id;
				b->has_parent = true;
				best_gen = a->generation;
			}
		}
	}
	/* leases: live ones keep their builds */
	for (size_t i = 0; i < c->nleases; i++) {
		struct ms_catalog_lease *lease = &c->leases[i];
		bool peers = !strncmp(lease->key, "peers/", 6);
		struct ms_lease parsed;
		char want[96];
		int lerr = ms_lease_read(store, lease->key, peers ? "address" : "holder", &parsed);
		if (lerr == MS_ECORRUPT || lerr == MS_ENOTFOUND)
			continue; /* malformed (or gone meanwhile): not live, no build */
		if (lerr) {	  /* the store failed: never take a lease for dead on that */
			err = lerr;
			goto fail;
		}
		ms_lease_key(peers ? MS_LEASE_PEERS : MS_LEASE_UPLOADS, &parsed.build_id, want,
			     sizeof(want));
		if (strcmp(want, lease->key))
			continue; /* names another build than its key: malformed */
		lease->build_id = parsed.build_id;
		lease->live = now_ms < parsed.expires_at_ms;
		struct ms_catalog_build *b =
		    lease->live ? ms_catalog_lookup(c, &parsed.build_id) : NULL;
		if (b)
			b->leased = true;
	}
	*out = c;
	return 0;
fail:
	ms_catalog_free(c);
	return err;
}

void ms_catalog_free(struct ms_catalog *catalog)
{
	if (!catalog)
		return;
	for (size_t i = 0; i < catalog->count; i++) {
		struct ms_catalog_build *b = &catalog->builds[i];
		for (unsigned k = 0; k < b->objects; k++)
			free(b->keys[k]);
		free(b->keys);
		free(b->key_bytes);
		free(b->refs);
	}
	free(catalog->builds);
	free(catalog->leases);
	free(catalog);
}

size_t ms_catalog_dependents(const struct ms_catalog *catalog, const ms_uuid *id, ms_uuid *out,
			     size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < catalog->count; i++) {
		const struct ms_catalog_build *b = &catalog->builds[i];
		if (b->nrefs && bsearch(id, b->refs, b->nrefs, sizeof(*id), ms_catalog_uuid_cmp)) {
			if (n < max)
				out[n] = b->id;
			n++;
		}
	}
	return n;
}

static int ms_gc_plan_add(struct ms_gc_plan *plan, size_t *cap, const char *key, uint64_t bytes,
			  const char *why)
{
	if (plan->count == *cap) {
		size_t grown_cap = *cap ? *cap * 2 : 32;
		struct ms_gc_item *grown = realloc(plan->items, grown_cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		plan->items = grown;
		*cap = grown_cap;
	}
	struct ms_gc_item *item = &plan->items[plan->count++];
	snprintf(item->key, sizeof(item->key), "%s", key);
	item->bytes = bytes;
	item->why = why;
	plan->bytes += bytes;
	return 0;
}

int ms_catalog_gc_plan(const struct ms_catalog *catalog, int64_t now_ms, int64_t older_than_ms,
		       struct ms_gc_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	size_t cap = 0;
	int err = 0;
	for (size_t i = 0; !err && i < catalog->count; i++) {
		const struct ms_catalog_build *b = &catalog->builds[i];
		if (b->header_error) {
			plan->kept_broken++;
			continue;
		}
		if (b->reached)
			continue;
		if (b->leased) {
			plan->kept_leased++;
			continue;
		}
		/* an unknown age is never old enough */
		if (!b->mtime_ms || now_ms - b->mtime_ms < older_than_ms) {
			plan->kept_young++;
			continue;
		}
		for (unsigned k = 0; !err && k < b->objects; k++)
			err = ms_gc_plan_add(plan, &cap, b->keys[k], b->key_bytes[k],
					     "no header reaches it");
	}
	for (size_t i = 0; !err && i < catalog->nleases; i++) {
		const struct ms_catalog_lease *lease = &catalog->leases[i];
		if (!lease->live)
			err = ms_gc_plan_add(plan, &cap, lease->key, lease->bytes,
					     ms_uuid_is_nil(&lease->build_id) ? "malformed lease"
									      : "expired lease");
	}
	if (err)
		ms_gc_plan_fini(plan);
	return err;
}

int ms_gc_plan_run(struct ms_store *store, const struct ms_gc_plan *plan, size_t *removed)
{
	*removed = 0;
	for (size_t i = 0; i < plan->count; i++) {
		int err = ms_store_remove(store, plan->items[i].key);
		if (err && err != MS_ENOTFOUND)
			return err;
		if (!err)
			(*removed)++;
	}
	return 0;
}

void ms_gc_plan_fini(struct ms_gc_plan *plan)
{
	free(plan->items);
	memset(plan, 0, sizeof(*plan));
}
