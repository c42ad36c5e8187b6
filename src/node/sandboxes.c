/*
 * sandboxes.c - the sandbox registry and what happens to a sandbox: its VM
 * jobs (run on its worker thread), a fresh start, a resume from a build
 * through a page server, and a pause into a new build (the pipeline, the
 * peer record and the follower that marks its end).
 *
 * Locks: a sandbox's op lock serializes its operations and owns vm, srv,
 * tmpl and serial; node->lock guards the fields the API reads (state,
 * report, timings, session). The op lock is taken before node->lock; neither
 * is held by a VM job except the op lock (held by the caller throughout).
 *
 * Invariants:
 *  1. A sandbox is in node->sandboxes only once its create succeeded; a
 *     failed create or resume leaves nothing behind (a failed resume keeps
 *     the sandbox PAUSED).
 *  2. The VM is created, run, paused and destroyed only by job functions on
 *     the sandbox's worker (worker.c).
 *  3. A pause that fails after the VM stopped leaves the sandbox FAILED: its
 *     memory went with the VM.
 *  4. A pause hands its test holds (gate, upload_gate) to the follower; if no
 *     follower starts, the pause releases them itself, so a pipeline never
 *     waits for a hold nobody will lift.
 */
#include "node/node_int.h"
#include "header/header.h"
#include "sandbox/guest.h"
#include "storage/artifact.h"
#include "storage/frametable.h"
#include "uffd/filesource.h"
#include "uffd/prefetch.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define P      MS_PAGE_SIZE
#define MS_MOD "node"

struct ms_node_sandbox *ms_nsb_new(struct ms_node *node, int *err)
{
	struct ms_node_sandbox *sb = calloc(1, sizeof(*sb));
	if (!sb) {
		*err = -ENOMEM;
		return NULL;
	}
	atomic_init(&sb->refs, 1);
	sb->node = node;
	sb->guest = -1;
	sb->prefetch_request = -1;
	ms_uuid_generate(&sb->id);
	sb->created_unix = (int64_t)time(NULL);
	if ((sb->session_failed = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		*err = -errno;
		free(sb);
		return NULL;
	}
	pthread_mutex_init(&sb->op, NULL);
	if ((*err = ms_worker_start(&sb->worker))) {
		pthread_mutex_destroy(&sb->op);
		close(sb->session_failed);
		free(sb);
		return NULL;
	}
	return sb;
}

void ms_nsb_unref(struct ms_node_sandbox *sb)
{
	if (!sb || atomic_fetch_sub(&sb->refs, 1) != 1)
		return;
	assert(!sb->vm && !sb->srv && !sb->tmpl && !sb->session);
	ms_worker_stop(&sb->worker);
	pthread_mutex_destroy(&sb->op);
	close(sb->session_failed);
	free(sb);
}

ssize_t ms_nsb_index_locked(struct ms_node *node, const ms_uuid *id)
{
	MS_ASSERT_HELD(&node->lock);
	for (size_t i = 0; i < node->nsandboxes; i++)
		if (ms_uuid_eq(&node->sandboxes[i]->id, id))
			return (ssize_t)i;
	return -1;
}

struct ms_node_sandbox *ms_nsb_lookup(struct ms_node *node, const ms_uuid *id)
{
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_nsb_index_locked(node, id);
	struct ms_node_sandbox *sb = i >= 0 ? node->sandboxes[i] : NULL;
	if (sb)
		atomic_fetch_add(&sb->refs, 1);
	pthread_mutex_unlock(&node->lock);
	return sb;
}

/* What a job on the worker needs and returns. */
struct ms_vm_job {
	struct ms_node_sandbox *sb;
	struct ms_sandbox_spec spec;
	const struct ms_api_exec *exec;
	bool first_report;		/* run to the first report first (after a restore) */
	const struct ms_template *from; /* a resume's build: its page server can fail the wait */
	struct ms_sandbox_paused paused;
	uint64_t result0, result1, reports;
	double stop_ms;
	char cause[160];
};

/*
 * The cause of a page-server session failure that ended a resume's wait: the
 * object and the offset in it of the read that failed, from the header of the
 * build resumed (which maps the guest offset to the build holding it).
 */
static void ms_vm_session_cause(struct ms_vm_job *job, int err, uint64_t dev_off)
{
	ms_uuid owner;
	uint64_t in_build, left;
	struct ms_header_ref *head = ms_layered_header(job->from->file);
	if (dev_off == UINT64_MAX ||
	    ms_header_lookup(head->header, dev_off, &owner, &in_build, &left)) {
		snprintf(job->cause, sizeof(job->cause), "the page server failed: %s",
			 ms_strerror(err));
		ms_header_ref_unref(head);
		return;
	}
	const struct ms_build_data *data = ms_header_build(head->header, &owner);
	char key[MS_UUID_STR_LEN + 32];
	if (ms_artifact_key(key, sizeof(key), &owner, MS_ARTIFACT_MEMFILE,
			    data && data->frames ? data->frames->type : MS_COMPRESS_NONE))
		snprintf(key, sizeof(key), "memfile");
	ms_header_ref_unref(head);
	snprintf(job->cause, sizeof(job->cause),
		 "%s in %s at offset %llu (guest memory offset %llu): the build is unusable",
		 ms_strerror(err), key, (unsigned long long)in_build, (unsigned long long)dev_off);
}

static int ms_vm_report(struct ms_vm_job *job)
{
	struct ms_node_sandbox *sb = job->sb;
	int err = ms_sandbox_run(sb->vm);
	if (!err)
		err = ms_sandbox_wait_report_or(sb->vm, sb->node->cfg.guest_timeout_ns,
						job->from ? sb->session_failed : -1);
	if (err == MS_ECANCELED) { /* the page server's session failed: the guest never reports */
		err = atomic_load(&sb->session_error);
		ms_vm_session_cause(job, err, atomic_load(&sb->session_error_off));
	}
	if (err == -ECHILD)
		snprintf(job->cause, sizeof(job->cause), "the guest died: %s",
			 ms_sandbox_death_cause(sb->vm));
	return err;
}

/* worker: create the VM, bring it to a report, run the exec command if any */
static int ms_vm_job_create(void *arg)
{
	struct ms_vm_job *job = arg;
	struct ms_node_sandbox *sb = job->sb;
	int err = ms_sandbox_create(sb->node->backend, &job->spec, &sb->vm);
	if (err)
		return err;
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb->vm);
	if (job->first_report && (err = ms_vm_report(job)))
		goto fail;
	if (job->exec && job->exec->set) {
		box[MS_GUEST_CMD / 8] = job->exec->command;
		box[MS_GUEST_ARG0 / 8] = job->exec->arg0;
		box[MS_GUEST_ARG1 / 8] = job->exec->arg1;
		if ((err = ms_vm_report(job)))
			goto fail;
	}
	job->result0 = box[MS_GUEST_RESULT0 / 8];
	job->result1 = box[MS_GUEST_RESULT1 / 8];
	job->reports = box[MS_GUEST_REPORTS / 8];
	box[MS_GUEST_CMD / 8] = 0; /* after a resume the guest reports first */
	return 0;
fail:
	ms_sandbox_destroy(sb->vm);
	sb->vm = NULL;
	return err;
}

/* worker: stop the VM, save its state, take its memory; the VM is destroyed either way */
static int ms_vm_job_pause(void *arg)
{
	struct ms_vm_job *job = arg;
	struct ms_node_sandbox *sb = job->sb;
	int64_t t0 = ms_clock_now_ns();
	((uint64_t *)ms_sandbox_ram(sb->vm))[MS_GUEST_CMD / 8] = 0;
	int err = ms_sandbox_pause(sb->vm, &job->paused);
	job->stop_ms = (double)(ms_clock_now_ns() - t0) / 1e6;
	ms_sandbox_destroy(sb->vm);
	sb->vm = NULL;
	return err;
}

static int ms_vm_job_destroy(void *arg)
{
	struct ms_vm_job *job = arg;
	ms_sandbox_destroy(job->sb->vm);
	job->sb->vm = NULL;
	return 0;
}

/* The page server's on_session_event: a failed session ends the resume's wait (ms_vm_report). */
static void ms_nsb_session_event(void *arg, struct ms_uffd_session *session,
				 enum ms_uffd_session_state state, int err)
{
	struct ms_node_sandbox *sb = arg;
	if (state != MS_UFFD_SESSION_FAILED)
		return;
	uint64_t error_off;
	(void)ms_uffd_session_error(session, &error_off);
	atomic_store(&sb->session_error_off, error_off);
	atomic_store(&sb->session_error, err ? err : -EIO);
	uint64_t one = 1;
	if (write(sb->session_failed, &one, sizeof(one)) < 0)
		ms_warn(MS_MOD, "session failure not signalled: %s", strerror(errno));
}

/* One resume's prefetch: the trace, started by the page server when the handshake is in. */
struct ms_nsb_prefetch {
	struct ms_layered *file; /* the template's (the template outlives the resume) */
	struct ms_uffd_trace trace;
	struct ms_uffd_prefetch_options options;
	pthread_mutex_t lock; /* guards pf and ended (the acceptor thread vs the op holder) */
	struct ms_uffd_prefetch *pf;
	bool ended;
};

/* The page server's on_session_start: the prefetch starts with the handshake. */
static void ms_nsb_prefetch_begin(void *arg, struct ms_uffd_session *session)
{
	struct ms_nsb_prefetch *p = arg;
	pthread_mutex_lock(&p->lock);
	if (!p->ended && !p->pf) {
		int err;
		p->pf = ms_uffd_prefetch_start(session, &ms_layered_page_source_ops, p->file,
					       &p->trace, &p->options, &err);
		if (!p->pf)
			ms_warn(MS_MOD, "prefetch not started: %s", ms_strerror(err));
	}
	pthread_mutex_unlock(&p->lock);
}

/*
 * The trace a resume from t replays (sandboxes.c's config and request), or NULL
 * when there is nothing to prefetch. A trace from the store that does not pass
 * its checks is refused with a log line naming the build and why: the resume
 * goes on without it.
 */
static struct ms_nsb_prefetch *ms_nsb_prefetch_new(struct ms_node_sandbox *sb,
						   const struct ms_template *t,
						   enum ms_uffd_prefetch_source source)
{
	struct ms_node *node = sb->node;
	struct ms_uffd_trace init = {0};
	char id[MS_UUID_STR_LEN], why[160];
	if ((source == MS_PREFETCH_INIT || source == MS_PREFETCH_BOTH) && t->metadata &&
	    ms_uffd_trace_parse(t->metadata, t->metadata_len, t->mem_size, P, &init, why,
				sizeof(why))) {
		ms_uuid_format(&t->id, id);
		ms_warn(MS_MOD,
			"build %s: the prefetch trace in its metadata.json is refused (%s); "
			"resuming without it",
			id, why);
		atomic_fetch_add(&node->metrics.prefetch_refused, 1);
	}
	struct ms_nsb_prefetch *p = calloc(1, sizeof(*p));
	struct ms_header_ref *head = ms_layered_header(t->file);
	int err = p ? ms_uffd_prefetch_plan(source, &init, head->header, P,
					    node->cfg.prefetch_last_cycle_max_mib << 20, &p->trace)
		    : -ENOMEM;
	ms_header_ref_unref(head);
	ms_uffd_trace_fini(&init);
	if (err || !p->trace.count) {
		if (p)
			ms_uffd_trace_fini(&p->trace);
		free(p);
		return NULL;
	}
	p->file = t->file;
	p->options.fetch_workers = (unsigned)node->cfg.prefetch_workers;
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

void ms_nsb_prefetch_end(struct ms_node_sandbox *sb)
{
	struct ms_node *node = sb->node;
	pthread_mutex_lock(&node->lock);
	struct ms_nsb_prefetch *p = sb->prefetch;
	sb->prefetch = NULL;
	pthread_mutex_unlock(&node->lock);
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->ended = true; /* a handshake after this starts nothing */
	struct ms_uffd_prefetch *pf = p->pf;
	pthread_mutex_unlock(&p->lock);
	if (pf) {
		ms_uffd_prefetch_stop(pf);
		struct ms_uffd_prefetch_stats st;
		ms_uffd_prefetch_get_stats(pf, &st);
		atomic_fetch_add(&node->metrics.prefetch_skipped, st.pages_skipped);
		ms_histogram_observe(&node->metrics.prefetch_duration,
				     (double)st.duration_ns / 1e9);
		pthread_mutex_lock(&node->lock);
		sb->prefetch_last = st;
		if (sb->tmpl) { /* the build it resumed from: `memsnap build show` */
			sb->tmpl->prefetch_last = st;
			memcpy(sb->tmpl->prefetch_source, sb->prefetch_source,
			       sizeof(sb->prefetch_source));
		}
		pthread_mutex_unlock(&node->lock);
		ms_uffd_prefetch_free(pf);
	}
	pthread_mutex_destroy(&p->lock);
	ms_uffd_trace_fini(&p->trace);
	free(p);
}

bool ms_nsb_prefetch_figures_locked(const struct ms_node_sandbox *sb,
				    struct ms_uffd_prefetch_stats *out)
{
	MS_ASSERT_HELD(&sb->node->lock);
	struct ms_nsb_prefetch *p = sb->prefetch;
	if (p) {
		pthread_mutex_lock(&p->lock);
		if (p->pf)
			ms_uffd_prefetch_get_stats(p->pf, out);
		else
			memset(out, 0, sizeof(*out));
		pthread_mutex_unlock(&p->lock);
		return true;
	}
	*out = sb->prefetch_last;
	return sb->prefetch_last.blocks > 0;
}

/* op held: stops the page server, folding its session's counters into the totals */
static void ms_nsb_stop_server(struct ms_node_sandbox *sb)
{
	ms_nsb_prefetch_end(sb); /* before the session goes: nothing installs after */
	struct ms_node *node = sb->node;
	pthread_mutex_lock(&node->lock);
	struct ms_uffd_session *session = sb->session;
	sb->session = NULL;
	pthread_mutex_unlock(&node->lock);
	ms_pageserver_free(sb->srv);
	sb->srv = NULL;
	if (session) {
		ms_uffd_metrics_add(&node->metrics.uffd_closed, ms_uffd_session_metrics(session));
		ms_uffd_session_unref(session);
	}
}

void ms_nsb_teardown(struct ms_node_sandbox *sb)
{
	ms_nsb_prefetch_end(sb);
	if (sb->vm) {
		struct ms_vm_job job = {.sb = sb};
		ms_worker_call(&sb->worker, ms_vm_job_destroy, &job);
	}
	ms_nsb_stop_server(sb);
	ms_template_reading(sb->tmpl, false);
	ms_template_unref(sb->tmpl);
	sb->tmpl = NULL;
}

static void ms_nsb_set_report(struct ms_node_sandbox *sb, const struct ms_vm_job *job)
{
	pthread_mutex_lock(&sb->node->lock);
	sb->result0 = job->result0;
	sb->result1 = job->result1;
	sb->reports = job->reports;
	pthread_mutex_unlock(&sb->node->lock);
}

int ms_nsb_start_fresh(struct ms_node_sandbox *sb, const struct ms_api_request *req, char *cause,
		       size_t cause_len)
{
	struct ms_node *node = sb->node;
	assert(!sb->vm && !sb->srv && !sb->tmpl);
	int64_t t0 = ms_clock_now_ns();
	ms_uuid base_id;
	ms_uuid_generate(&base_id);
	struct ms_template *base = ms_template_alloc(node, &base_id);
	if (!base)
		return -ENOMEM;
	base->base = true;
	base->mem_size = req->mem_size;
	if (!(base->file = ms_build_cache_file(
		  &node->builds,
		  ms_header_new_base(&base_id, MS_HEADER_V4, P, req->mem_size, false),
		  node->resolve, node->resolve_ctx))) {
		ms_template_unref(base);
		return -ENOMEM;
	}
	struct ms_vm_job job = {
	    .sb = sb,
	    .spec = {.guest = req->guest, .mem_size = req->mem_size, .memory = MS_SANDBOX_FRESH},
	    .exec = &req->exec};
	int err = ms_worker_call(&sb->worker, ms_vm_job_create, &job);
	if (err) {
		snprintf(cause, cause_len, "%s", job.cause);
		ms_template_unref(base);
		return err;
	}
	sb->tmpl = base;
	double secs = (double)(ms_clock_now_ns() - t0) / 1e9;
	ms_histogram_observe(&node->metrics.create[MS_START_FRESH], secs);
	pthread_mutex_lock(&node->lock);
	sb->state = SB_RUNNING;
	sb->guest = (int)req->guest;
	sb->mem_size = req->mem_size;
	sb->start_type = MS_START_FRESH;
	sb->has_build = false;
	sb->create_ms = secs * 1e3;
	pthread_mutex_unlock(&node->lock);
	ms_nsb_set_report(sb, &job);
	return 0;
}

int ms_nsb_resume(struct ms_node_sandbox *sb, const ms_uuid *build_id,
		  const struct ms_api_exec *exec, char *cause, size_t cause_len)
{
	struct ms_node *node = sb->node;
	assert(!sb->vm && !sb->srv && !sb->tmpl); /* never over a running sandbox */
	int64_t t0 = ms_clock_now_ns();
	struct ms_template *t;
	enum ms_start_type start_type;
	int err = ms_template_get(node, build_id, &t, &start_type);
	if (err)
		return err;
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)], id[MS_UUID_STR_LEN];
	ms_uuid_format(&sb->id, id);
	int n =
	    snprintf(sock, sizeof(sock), "%s/sb-%s.%u.sock", node->cfg.run_dir, id, sb->serial++);
	if (n < 0 || (size_t)n >= sizeof(sock)) {
		snprintf(cause, cause_len, "run_dir is too long for a unix socket path");
		ms_template_unref(t);
		return -ENAMETOOLONG;
	}
	enum ms_uffd_prefetch_source source =
	    sb->prefetch_request >= 0 ? (enum ms_uffd_prefetch_source)sb->prefetch_request
				      : node->cfg.prefetch_source;
	sb->prefetch_request = -1;
	struct ms_nsb_prefetch *prefetch = ms_nsb_prefetch_new(sb, t, source);
	uint64_t stale; /* a failed session of an earlier resume: not this one's */
	if (read(sb->session_failed, &stale, sizeof(stale)) < 0 && errno != EAGAIN)
		ms_warn(MS_MOD, "session failure fd: %s", strerror(errno));
	atomic_store(&sb->session_error, 0);
	atomic_store(&sb->session_error_off, UINT64_MAX);
	struct ms_pageserver_options opts = {.workers = (unsigned)node->cfg.pageserver_workers,
					     .batch_bytes = 65536,
					     .on_session_event = ms_nsb_session_event,
					     .event_arg = sb,
					     .on_session_start =
						 prefetch ? ms_nsb_prefetch_begin : NULL,
					     .start_arg = prefetch};
	pthread_mutex_lock(&node->lock);
	sb->prefetch = prefetch; /* ended with the resume (error), a pause, a delete */
	snprintf(sb->prefetch_source, sizeof(sb->prefetch_source), "%s",
		 ms_uffd_prefetch_source_name(source));
	memset(&sb->prefetch_last, 0, sizeof(sb->prefetch_last));
	pthread_mutex_unlock(&node->lock);
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, t->file, &opts, &err);
	if (!srv) {
		ms_nsb_prefetch_end(sb);
		ms_template_unref(t);
		return err;
	}
	struct ms_vm_job job = {.sb = sb,
				.spec = {.mem_size = t->mem_size,
					 .memory = MS_SANDBOX_LAZY,
					 .lazy_socket = sock,
					 .snapfile = t->snapfile,
					 .snapfile_len = t->snapfile_len},
				.exec = exec,
				.first_report = true,
				.from = t};
	if ((err = ms_worker_call(&sb->worker, ms_vm_job_create, &job))) {
		snprintf(cause, cause_len, "%s", job.cause);
		ms_nsb_prefetch_end(sb);
		ms_pageserver_free(srv);
		ms_template_unref(t);
		return err;
	}
	struct ms_uffd_session *session = NULL;
	if (ms_pageserver_next_session(srv, 0, &session))
		session = NULL; /* counters only: the guest already ran from it */
	double secs = (double)(ms_clock_now_ns() - t0) / 1e9;
	ms_histogram_observe(&node->metrics.create[start_type], secs);
	sb->srv = srv;
	sb->tmpl = t;
	ms_template_reading(t, true);
	pthread_mutex_lock(&node->lock);
	sb->session = session;
	sb->state = SB_RUNNING;
	sb->mem_size = t->mem_size;
	if (t->guest >= 0)
		sb->guest = t->guest;
	sb->start_type = start_type;
	sb->has_build = true;
	sb->build_id = *build_id;
	sb->create_ms = secs * 1e3;
	sb->resumes++;
	sb->error[0] = '\0';
	pthread_mutex_unlock(&node->lock);
	ms_nsb_set_report(sb, &job);
	return 0;
}

/*
 * The new build's metadata.json: the guest, the memory size, the parent build,
 * and the first-touch trace of the resume that ends with this pause (E2B's
 * prefetch.memory; uffd/trace.h), which the next resume prefetches. NULL on
 * -ENOMEM.
 */
static char *ms_nsb_metadata(int guest, uint64_t mem_size, const struct ms_template *parent,
			     const struct ms_uffd_trace *trace)
{
	cJSON *o = cJSON_CreateObject();
	char id[MS_UUID_STR_LEN];
	if (!o)
		return NULL;
	if (ms_guest_name(guest))
		cJSON_AddStringToObject(o, "guest", ms_guest_name(guest));
	cJSON_AddNumberToObject(o, "mem_bytes", (double)mem_size);
	if (!parent->base) {
		ms_uuid_format(&parent->id, id);
		cJSON_AddStringToObject(o, "parent_build_id", id);
	}
	char *text = NULL;
	if (!trace || !ms_uffd_trace_to_json(trace, o))
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

/* op held: the trace of the sandbox's page-server session so far (empty without one). */
static void ms_nsb_trace(struct ms_node_sandbox *sb, struct ms_uffd_trace *trace)
{
	memset(trace, 0, sizeof(*trace));
	pthread_mutex_lock(&sb->node->lock);
	if (sb->session && ms_uffd_session_trace(sb->session, trace))
		memset(trace, 0, sizeof(*trace)); /* -ENOMEM: the build goes without a trace */
	pthread_mutex_unlock(&sb->node->lock);
}

/*
 * What a new build's pipeline starts from: the stopped VM's memory (memfd, its
 * written pages), or the memory a failed pause still holds (failed: ms_pause_retry).
 */
struct ms_nsb_pause_from {
	int memfd; /* taken (closed on error too) */
	const struct ms_pageset *written, *none;
	struct ms_pause *failed;
};

/*
 * The test holds of a new pause's template (the follower lifts them; until it
 * runs, ms_nsb_lift_holds does), and the upload hold every pause has: the
 * upload waits until the journal names the build (recovery.c).
 */
static int ms_nsb_make_holds(struct ms_node *node, struct ms_template *t)
{
	if (node->cfg.test_stall_compare_ns > 0 && !(t->gate = ms_future_new(NULL)))
		return -ENOMEM;
	if (node->cfg.test_stall_drain_ns > 0 && !(t->drain_gate = ms_future_new(NULL)))
		return -ENOMEM;
	return (t->upload_gate = ms_future_new(NULL)) ? 0 : -ENOMEM;
}

/* Lifts the holds of a template without a follower (nobody else would). */
static void ms_nsb_lift_holds(struct ms_template *t)
{
	if (!t || t->following)
		return;
	if (t->gate)
		ms_future_set(t->gate, NULL);
	if (t->drain_gate)
		ms_future_set(t->drain_gate, NULL);
	if (t->upload_gate)
		ms_future_set(t->upload_gate, NULL);
}

/*
 * Starts t's pipeline: t has its holds, metadata, snapfile, size, guest and
 * parent (with its reading reference). Then the journal entry, the peer
 * record and the follower; the caller puts t in the cache. On error the
 * pipeline (if it started) has ended and t is the caller's to unref.
 */
static int ms_nsb_pipeline_start(struct ms_node *node, struct ms_template *t, const ms_uuid *want,
				 const struct ms_nsb_pause_from *from)
{
	struct ms_template *parent = t->parent;
	struct ms_pause_config cfg = {
	    .store = node->store,
	    .diffs = node->builds.diffs,
	    .cache_dir = node->cfg.cache_dir,
	    .inflight = node->cfg.inflight_serve,
	    .dedup = !node->cfg.dedup		   ? MS_DEDUP_OFF
		     : node->cfg.dedup_best_effort ? MS_DEDUP_BEST_EFFORT
						   : MS_DEDUP_FULL,
	    .counters = &node->metrics.pipeline,
	    .grace_ns = node->cfg.grace_ns,
	    .failed_hold_ns = node->cfg.failed_hold_ns,
	    .count_users = true, /* ms_template_reading: the sandboxes and child pauses */
	    .compress = node->cfg.compress,
	    /* a parent from a peer: its upload runs there; in_store says when it landed */
	    .parent_published =
		parent->pause ? ms_pause_published(parent->pause) : parent->in_store,
	    .resolve = node->resolve,
	    .resolve_ctx = node->resolve_ctx,
	    .compare_gate = t->gate,
	    .drain_gate = t->drain_gate,
	    .upload_gate = t->upload_gate,
	    .upload_holder = node->upload_holder,
	    .build_id = want,
	    .metadata = t->metadata,
	    .metadata_len = t->metadata_len,
	};
	int err = from->failed
		      ? ms_pause_retry(&cfg, parent->file, from->failed, &t->pause)
		      : ms_pause_start(&cfg, parent->file, from->memfd, from->written, from->none,
				       t->snapfile, t->snapfile_len, &t->pause);
	if (err) {
		if (t->pause) { /* inflight off: the compare failed */
			ms_pause_free(t->pause);
			t->pause = NULL;
		}
		return err;
	}
	t->id = *ms_pause_build_id(t->pause);
	t->file = ms_pause_file(t->pause);
	/* before any byte of it goes to the store: a crash from here on is recovered */
	int journaled = ms_node_journal_add(node, &t->id);
	if (journaled)
		ms_warn(MS_MOD, "upload journal: %s (a crash would leave this upload's leftovers)",
			ms_strerror(journaled));
	if (!node->cfg.test_hold_upload[0])
		ms_future_set(t->upload_gate, NULL);
	t->done = false;
	/* other nodes may resume it from here until it is uploaded */
	struct ms_peer_build served = {.build_id = t->id,
				       .memfile = t->file,
				       .diffs = node->builds.diffs,
				       .published = ms_pause_published(t->pause),
				       .checksums = ms_pause_data_checksums(t->pause),
				       .snapfile = t->snapfile,
				       .snapfile_len = t->snapfile_len,
				       .metadata = t->metadata,
				       .metadata_len = t->metadata_len};
	if (!(err = ms_node_peers_serve(node->peers, &served, t->guest, t->mem_size))) {
		t->served = ms_node_peers_address(node->peers) != NULL;
		err = -pthread_create(&t->follower, NULL, ms_template_follow, t);
	}
	if (err) {
		/* without a follower nobody lifts the test holds: do it, then wait it out */
		ms_nsb_lift_holds(t);
		ms_template_ended(t, ms_pause_wait(t->pause, MS_PAUSE_PUBLISHED, -1));
		return err;
	}
	t->following = true;
	return 0;
}

/*
 * op held: parent is a pause of this node that failed before its drain and
 * still holds the guest memory (the sandbox resumed from it): the failed pause
 * is paused again from that memory (ms_pause_retry) into a new build over its
 * own parent, which takes the memory over. The new template, in the cache,
 * with a reading reference, in *out; parent stays the caller's. -ENOENT when
 * parent is no such pause.
 */
static int ms_nsb_retry(struct ms_node *node, struct ms_template *parent, struct ms_template **out)
{
	*out = NULL;
	if (!parent->pause || !parent->parent ||
	    ms_pause_state(parent->pause, NULL) != MS_PAUSE_FAILED ||
	    !ms_pause_held_bytes(parent->pause))
		return -ENOENT;
	struct ms_template *t = ms_template_alloc(node, &MS_UUID_NIL);
	int err = t ? ms_nsb_make_holds(node, t) : -ENOMEM;
	if (!err && parent->metadata && !(t->metadata = strdup(parent->metadata)))
		err = -ENOMEM;
	if (!err && parent->snapfile_len && !(t->snapfile = malloc(parent->snapfile_len)))
		err = -ENOMEM;
	if (err)
		goto fail;
	t->metadata_len = parent->metadata_len;
	if (parent->snapfile_len)
		memcpy(t->snapfile, parent->snapfile, parent->snapfile_len);
	t->snapfile_len = parent->snapfile_len;
	t->mem_size = parent->mem_size;
	t->guest = parent->guest;
	t->parent = ms_template_ref(parent->parent);
	ms_template_reading(t->parent, true);
	struct ms_nsb_pause_from from = {.memfd = -1, .failed = parent->pause};
	if ((err = ms_nsb_pipeline_start(node, t, NULL, &from)))
		goto fail;
	pthread_mutex_lock(&node->lock);
	err = ms_template_insert_locked(node, t);
	pthread_mutex_unlock(&node->lock);
	if (err)
		goto fail;
	char failed_id[MS_UUID_STR_LEN], id[MS_UUID_STR_LEN];
	ms_uuid_format(&parent->id, failed_id);
	ms_uuid_format(&t->id, id);
	ms_info(MS_MOD, "build %s: the failed pause's memory is paused again as build %s",
		failed_id, id);
	ms_template_reading(t, true);
	*out = t;
	return 0;
fail:
	ms_nsb_lift_holds(t);
	ms_template_unref(t);
	return err;
}

int ms_nsb_pause(struct ms_node_sandbox *sb, const ms_uuid *want, ms_uuid *build_id, char *cause,
		 size_t cause_len)
{
	struct ms_node *node = sb->node;
	struct ms_vm_job job = {.sb = sb, .paused = {.memfd = -1}};
	int64_t t0 = ms_clock_now_ns();
	ms_nsb_prefetch_end(sb); /* the pause stops it at once, before the VM stops */
	int err = ms_worker_call(&sb->worker, ms_vm_job_pause, &job);
	struct ms_uffd_trace trace;
	ms_nsb_trace(sb, &trace); /* the guest is stopped: the trace is whole */
	ms_nsb_stop_server(sb);
	struct ms_template *parent = sb->tmpl, *t = NULL, *retried = NULL;
	sb->tmpl = NULL;
	struct ms_pageset *none = NULL;
	if (err)
		goto fail;
	ms_histogram_observe(&node->metrics.pause_stage[MS_TIMING_STOP], job.stop_ms / 1e3);
	int64_t t1 = ms_clock_now_ns();
	/*
	 * The sandbox was resumed from a pause that failed and still holds its memory:
	 * that pause goes again first (taking the memory over), and this one is layered
	 * over it, so the chain reaches the store. Otherwise the pause goes on over the
	 * failed build as before (and fails with it).
	 */
	if (!ms_nsb_retry(node, parent, &retried)) {
		ms_template_reading(parent, false);
		ms_template_unref(parent);
		parent = retried;
	}
	err = -ENOMEM;
	if (!(none = ms_pageset_new()) || !(t = ms_template_alloc(node, &MS_UUID_NIL)))
		goto fail;
	if ((err = ms_nsb_make_holds(node, t)))
		goto fail;
	err = -ENOMEM;
	if (!(t->metadata = ms_nsb_metadata(sb->guest, parent->mem_size, parent,
					    trace.count ? &trace : NULL)))
		goto fail;
	t->metadata_len = strlen(t->metadata);
	t->snapfile = job.paused.snapfile;
	t->snapfile_len = job.paused.snapfile_len;
	job.paused.snapfile = NULL;
	t->mem_size = parent->mem_size;
	t->guest = sb->guest;
	t->parent = parent; /* its reading reference with it: the child's compare reads it */
	parent = NULL;
	struct ms_nsb_pause_from from = {
	    .memfd = job.paused.memfd, .written = job.paused.written, .none = none};
	job.paused.memfd = -1;
	if ((err = ms_nsb_pipeline_start(node, t, want, &from)))
		goto fail;
	ms_histogram_observe(&node->metrics.pause_stage[MS_TIMING_RESUMABLE],
			     (double)(ms_clock_now_ns() - t1) / 1e9);
	t->stop_ms = job.stop_ms;
	t->resumable_ms = (double)(ms_clock_now_ns() - t1) / 1e6;
	pthread_mutex_lock(&node->lock);
	err = ms_template_insert_locked(node, t);
	if (!err) {
		sb->state = SB_PAUSED;
		sb->has_build = true;
		sb->build_id = t->id;
		sb->pauses++;
		sb->pause_ms = (double)(ms_clock_now_ns() - t0) / 1e6;
	}
	pthread_mutex_unlock(&node->lock);
	if (err)
		goto fail;
	*build_id = t->id;
	ms_template_unref(t);
	ms_uffd_trace_fini(&trace);
	ms_pageset_free(none);
	ms_sandbox_paused_fini(&job.paused);
	return 0;
fail:
	snprintf(cause, cause_len, "pause failed: %s", ms_strerror(err));
	ms_nsb_lift_holds(t);
	ms_template_unref(t);
	ms_template_reading(parent, false);
	ms_template_unref(parent);
	ms_uffd_trace_fini(&trace);
	ms_pageset_free(none);
	ms_sandbox_paused_fini(&job.paused);
	pthread_mutex_lock(&node->lock);
	sb->state = SB_FAILED;
	snprintf(sb->error, sizeof(sb->error), "%s", cause);
	pthread_mutex_unlock(&node->lock);
	return err;
}
