/*
 * handlers.c - the API's requests (api.h parses them) answered as JSON or
 * Prometheus text: sandbox create/list/get/pause/resume/delete, a build's
 * status and figures, its scheduling metadata, /metrics and /healthz.
 *
 * Handlers take the sandbox's op lock for an operation on it, and node->lock
 * only to read or update the tables and the fields marked so in node_int.h;
 * they never hold node->lock across store I/O.
 *
 * Invariants:
 *  1. Every request gets an answer: errors are JSON bodies with a status
 *     (ms_respond_errno maps an operation's error to one), and out of memory
 *     is a 500 with a fixed body.
 *  2. While the node stops, only /metrics and /healthz are answered (503).
 *  3. A build's status never names the provisional header: figures come from
 *     the pipeline's finished stages, metadata from the durable header.
 */
#include "node/node_int.h"
#include "header/header.h"
#include "snapshot/sched_metadata.h"
#include "storage/artifact.h"
#include "storage/faulty.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P      MS_PAGE_SIZE
#define MS_MOD "node"

/* ---- JSON responses ---- */

void ms_respond_json(struct ms_node_response *resp, unsigned status, cJSON *body)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = body ? cJSON_PrintUnformatted(body) : NULL;
	cJSON_Delete(body);
	if (!resp->body) {
		resp->status = 500;
		resp->body = strdup("{\"error\":\"internal\",\"message\":\"out of memory\"}");
	}
}

void ms_respond_error(struct ms_node_response *resp, unsigned status, const char *code,
		      const char *fmt, ...)
{
	struct ms_api_error e = {.status = status, .code = code};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.message, sizeof(e.message), fmt, ap);
	va_end(ap);
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = ms_api_error_json(&e);
	/* 429: a sandbox slot frees when one is deleted; 503: a stopping daemon is
	 * back within its restart (systemd's RestartSec=2 plus its start) */
	resp->retry_after = status == 429 ? 1 : status == 503 ? 5 : 0;
}

/* An operation's error as an HTTP answer. */
void ms_respond_errno(struct ms_node_response *resp, int err, const char *what, const char *cause)
{
	const char *reason = cause && *cause ? cause : ms_strerror(err);
	switch (err) {
	case MS_ENOTFOUND:
		ms_respond_error(resp, 404, "not_found", "%s: no such build in the store", what);
		return;
	case -EBUSY:
		ms_respond_error(resp, 409, "conflict", "%s: the build failed on this node", what);
		return;
	case -ETIMEDOUT:
		ms_respond_error(resp, 504, "timeout", "%s: %s", what, reason);
		return;
	case MS_ECORRUPT:
	case MS_ECHECKSUM: /* e.g. a damaged snapfile: the build is unusable, not the daemon */
	case MS_EBACKEND:
	case MS_EVERSION:
		ms_respond_error(resp, 422, "unusable_build", "%s: %s", what, reason);
		return;
	case -ECHILD:
		ms_respond_error(resp, 500, "guest_died", "%s: %s", what, reason);
		return;
	default:
		ms_respond_error(resp, 500, "internal", "%s: %s", what, reason);
	}
}

/*
 * A build the store does not have: 410 when the recovery found it lost (this
 * node died before its upload finished), else 404.
 */
static void ms_respond_no_build(struct ms_node *node, struct ms_node_response *resp,
				const ms_uuid *id, const char *what)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	if (ms_node_is_lost(node, id))
		ms_respond_error(resp, 410, "lost",
				 "%s: build %s was lost: memsnapd stopped before its upload "
				 "finished, and its leftovers were removed",
				 what, text);
	else
		ms_respond_error(resp, 404, "not_found", "%s: no build %s", what, text);
}

static void ms_json_uuid(cJSON *o, const char *name, const ms_uuid *id)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	cJSON_AddStringToObject(o, name, text);
}

static const char *const ms_sb_state_names[] = {"running", "paused", "failed"};

/* A prefetch's figures (uffd/prefetch.h) as the sandbox and build JSON show them. */
static void ms_prefetch_json(cJSON *o, const char *source, const struct ms_uffd_prefetch_stats *st)
{
	cJSON *p = cJSON_AddObjectToObject(o, "prefetch");
	if (!p)
		return;
	cJSON_AddStringToObject(p, "source", source);
	cJSON_AddNumberToObject(p, "blocks", (double)st->blocks);
	cJSON_AddNumberToObject(p, "pages_planned", (double)st->pages_planned);
	cJSON_AddNumberToObject(p, "pages_installed", (double)st->pages_installed);
	cJSON_AddNumberToObject(p, "pages_skipped", (double)st->pages_skipped);
	cJSON_AddNumberToObject(p, "read_errors", (double)st->read_errors);
	cJSON_AddNumberToObject(p, "duration_ms", (double)st->duration_ns / 1e6);
	cJSON_AddBoolToObject(p, "done", st->done);
	cJSON_AddBoolToObject(p, "stopped", st->stopped);
}

static cJSON *ms_nsb_json_locked(struct ms_node *node, const struct ms_node_sandbox *sb)
{
	MS_ASSERT_HELD(&node->lock);
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	ms_json_uuid(o, "id", &sb->id);
	cJSON_AddStringToObject(o, "state", ms_sb_state_names[sb->state]);
	const char *guest = ms_guest_name(sb->guest);
	cJSON_AddStringToObject(o, "guest", guest ? guest : "unknown");
	cJSON_AddNumberToObject(o, "mem_mib", (double)(sb->mem_size >> 20));
	cJSON_AddStringToObject(o, "backend", node->backend->name);
	cJSON_AddStringToObject(o, "start_type", ms_start_type_name(sb->start_type));
	if (sb->has_build)
		ms_json_uuid(o, "build_id", &sb->build_id);
	else
		cJSON_AddNullToObject(o, "build_id");
	cJSON_AddNumberToObject(o, "create_ms", sb->create_ms);
	if (sb->pauses)
		cJSON_AddNumberToObject(o, "pause_ms", sb->pause_ms);
	cJSON_AddNumberToObject(o, "pauses", sb->pauses);
	cJSON_AddNumberToObject(o, "resumes", sb->resumes);
	cJSON_AddNumberToObject(o, "created_at", (double)sb->created_unix);
	cJSON *report = cJSON_AddObjectToObject(o, "report");
	if (report) {
		/* 64-bit registers: printed as integers (a double would round them) */
		char num[24];
		snprintf(num, sizeof(num), "%llu", (unsigned long long)sb->result0);
		cJSON_AddRawToObject(report, "result0", num);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)sb->result1);
		cJSON_AddRawToObject(report, "result1", num);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)sb->reports);
		cJSON_AddRawToObject(report, "reports", num);
	}
	struct ms_uffd_prefetch_stats pst;
	if (ms_nsb_prefetch_figures_locked(sb, &pst))
		ms_prefetch_json(o, sb->prefetch_source, &pst);
	if (sb->error[0])
		cJSON_AddStringToObject(o, "error", sb->error);
	return o;
}

static void ms_respond_sandbox(struct ms_node_response *resp, unsigned status,
			       struct ms_node_sandbox *sb)
{
	pthread_mutex_lock(&sb->node->lock);
	cJSON *o = ms_nsb_json_locked(sb->node, sb);
	pthread_mutex_unlock(&sb->node->lock);
	ms_respond_json(resp, status, o);
}

/* ---- handlers ---- */

/* The info line of a sandbox lifecycle event, with its ids as log fields. */
static void ms_log_sandbox_event(const struct ms_node_sandbox *sb, const ms_uuid *build_id,
				 const char *event)
{
	char sandbox[MS_UUID_STR_LEN], build[MS_UUID_STR_LEN];
	ms_uuid_format(&sb->id, sandbox);
	if (build_id)
		ms_uuid_format(build_id, build);
	ms_info_ids(MS_MOD, sandbox, build_id ? build : NULL, "sandbox %s", event);
}

static void ms_handle_create(struct ms_node *node, const struct ms_api_request *req,
			     struct ms_node_response *resp)
{
	pthread_mutex_lock(&node->lock);
	if (node->nsandboxes + node->pending >= node->cfg.max_sandboxes) {
		pthread_mutex_unlock(&node->lock);
		ms_respond_error(resp, 429, "too_many_sandboxes",
				 "this node holds at most %llu sandboxes",
				 (unsigned long long)node->cfg.max_sandboxes);
		return;
	}
	node->pending++;
	pthread_mutex_unlock(&node->lock);
	int err;
	char cause[200] = "";
	struct ms_node_sandbox *sb = ms_nsb_new(node, &err);
	if (sb) {
		pthread_mutex_lock(&sb->op);
		sb->prefetch_request = req->prefetch;
		err = req->from_build
			  ? ms_nsb_resume(sb, &req->build_id, &req->exec, cause, sizeof(cause))
			  : ms_nsb_start_fresh(sb, req, cause, sizeof(cause));
		pthread_mutex_unlock(&sb->op);
	}
	pthread_mutex_lock(&node->lock);
	node->pending--;
	if (!err && node->nsandboxes == node->sandboxes_cap) {
		size_t cap = node->sandboxes_cap ? node->sandboxes_cap * 2 : 16;
		void *grown = realloc(node->sandboxes, cap * sizeof(*node->sandboxes));
		if (grown) {
			node->sandboxes = grown;
			node->sandboxes_cap = cap;
		} else {
			err = -ENOMEM;
		}
	}
	if (!err)
		node->sandboxes[node->nsandboxes++] = sb;
	pthread_mutex_unlock(&node->lock);
	if (err) {
		atomic_fetch_add(&node->metrics.creates_failed, 1);
		if (sb) {
			pthread_mutex_lock(&sb->op);
			ms_nsb_teardown(sb);
			pthread_mutex_unlock(&sb->op);
			ms_nsb_unref(sb);
		}
		if (err == MS_ENOTFOUND && req->from_build)
			ms_respond_no_build(node, resp, &req->build_id, "resume");
		else
			ms_respond_errno(resp, err, req->from_build ? "resume" : "start", cause);
		return;
	}
	ms_log_sandbox_event(sb, req->from_build ? &req->build_id : NULL,
			     req->from_build ? "created from a build" : "created");
	ms_respond_sandbox(resp, 201, sb);
}

static void ms_respond_no_sandbox(struct ms_node_response *resp, const ms_uuid *id)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	ms_respond_error(resp, 404, "not_found", "no sandbox %s", text);
}

/* True when sb is in state want; else a 409 naming both states is the answer. */
static bool ms_sandbox_in_state(const struct ms_node_sandbox *sb, enum ms_sb_state want,
				struct ms_node_response *resp)
{
	if (sb->state == want)
		return true;
	ms_respond_error(resp, 409, "conflict", "the sandbox is %s, not %s",
			 ms_sb_state_names[sb->state], ms_sb_state_names[want]);
	return false;
}

static void ms_handle_pause(struct ms_node *node, struct ms_node_sandbox *sb,
			    const struct ms_api_request *req, struct ms_node_response *resp)
{
	if (!ms_sandbox_in_state(sb, SB_RUNNING, resp))
		return;
	if (ms_builds_admit_pause(node, sb, req, resp))
		return;
	ms_uuid build_id;
	char cause[200] = "";
	int err = ms_nsb_pause(sb, req->named_build ? &req->build_id : NULL, &build_id, cause,
			       sizeof(cause));
	if (err) {
		ms_respond_errno(resp, err, "pause", cause);
		return;
	}
	(void)node;
	ms_log_sandbox_event(sb, &build_id, "paused");
	ms_respond_sandbox(resp, 200, sb);
}

static void ms_handle_resume(struct ms_node *node, struct ms_node_sandbox *sb,
			     const struct ms_api_request *req, struct ms_node_response *resp)
{
	if (!ms_sandbox_in_state(sb, SB_PAUSED, resp))
		return;
	char cause[200] = "";
	ms_uuid build_id = sb->build_id;
	sb->prefetch_request = req->prefetch;
	int err = ms_nsb_resume(sb, &build_id, &req->exec, cause, sizeof(cause));
	if (err) {
		atomic_fetch_add(&node->metrics.creates_failed, 1);
		if (err == MS_ENOTFOUND)
			ms_respond_no_build(node, resp, &build_id, "resume");
		else
			ms_respond_errno(resp, err, "resume", cause);
		return;
	}
	ms_log_sandbox_event(sb, &build_id, "resumed");
	ms_respond_sandbox(resp, 200, sb);
}

static void ms_handle_delete(struct ms_node *node, struct ms_node_sandbox *sb,
			     struct ms_node_response *resp)
{
	ms_nsb_teardown(sb);
	ms_log_sandbox_event(sb, NULL, "deleted");
	pthread_mutex_lock(&node->lock);
	sb->deleted = true;
	ssize_t i = ms_nsb_index_locked(node, &sb->id);
	if (i >= 0) {
		node->sandboxes[i] = node->sandboxes[--node->nsandboxes];
		ms_nsb_unref(sb); /* the table's reference */
	}
	cJSON *o = cJSON_CreateObject();
	if (o) {
		ms_json_uuid(o, "id", &sb->id);
		cJSON_AddStringToObject(o, "state", "deleted");
	}
	pthread_mutex_unlock(&node->lock);
	ms_respond_json(resp, 200, o);
}

/* A sandbox operation: lookup, op lock, dispatch. */
static void ms_handle_sandbox_op(struct ms_node *node, const struct ms_api_request *req,
				 struct ms_node_response *resp)
{
	struct ms_node_sandbox *sb = ms_nsb_lookup(node, &req->id);
	if (!sb) {
		ms_respond_no_sandbox(resp, &req->id);
		return;
	}
	if (req->op == MS_API_SANDBOX_GET) {
		ms_respond_sandbox(resp, 200, sb);
		ms_nsb_unref(sb);
		return;
	}
	pthread_mutex_lock(&sb->op);
	if (sb->deleted)
		ms_respond_no_sandbox(resp, &req->id);
	else if (req->op == MS_API_SANDBOX_PAUSE)
		ms_handle_pause(node, sb, req, resp);
	else if (req->op == MS_API_SANDBOX_RESUME)
		ms_handle_resume(node, sb, req, resp);
	else
		ms_handle_delete(node, sb, resp);
	pthread_mutex_unlock(&sb->op);
	ms_nsb_unref(sb);
}

static void ms_handle_list(struct ms_node *node, const struct ms_api_request *req,
			   struct ms_node_response *resp)
{
	(void)req;
	cJSON *o = cJSON_CreateObject();
	cJSON *list = o ? cJSON_AddArrayToObject(o, "sandboxes") : NULL;
	pthread_mutex_lock(&node->lock);
	for (size_t i = 0; list && i < node->nsandboxes; i++) {
		cJSON *s = ms_nsb_json_locked(node, node->sandboxes[i]);
		if (s)
			cJSON_AddItemToArray(list, s);
	}
	pthread_mutex_unlock(&node->lock);
	ms_respond_json(resp, 200, list ? o : (cJSON_Delete(o), NULL));
}

/* node->lock held; state: the pipeline's, for a pause made here. */
const char *ms_build_status_locked(struct ms_node *node, const struct ms_template *t,
				   enum ms_pause_state state)
{
	MS_ASSERT_HELD(&node->lock);
	if (t->error)
		return "failed";
	int err = 0;
	if (t->from_peer && (!ms_future_peek(t->in_store, NULL, &err) || err))
		return "on_peer"; /* read from a peer; its upload there has not landed */
	if (!t->pause || t->done)
		return "published"; /* fetched from the store: only published builds are there */
	/* published in the pipeline, but its end not recorded yet: still uploading */
	return state >= MS_PAUSE_DRAINED ? "uploading" : "deduping";
}

/* A pause made here: its figures so far, from the pipeline (ms_pause_stats). */
static void ms_build_json_pause(cJSON *o, const struct ms_template *t,
				const struct ms_pause_stats *st, bool published)
{
	cJSON *pages = cJSON_AddObjectToObject(o, "pages");
	bool compared = st->at_ns[MS_PAUSE_COMPARED] >= 0;
	if (pages && compared) {
		cJSON_AddNumberToObject(pages, "dirty", (double)st->pages_dirty);
		cJSON_AddNumberToObject(pages, "equal", (double)st->pages_equal);
		cJSON_AddNumberToObject(pages, "zero", (double)st->pages_zero);
		cJSON_AddNumberToObject(pages, "kept", (double)st->pages_kept);
	}
	if (compared) {
		cJSON_AddNumberToObject(o, "diff_bytes", (double)(st->pages_kept * P));
		cJSON_AddNumberToObject(
		    o, "dedup_ratio",
		    st->pages_dirty ? (double)st->pages_kept / (double)st->pages_dirty : 0.0);
	}
	if (published)
		cJSON_AddNumberToObject(o, "uploaded_bytes", (double)st->upload_bytes);
	cJSON *timings = cJSON_AddObjectToObject(o, "timings_ms");
	if (!timings)
		return;
	cJSON_AddNumberToObject(timings, "stop", t->stop_ms);
	cJSON_AddNumberToObject(timings, "resumable", t->resumable_ms);
	static const struct {
		enum ms_pause_timing timing;
		const char *name;
	} stages[] = {
	    {MS_TIMING_COMPARE, "compare"},
	    {MS_TIMING_DRAIN, "drain"},
	    {MS_TIMING_UPLOAD, "upload"},
	};
	for (size_t s = 0; s < sizeof(stages) / sizeof(stages[0]); s++) {
		double ms;
		if (ms_pause_timing_ms(st, stages[s].timing, &ms))
			cJSON_AddNumberToObject(timings, stages[s].name, ms);
	}
}

/* node->lock held: a cached build (t READY). */
static void ms_build_json_cached_locked(struct ms_node *node, cJSON *o, const struct ms_template *t,
					enum ms_pause_state state, const struct ms_pause_stats *st)
{
	MS_ASSERT_HELD(&node->lock);
	cJSON_AddStringToObject(o, "status", ms_build_status_locked(node, t, state));
	cJSON_AddBoolToObject(o, "paused_here", t->pause != NULL);
	cJSON_AddBoolToObject(o, "cached", true);
	if (t->prefetch_last.blocks) /* the last resume from this build that prefetched */
		ms_prefetch_json(o, t->prefetch_source, &t->prefetch_last);
	cJSON_AddStringToObject(o, "source", t->pause ? "local" : t->from_peer ? "peer" : "store");
	cJSON_AddNumberToObject(o, "mem_bytes", (double)t->mem_size);
	cJSON_AddNumberToObject(o, "snapfile_bytes", (double)t->snapfile_len);
	if (t->parent && !t->parent->base)
		ms_json_uuid(o, "parent_build_id", &t->parent->id);
	if (t->pause) {
		ms_build_json_pause(o, t, st, t->done && !t->error);
	} else {
		struct ms_header_ref *head = ms_layered_header(t->file);
		const struct ms_build_data *self = ms_header_build(head->header, &t->id);
		if (self)
			cJSON_AddNumberToObject(o, "diff_bytes", (double)self->size);
		ms_header_ref_unref(head);
	}
	if (t->error)
		cJSON_AddStringToObject(o, "error", ms_strerror(t->error));
}

static void ms_handle_build(struct ms_node *node, const struct ms_api_request *req,
			    struct ms_node_response *resp)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(&req->id, text);
	cJSON *o = cJSON_CreateObject();
	if (!o) {
		ms_respond_json(resp, 500, NULL);
		return;
	}
	cJSON_AddStringToObject(o, "build_id", text);
	struct ms_template *t = ms_template_find_ready(node, &req->id);
	if (t) {
		/* the pipeline's figures outside node->lock: it takes locks of its own */
		struct ms_pause_stats st = {0};
		enum ms_pause_state state = MS_PAUSE_PUBLISHED;
		if (t->pause) {
			state = ms_pause_state(t->pause, NULL);
			ms_pause_stats(t->pause, &st);
		}
		pthread_mutex_lock(&node->lock);
		ms_build_json_cached_locked(node, o, t, state, &st);
		pthread_mutex_unlock(&node->lock);
		ms_template_unref(t);
		ms_respond_json(resp, 200, o);
		return;
	}
	/* not cached: the store knows it (published) or nobody does */
	struct ms_header *h = NULL;
	int err =
	    ms_build_storage_load_header(node->store, &req->id, MS_ARTIFACT_MEMFILE_HEADER, &h);
	if (err) {
		cJSON_Delete(o);
		if (err == MS_ENOTFOUND)
			ms_respond_no_build(node, resp, &req->id, "build");
		else
			ms_respond_errno(resp, err, "build", NULL);
		return;
	}
	cJSON_AddStringToObject(o, "status", "published");
	cJSON_AddBoolToObject(o, "paused_here", false);
	cJSON_AddBoolToObject(o, "cached", false);
	cJSON_AddNumberToObject(o, "mem_bytes", (double)h->meta.size);
	const struct ms_build_data *self = ms_header_build(h, &req->id);
	if (self)
		cJSON_AddNumberToObject(o, "diff_bytes", (double)self->size);
	cJSON_AddNumberToObject(o, "generation", (double)h->meta.generation);
	ms_header_free(h);
	ms_respond_json(resp, 200, o);
}

/* E2B's layout: the memory part of a build's scheduling metadata. */
static cJSON *ms_metadata_memfile(const struct ms_sched_metadata *md)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	ms_json_uuid(o, "base_build_id", &md->base_build_id);
	cJSON *ids = cJSON_AddArrayToObject(o, "build_ids");
	cJSON *bytes = cJSON_AddArrayToObject(o, "build_bytes");
	for (size_t j = 0; ids && bytes && j < md->build_count; j++) {
		char text[MS_UUID_STR_LEN];
		ms_uuid_format(&md->builds[j].build_id, text);
		cJSON_AddItemToArray(ids, cJSON_CreateString(text));
		cJSON_AddItemToArray(bytes, cJSON_CreateNumber((double)md->builds[j].bytes));
	}
	cJSON_AddNumberToObject(o, "dropped_builds", (double)md->dropped_builds);
	return o;
}

static void ms_handle_metadata(struct ms_node *node, const struct ms_api_request *req,
			       struct ms_node_response *resp)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(&req->id, text);
	struct ms_template *t = ms_template_find_ready(node, &req->id);
	/* cached: its durable header, never waiting (pending while it is not there) */
	struct ms_sched_metadata md;
	int err;
	if (t) {
		err = ms_sched_metadata_from_file(t->file, &req->id, &md);
		ms_template_unref(t);
	} else {
		struct ms_header *loaded = NULL;
		err = ms_build_storage_load_header(node->store, &req->id,
						   MS_ARTIFACT_MEMFILE_HEADER, &loaded);
		if (err == MS_ENOTFOUND) {
			ms_respond_no_build(node, resp, &req->id, "build");
			return;
		}
		if (!err)
			err = ms_sched_metadata_from_header(loaded, &req->id, &md);
		ms_header_free(loaded);
	}
	if (err) {
		ms_respond_errno(resp, err, "scheduling metadata", NULL);
		return;
	}
	cJSON *o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "build_id", text);
		cJSON_AddBoolToObject(o, "pending", md.pending);
		/* no rootfs in memsnap yet: while the memfile is pending, no memory part */
		cJSON_AddNullToObject(o, "rootfs");
		cJSON *mem = md.pending ? NULL : ms_metadata_memfile(&md);
		if (mem)
			cJSON_AddItemToObject(o, "memfile", mem);
		else
			cJSON_AddNullToObject(o, "memfile");
	}
	ms_sched_metadata_fini(&md);
	ms_respond_json(resp, 200, o);
}

/* Live state for a scrape. */
static void ms_node_live(struct ms_node *node, struct ms_metrics_live *live)
{
	memset(live, 0, sizeof(*live));
	ms_diffstore_get_stats(node->builds.diffs, &live->diffs);
	pthread_mutex_lock(&node->lock);
	for (size_t i = 0; i < node->nsandboxes; i++) {
		struct ms_node_sandbox *sb = node->sandboxes[i];
		if (sb->state == SB_RUNNING)
			live->sandboxes_running++;
		else if (sb->state == SB_PAUSED)
			live->sandboxes_paused++;
		if (sb->session)
			ms_uffd_metrics_add(&live->uffd, ms_uffd_session_metrics(sb->session));
	}
	live->templates = node->ntemplates;
	pthread_mutex_unlock(&node->lock);
	ms_node_peers_get_live(node->peers, &live->peers);
	for (int k = 0; k < 3; k++)
		live->test_store_faults[k] =
		    node->store_faults[k] ? (int64_t)ms_store_faulty_fired(node->store_faults[k])
					  : -1;
	live->uptime_seconds = (double)(ms_clock_now_ns() - node->started_ns) / 1e9;
}

static void ms_handle_metrics(struct ms_node *node, const struct ms_api_request *req,
			      struct ms_node_response *resp)
{
	(void)req;
	struct ms_metrics_live live;
	ms_node_live(node, &live);
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	int err = out ? ms_metrics_render(&node->metrics, &live, out) : -ENOMEM;
	if (out && fclose(out) && !err)
		err = -EIO;
	if (err) {
		free(text);
		ms_respond_errno(resp, err, "metrics", NULL);
		return;
	}
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	resp->body = text;
}

static void ms_handle_healthz(struct ms_node *node, const struct ms_api_request *req,
			      struct ms_node_response *resp)
{
	(void)req;
	cJSON *o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "status", "ok");
		cJSON_AddStringToObject(o, "backend", node->backend->name);
		cJSON *tracker = cJSON_AddObjectToObject(o, "tracker");
		if (tracker) {
			cJSON_AddStringToObject(tracker, "mode",
						ms_tracker_mode_name(node->tracker));
			cJSON_AddStringToObject(tracker, "why", node->tracker_why);
		}
		const char *peer = ms_node_peers_address(node->peers);
		if (peer)
			cJSON_AddStringToObject(o, "peer_address", peer);
		pthread_mutex_lock(&node->lock);
		cJSON_AddNumberToObject(o, "sandboxes", (double)node->nsandboxes);
		cJSON_AddNumberToObject(o, "templates", (double)node->ntemplates);
		pthread_mutex_unlock(&node->lock);
		cJSON *flags = cJSON_AddObjectToObject(o, "flags");
		if (flags) {
			cJSON_AddBoolToObject(flags, "inflight_serve", node->cfg.inflight_serve);
			/* the effective values: what the pipeline really does */
			cJSON_AddBoolToObject(flags, "dedup", node->cfg.dedup);
			cJSON_AddBoolToObject(flags, "dedup_best_effort",
					      node->cfg.dedup && node->cfg.dedup_best_effort);
			cJSON_AddStringToObject(flags, "compress",
						node->cfg.compress == MS_COMPRESS_ZSTD	? "zstd"
						: node->cfg.compress == MS_COMPRESS_LZ4 ? "lz4"
											: "none");
		}
	}
	ms_respond_json(resp, 200, o);
}

/* One handler per operation (api.h), all with the request (some do not need it). */
static void (*const ms_handlers[])(struct ms_node *, const struct ms_api_request *,
				   struct ms_node_response *) = {
    [MS_API_SANDBOX_CREATE] = ms_handle_create,	   [MS_API_SANDBOX_LIST] = ms_handle_list,
    [MS_API_SANDBOX_GET] = ms_handle_sandbox_op,   [MS_API_SANDBOX_DELETE] = ms_handle_sandbox_op,
    [MS_API_SANDBOX_PAUSE] = ms_handle_sandbox_op, [MS_API_SANDBOX_RESUME] = ms_handle_sandbox_op,
    [MS_API_BUILD_GET] = ms_handle_build,	   [MS_API_BUILD_METADATA] = ms_handle_metadata,
    [MS_API_BUILD_LIST] = ms_handle_build_list,	   [MS_API_BUILD_DELETE] = ms_handle_build_delete,
    [MS_API_METRICS] = ms_handle_metrics,	   [MS_API_HEALTHZ] = ms_handle_healthz,
};

void ms_node_handle(struct ms_node *node, const struct ms_api_request *req,
		    struct ms_node_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	pthread_mutex_lock(&node->lock);
	bool stopping = node->stopping;
	pthread_mutex_unlock(&node->lock);
	if (stopping && req->op != MS_API_METRICS && req->op != MS_API_HEALTHZ) {
		ms_respond_error(resp, 503, "shutting_down", "the daemon is shutting down");
		return;
	}
	ms_handlers[req->op](node, req, resp);
}
