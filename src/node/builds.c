/*
 * builds.c - the build lifecycle through the API: the list of builds (this
 * node's template cache and the store's catalog), deleting a build, a pause
 * into a build id the caller chose, and the store quota.
 *
 * Invariants:
 *  1. A build is deleted only when nothing needs it: no sandbox on this node
 *     runs from it, is paused into it or reads from a build layered over it;
 *     no other cached build maps pages to it; no header in the store maps pages
 *     to it; and its own upload is over. Otherwise 409, and nothing changed.
 *  2. A delete removes the header first (no new resume finds the build), then
 *     the other objects and the build's leases; the local template goes before
 *     the store objects, so this node never serves what the store has lost.
 *  3. A caller-chosen build id is refused (409) while any object of it exists
 *     in the store or the cache holds it: an id names one build for good.
 *  4. The quota check counts the store's bytes (a listing, cached for a few
 *     seconds) plus the sandbox's memory, the most a pause can add.
 */
#include "node/node_int.h"
#include "build/catalog.h"
#include "header/header.h"
#include "storage/lease.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_MOD			"node"
#define MS_STORE_BYTES_FRESH_NS (5 * MS_NSEC_PER_SEC)

/* Whether file's current header maps any page to id (file borrowed). */
static bool ms_file_maps(struct ms_layered *file, const ms_uuid *id)
{
	if (!file)
		return false;
	struct ms_header_ref *ref = ms_layered_header(file);
	bool maps = false;
	for (size_t i = 0; !maps && i < ref->header->mappings.count; i++)
		maps = ms_uuid_eq(&ref->header->mappings.entries[i].build_id, id);
	ms_header_ref_unref(ref);
	return maps;
}

/*
 * node->lock held: why this node still needs build id (NULL: it does not).
 * cancel: a pipeline of its own still running is no reason (the delete cancels it).
 */
static const char *ms_build_needed_locked(struct ms_node *node, const ms_uuid *id, bool cancel,
					  struct ms_template **self)
{
	MS_ASSERT_HELD(&node->lock);
	*self = NULL;
	for (size_t i = 0; i < node->nsandboxes; i++) {
		const struct ms_node_sandbox *sb = node->sandboxes[i];
		if (sb->has_build && ms_uuid_eq(&sb->build_id, id))
			return sb->state == SB_PAUSED ? "a sandbox is paused into it"
						      : "a sandbox runs from it";
	}
	for (size_t i = 0; i < node->ntemplates; i++) {
		struct ms_template *t = node->templates[i];
		if (ms_uuid_eq(&t->id, id)) {
			*self = t;
			if (t->state != TMPL_READY)
				return "it is being fetched";
			if (t->pause && !t->done && !cancel)
				return "its upload is not over";
		} else if (t->state == TMPL_READY && ms_file_maps(t->file, id)) {
			return "a build cached here is layered over it";
		}
	}
	return NULL;
}

static void ms_json_id(cJSON *o, const char *name, const ms_uuid *id)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	cJSON_AddStringToObject(o, name, text);
}

void ms_handle_build_delete(struct ms_node *node, const struct ms_api_request *req,
			    struct ms_node_response *resp)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(&req->id, text);
	/* a pipeline of it ending while the store is listed may put its header after the
	 * listing: then the store is read again (below) */
	pthread_mutex_lock(&node->lock);
	ssize_t at = ms_template_index_locked(node, &req->id);
	bool running = at >= 0 && node->templates[at]->pause && !node->templates[at]->done;
	pthread_mutex_unlock(&node->lock);
	struct ms_catalog *catalog = NULL;
	int err = ms_catalog_load(node->store, ms_lease_now_ms(), &catalog);
	if (err) {
		ms_respond_errno(resp, err, "delete: reading the store", NULL);
		return;
	}
	const struct ms_catalog_build *b = ms_catalog_find(catalog, &req->id);
	ms_uuid dependent;
	size_t dependents = ms_catalog_dependents(catalog, &req->id, &dependent, 1);
	pthread_mutex_lock(&node->lock);
	struct ms_template *self;
	const char *needed = ms_build_needed_locked(node, &req->id, true, &self);
	if (!needed && !dependents && self && self->pause && self->done && running) {
		pthread_mutex_unlock(&node->lock);
		ms_catalog_free(catalog);
		ms_handle_build_delete(node, req, resp); /* it ended meanwhile: list again */
		return;
	}
	if (!needed && !dependents && self && self->pause && !self->done) {
		/*
		 * Nothing needs it but its own pipeline: cancelled through its token (it
		 * stops before its header: nothing half-written becomes visible, its
		 * objects go with the failure), waited for, then the store read again.
		 */
		ms_template_ref(self);
		pthread_mutex_unlock(&node->lock);
		ms_catalog_free(catalog);
		ms_info(MS_MOD, "build %s: delete cancels its pipeline", text);
		ms_pause_cancel(self->pause);
		pthread_mutex_lock(&node->lock);
		while (!self->done)
			pthread_cond_wait(&node->cond, &node->lock);
		pthread_mutex_unlock(&node->lock);
		ms_template_unref(self);
		ms_handle_build_delete(node, req, resp); /* its pipeline has ended now */
		return;
	}
	if (!needed && !b && !self) {
		pthread_mutex_unlock(&node->lock);
		ms_catalog_free(catalog);
		ms_respond_error(resp, 404, "not_found", "no build %s", text);
		return;
	}
	if (!needed && dependents) {
		char dep[MS_UUID_STR_LEN];
		ms_uuid_format(&dependent, dep);
		pthread_mutex_unlock(&node->lock);
		ms_respond_error(resp, 409, "conflict",
				 "build %s is needed: %zu build%s in the store layered over it "
				 "(%s%s)",
				 text, dependents, dependents == 1 ? " is" : "s are", dep,
				 dependents > 1 ? ", ..." : "");
		ms_catalog_free(catalog);
		return;
	}
	if (needed) {
		pthread_mutex_unlock(&node->lock);
		ms_catalog_free(catalog);
		ms_respond_error(resp, 409, "conflict", "build %s is needed: %s", text, needed);
		return;
	}
	if (self) { /* out of the cache first: this node never serves a deleted build */
		ssize_t i = ms_template_index_locked(node, &req->id);
		ms_template_remove_at_locked(node, (size_t)i);
	}
	pthread_mutex_unlock(&node->lock);
	ms_template_unref(self);
	/* the store: the header first (invariant 2), then the rest, then the leases */
	unsigned removed = 0;
	uint64_t bytes = 0;
	for (unsigned k = 0; b && !err && k < b->objects; k++) {
		err = ms_store_remove(node->store, b->keys[k]);
		if (err == MS_ENOTFOUND)
			err = 0;
		else if (!err) {
			removed++;
			bytes += b->key_bytes[k];
		}
	}
	if (!err && (err = ms_lease_remove(node->store, MS_LEASE_UPLOADS, &req->id)) == 0)
		err = ms_lease_remove(node->store, MS_LEASE_PEERS, &req->id);
	ms_catalog_free(catalog);
	if (err) {
		ms_respond_errno(resp, err, "delete", NULL);
		return;
	}
	ms_info(MS_MOD, "build %s deleted: %u objects, %llu bytes", text, removed,
		(unsigned long long)bytes);
	cJSON *o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "build_id", text);
		cJSON_AddBoolToObject(o, "deleted", true);
		cJSON_AddNumberToObject(o, "objects", removed);
		cJSON_AddNumberToObject(o, "bytes", (double)bytes);
	}
	ms_respond_json(resp, 200, o);
}

/* The store's listing as a build list entry (store_only: not cached here). */
static cJSON *ms_build_entry(const struct ms_catalog_build *b, int64_t now_ms)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	ms_json_id(o, "build_id", &b->id);
	if (b->has_parent)
		ms_json_id(o, "parent_build_id", &b->parent);
	else
		cJSON_AddNullToObject(o, "parent_build_id");
	const char *status = b->header_error ? "unreadable"
			     : b->has_header ? "published"
			     : b->leased     ? "uploading"
			     : b->reached    ? "header_removed"
					     : "incomplete";
	cJSON_AddStringToObject(o, "status", status);
	cJSON_AddNumberToObject(o, "bytes", (double)b->bytes);
	if (b->mtime_ms)
		cJSON_AddNumberToObject(o, "age_s", (double)((now_ms - b->mtime_ms) / 1000));
	else
		cJSON_AddNullToObject(o, "age_s");
	if (b->mem_bytes)
		cJSON_AddNumberToObject(o, "mem_bytes", (double)b->mem_bytes);
	cJSON_AddBoolToObject(o, "cached", false);
	return o;
}

void ms_handle_build_list(struct ms_node *node, const struct ms_api_request *req,
			  struct ms_node_response *resp)
{
	(void)req;
	int64_t now_ms = ms_lease_now_ms();
	struct ms_catalog *catalog = NULL;
	int err = ms_catalog_load(node->store, now_ms, &catalog);
	if (err) {
		ms_respond_errno(resp, err, "builds: reading the store", NULL);
		return;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON *list = o ? cJSON_AddArrayToObject(o, "builds") : NULL;
	/* the store's builds, with the cached ones' state from this node */
	for (size_t i = 0; list && i < catalog->count; i++) {
		cJSON *e = ms_build_entry(&catalog->builds[i], now_ms);
		if (e)
			cJSON_AddItemToArray(list, e);
	}
	pthread_mutex_lock(&node->lock);
	for (size_t i = 0; list && i < node->ntemplates; i++) {
		struct ms_template *t = node->templates[i];
		if (t->state != TMPL_READY)
			continue;
		enum ms_pause_state state =
		    t->pause ? ms_pause_state(t->pause, NULL) : MS_PAUSE_PUBLISHED;
		const char *status = ms_build_status_locked(node, t, state);
		const struct ms_catalog_build *b = ms_catalog_find(catalog, &t->id);
		cJSON *e = NULL;
		if (b) { /* in the store: the entry is there, its state is ours */
			char text[MS_UUID_STR_LEN];
			ms_uuid_format(&t->id, text);
			for (cJSON *it = list->child; it && !e; it = it->next) {
				const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "build_id");
				if (cJSON_IsString(id) && !strcmp(id->valuestring, text))
					e = it;
			}
			if (e) {
				cJSON_ReplaceItemInObjectCaseSensitive(e, "status",
								       cJSON_CreateString(status));
				cJSON_ReplaceItemInObjectCaseSensitive(e, "cached",
								       cJSON_CreateBool(true));
			}
			continue;
		}
		/* only here: paused here and not in the store yet, or read from a peer */
		if (!(e = cJSON_CreateObject()))
			continue;
		ms_json_id(e, "build_id", &t->id);
		if (t->parent && !t->parent->base)
			ms_json_id(e, "parent_build_id", &t->parent->id);
		else
			cJSON_AddNullToObject(e, "parent_build_id");
		cJSON_AddStringToObject(e, "status", status);
		cJSON_AddNumberToObject(e, "bytes", 0);
		cJSON_AddNullToObject(e, "age_s");
		cJSON_AddNumberToObject(e, "mem_bytes", (double)t->mem_size);
		cJSON_AddBoolToObject(e, "cached", true);
		cJSON_AddItemToArray(list, e);
	}
	pthread_mutex_unlock(&node->lock);
	if (list)
		cJSON_AddNumberToObject(o, "store_bytes", (double)catalog->total_bytes);
	ms_catalog_free(catalog);
	ms_respond_json(resp, 200, list ? o : (cJSON_Delete(o), NULL));
}

struct ms_key_probe {
	bool any;
	uint64_t bytes;
};

static int ms_probe_any(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	struct ms_key_probe *p = ctx;
	p->any = true;
	return 1; /* one is enough */
}

static int ms_sum_bytes(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	struct ms_key_probe *p = ctx;
	p->bytes += size;
	return 0;
}

/* The store's bytes, from a listing at most MS_STORE_BYTES_FRESH_NS old. */
static int ms_store_bytes(struct ms_node *node, uint64_t *bytes)
{
	pthread_mutex_lock(&node->quota_lock);
	int64_t now = ms_clock_now_ns();
	int err = 0;
	if (!node->store_bytes_at || now - node->store_bytes_at > MS_STORE_BYTES_FRESH_NS) {
		struct ms_key_probe sum = {0};
		if (!(err = ms_store_list(node->store, "", ms_sum_bytes, &sum))) {
			node->store_bytes_at = now;
			node->store_bytes = sum.bytes;
		}
	}
	*bytes = node->store_bytes;
	pthread_mutex_unlock(&node->quota_lock);
	return err;
}

int ms_builds_admit_pause(struct ms_node *node, const struct ms_node_sandbox *sb,
			  const struct ms_api_request *req, struct ms_node_response *resp)
{
	int err;
	if (req->named_build) {
		char text[MS_UUID_STR_LEN], prefix[MS_UUID_STR_LEN + 1];
		ms_uuid_format(&req->build_id, text);
		snprintf(prefix, sizeof(prefix), "%s/", text);
		pthread_mutex_lock(&node->lock);
		bool cached = ms_template_index_locked(node, &req->build_id) >= 0;
		pthread_mutex_unlock(&node->lock);
		struct ms_key_probe probe = {0};
		if (!cached && (err = ms_store_list(node->store, prefix, ms_probe_any, &probe))) {
			ms_respond_errno(resp, err, "pause: reading the store", NULL);
			return -1;
		}
		if (cached || probe.any) {
			ms_respond_error(resp, 409, "conflict",
					 "build_id %s is taken: a build of that id exists", text);
			return -1;
		}
	}
	if (node->cfg.store_quota_bytes) {
		uint64_t used;
		if ((err = ms_store_bytes(node, &used))) {
			ms_respond_errno(resp, err, "pause: the store quota", NULL);
			return -1;
		}
		if (used + sb->mem_size > node->cfg.store_quota_bytes) {
			ms_respond_error(
			    resp, 507, "quota_exceeded",
			    "the store holds %llu bytes; a pause of this sandbox may "
			    "add %llu, past store_quota_bytes %llu (delete builds or run "
			    "memsnap store gc)",
			    (unsigned long long)used, (unsigned long long)sb->mem_size,
			    (unsigned long long)node->cfg.store_quota_bytes);
			return -1;
		}
	}
	return 0;
}
