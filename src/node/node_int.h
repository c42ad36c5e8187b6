/*
 * node_int.h - the daemon's private header: the structs that node.c (lifecycle),
 * worker.c, templates.c, sandboxes.c, handlers.c and hooks.c share, and the
 * functions they call across files. Nothing outside src/node/ includes it.
 *
 * Locks, in order: a sandbox's op lock, then node->lock. node->lock guards
 * the two tables, the fields marked "node->lock" below, stopping and
 * fetches; it is never held across a VM operation, a pipeline wait or store
 * I/O. A sandbox's VM, page server and template belong to whoever holds its
 * op lock; the VM itself is touched only on the sandbox's worker thread.
 *
 * Invariants:
 *  1. A sandbox is in node->sandboxes only once it was created successfully;
 *     a failed create tears down everything it made.
 *  2. A template in the cache holds one reference; a running sandbox holds
 *     one on the template it serves from; a pause holds one on its parent
 *     (the pipeline borrows the parent's file until it ends).
 *  3. A template with a pause is evicted only after its pipeline ended, and
 *     freed only after its follower thread was joined.
 *  4. A build's provisional header never leaves the node: scheduling
 *     metadata uses the durable header without waiting, and a child pause
 *     takes the parent's durable header (pause.h).
 */
#ifndef MS_NODE_NODE_INT_H
#define MS_NODE_NODE_INT_H

#include "build/buildfile.h"
#include "build/layered.h"
#include "build/storage.h"
#include "cache/diffstore.h"
#include "node/node.h"
#include "node/peers.h"
#include "sandbox/memory.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "storage/store.h"
#include "uffd/pageserver.h"
#include "util/future.h"
#include "util/uuid.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define MS_NODE_SNAPFILE_MAX (64u << 20)
#define MS_NODE_LOCK_NAME    ".memsnapd.lock"
#define MS_NODE_JOURNAL_NAME ".memsnapd.uploads" /* recovery.c: uploads in progress */

/* ---- worker.c: a worker thread per sandbox, the only thread that drives its VM ---- */

struct ms_worker {
	pthread_t thread;
	pthread_mutex_t lock; /* guards the fields below */
	pthread_cond_t cond;
	int (*fn)(void *arg);
	void *arg;
	int result;
	bool pending, done, quit, started;
};

int ms_worker_start(struct ms_worker *w);
/* Runs fn(arg) on the worker and returns its result. One call at a time (the op lock). */
int ms_worker_call(struct ms_worker *w, int (*fn)(void *), void *arg);
void ms_worker_stop(struct ms_worker *w);

/* ---- templates.c: the template cache ---- */

enum ms_tmpl_state { TMPL_LOADING, TMPL_READY };

struct ms_template {
	atomic_uint refs;
	struct ms_node *node;
	ms_uuid id;
	bool base; /* a fresh sandbox's empty parent: not a build, never cached */
	/* set before the template is shared (or before loaded settles); then immutable */
	struct ms_layered *file; /* owned, unless pause owns it */
	struct ms_pause *pause;	 /* paused on this node */
	struct ms_template *parent;
	struct ms_future *gate;	      /* test hook: holds the compare (NULL: none) */
	struct ms_future *drain_gate; /* test hook: holds the drain (NULL: none) */
	struct ms_future *loaded;     /* cold fetch: settled when file and snapfile are set */
	void *snapfile;
	size_t snapfile_len;
	char *metadata; /* metadata.json (NUL-terminated), or NULL: the guest, the prefetch trace */
	size_t metadata_len;
	uint64_t mem_size;
	int guest; /* enum ms_guest_kind, or -1 when unknown (no metadata.json) */
	double stop_ms, resumable_ms;  /* a local pause: the VM stop, and until resumable */
	bool served;		       /* paused here and given to the peer server */
	bool from_peer;		       /* cold-fetched from a peer before its upload */
	struct ms_future *in_store;    /* from_peer: settled once the store has the build */
	struct ms_future *upload_gate; /* test hook: holds the upload (NULL: none) */
	/* node->lock */
	enum ms_tmpl_state state;
	int64_t expires_ns;
	bool done;				     /* the pipeline ended (or there is none) */
	int error;				     /* the pipeline's error, once done */
	struct ms_uffd_prefetch_stats prefetch_last; /* the last resume from it that prefetched */
	char prefetch_source[12];
	/* the follower (set by the pausing thread before the template is shared) */
	pthread_t follower;
	bool following;
	/* from_peer: the store poller (stop_poll: node->lock) */
	pthread_t poller;
	bool polling, stop_poll;
};

struct ms_node_sandbox;
struct ms_nsb_prefetch;

struct ms_node {
	/* set by ms_node_new before any other thread runs; then immutable */
	struct ms_node_config cfg;
	const struct ms_sandbox_ops *backend;
	char backend_why[160];
	enum ms_tracker_mode tracker; /* the written-page tracker (sandbox/memory.h) */
	char tracker_why[320];
	char upload_holder[64]; /* "memsnapd pid N on HOST": the holder of its uploads/ leases */
	struct ms_store *store; /* what the node uses: store_base, or a faulty wrapper of it */
	struct ms_store *store_base; /* the store the config names (owned) */
	/* test_store_faults: its wrappers, by enum ms_node_store_fault (in node->store's chain) */
	struct ms_store *store_faults[3];
	struct ms_build_cache builds; /* over store (build/buildfile.h): diff store, storage */
	struct ms_node_peers *peers;
	ms_layered_resolve_fn resolve; /* every layered file of this node resolves with it */
	void *resolve_ctx;
	struct ms_metrics metrics; /* atomics and histograms: no lock */
	int64_t started_ns;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* stopping, a fetch or a pipeline ended */
	/* node->lock */
	bool stopping;
	unsigned fetches;		     /* detached fetch threads still running */
	unsigned pending;		     /* creates in progress (count against max_sandboxes) */
	bool release_uploads;		     /* test_peer_die_after: test_hold_upload is over */
	_Atomic uint64_t peer_data_requests; /* test_peer_die_after (atomic, no lock) */
	struct ms_template **templates;
	size_t ntemplates, templates_cap;
	struct ms_node_sandbox **sandboxes;
	size_t nsandboxes, sandboxes_cap;
	ms_uuid *lost; /* builds the recovery found lost (answer 410) */
	size_t nlost, lost_cap;
	bool recovery_pending; /* journal entries the store did not let us resolve yet */
	/* the thread that runs ms_node_new / ms_node_shutdown only */
	pthread_t janitor;
	bool janitor_started;
	int lock_fd; /* flock on cache_dir/.memsnapd.lock: one daemon per cache dir */
	/* store_quota_bytes: the store's size from a recent listing (builds.c) */
	pthread_mutex_t quota_lock; /* guards the two below; never held with node->lock */
	int64_t store_bytes_at;	    /* monotonic ns of the listing (0: none yet) */
	uint64_t store_bytes;
};

struct ms_template *ms_template_ref(struct ms_template *t);
void ms_template_unref(struct ms_template *t);
/*
 * A sandbox resumed from t (or a pause over it) starts / stops reading its
 * memory: a local pause that failed keeps its guest memory while anyone reads
 * it (and at most failed_hold). NULL and templates without a pause are ignored.
 */
void ms_template_reading(struct ms_template *t, bool reading);
/* A READY, done template with one reference, not in the cache. NULL: no memory. */
struct ms_template *ms_template_alloc(struct ms_node *node, const ms_uuid *id);
ssize_t ms_template_index_locked(struct ms_node *node, const ms_uuid *id);
/* The cached build id when it is READY (a reference), else NULL; takes node->lock. */
struct ms_template *ms_template_find_ready(struct ms_node *node, const ms_uuid *id);
/* Takes a new reference for the cache. */
int ms_template_insert_locked(struct ms_node *node, struct ms_template *t);
/* Returns the cache's reference. */
struct ms_template *ms_template_remove_at_locked(struct ms_node *node, size_t i);
/*
 * The template of build id, with a reference: from the cache (warm; a hit
 * extends the TTL, never shortens it), else fetched from the store (cold).
 * MS_ENOTFOUND when the store has no such build; -EBUSY for a build whose
 * pipeline failed on this node; -ETIMEDOUT after fetch_timeout.
 */
int ms_template_get(struct ms_node *node, const ms_uuid *id, struct ms_template **out,
		    enum ms_start_type *start_type);
/*
 * A local pause ended (published, or failed with err): histograms, test
 * gates, peer record, a failed upload's leftovers, journal entry, done.
 */
void ms_template_ended(struct ms_template *t, int err);
/* The follower thread of a local pause (arg: the template): test holds, then the end. */
void *ms_template_follow(void *arg);
/*
 * A pause stage's duration in ms from the pipeline's figures (compare: from
 * the pause to the deduped header; drain; upload: to the publish). False while
 * it has not happened, and for the node's own stop and resumable.
 */
bool ms_pause_timing_ms(const struct ms_pause_stats *stats, enum ms_pause_timing timing,
			double *ms);
/* The janitor thread: template TTL (arg: the node). */
void *ms_node_janitor(void *arg);

/* ---- sandboxes.c: the sandbox registry and its VM jobs ---- */

enum ms_sb_state { SB_RUNNING, SB_PAUSED, SB_FAILED };

struct ms_node_sandbox {
	atomic_uint refs;
	struct ms_node *node;
	ms_uuid id;
	pthread_mutex_t op; /* one operation at a time */
	struct ms_worker worker;
	/* node->lock (written with op held too) */
	enum ms_sb_state state;
	bool deleted;
	int guest; /* or -1: unknown */
	uint64_t mem_size;
	enum ms_start_type start_type;
	bool has_build; /* RUNNING: resumed from build_id; PAUSED: paused into it */
	ms_uuid build_id;
	double create_ms, pause_ms;
	uint64_t result0, result1, reports;
	unsigned pauses, resumes;
	int64_t created_unix;
	char error[200];
	struct ms_uffd_session *session;
	struct ms_nsb_prefetch *prefetch;	     /* the running resume's prefetch, or NULL */
	struct ms_uffd_prefetch_stats prefetch_last; /* the last resume's, once it ended */
	char prefetch_source[12];		     /* of the last resume: init, ..., off */
	/* op holder only */
	int prefetch_request; /* the next resume's enum ms_uffd_prefetch_source; -1: config */
	struct ms_sandbox *vm;
	struct ms_pageserver *srv;
	struct ms_template *tmpl;
	unsigned serial;
	/* the page server's session failure (sandboxes.c): set by its event thread, then
	 * session_failed (an eventfd) is signalled; reset by the op holder at a resume */
	int session_failed;
	_Atomic int session_error;
	_Atomic uint64_t session_error_off;
};

struct ms_node_sandbox *ms_nsb_new(struct ms_node *node, int *err);
void ms_nsb_unref(struct ms_node_sandbox *sb);
ssize_t ms_nsb_index_locked(struct ms_node *node, const ms_uuid *id);
/* The sandbox with a reference, or NULL. */
struct ms_node_sandbox *ms_nsb_lookup(struct ms_node *node, const ms_uuid *id);
/* op held: tears a running sandbox down (VM, page server, template reference) */
void ms_nsb_teardown(struct ms_node_sandbox *sb);
/* op held (or not yet shared): a fresh guest over an empty base template */
int ms_nsb_start_fresh(struct ms_node_sandbox *sb, const struct ms_api_request *req, char *cause,
		       size_t cause_len);
/*
 * op held (or not yet shared): resumes build_id into sb, lazily through a page
 * server in the run dir. On error nothing changed (the sandbox keeps its state).
 */
int ms_nsb_resume(struct ms_node_sandbox *sb, const ms_uuid *build_id,
		  const struct ms_api_exec *exec, char *cause, size_t cause_len);
/*
 * op held: ends the running resume's prefetch (sandbox pause, delete, death):
 * nothing is installed after it returns; its figures stay in prefetch_last.
 */
void ms_nsb_prefetch_end(struct ms_node_sandbox *sb);
/* node->lock: the prefetch figures of the sandbox (live while one runs); false: none */
bool ms_nsb_prefetch_figures_locked(const struct ms_node_sandbox *sb,
				    struct ms_uffd_prefetch_stats *out);
/*
 * op held, sb RUNNING: pause into a new build (want: its id, NULL: a random
 * one). Returns once the new build can be resumed. On an
 * error after the VM stopped the sandbox is FAILED (its memory went with it).
 */
int ms_nsb_pause(struct ms_node_sandbox *sb, const ms_uuid *want, ms_uuid *build_id, char *cause,
		 size_t cause_len);

/* ---- handlers.c: answers, shared with builds.c ---- */

/* The JSON answer (body: taken; NULL is out of memory, a 500). */
void ms_respond_json(struct ms_node_response *resp, unsigned status, cJSON *body);
/* {"error": code, "message": ...}; 429 and 503 carry Retry-After. */
__attribute__((format(printf, 4, 5))) void ms_respond_error(struct ms_node_response *resp,
							    unsigned status, const char *code,
							    const char *fmt, ...);
/* An operation's error as an answer (404, 409, 422, 500, 504 by the error). */
void ms_respond_errno(struct ms_node_response *resp, int err, const char *what, const char *cause);
/* node->lock held: a cached build's status (capturing ... published, failed, on_peer). */
const char *ms_build_status_locked(struct ms_node *node, const struct ms_template *t,
				   enum ms_pause_state state);

/* ---- builds.c: the build lifecycle (list, delete, named builds, the store quota) ---- */

void ms_handle_build_list(struct ms_node *node, const struct ms_api_request *req,
			  struct ms_node_response *resp);
void ms_handle_build_delete(struct ms_node *node, const struct ms_api_request *req,
			    struct ms_node_response *resp);
/*
 * Before a pause of sb: a build id the caller chose must be free (409), and
 * the store quota must leave room for sb's memory (507). 0 when the pause may
 * go on, else the answer is in resp.
 */
int ms_builds_admit_pause(struct ms_node *node, const struct ms_node_sandbox *sb,
			  const struct ms_api_request *req, struct ms_node_response *resp);

/* ---- recovery.c: the upload journal and what a crash left ---- */

/* Journals id's upload as started (fsynced) before any of it goes to the store. */
int ms_node_journal_add(struct ms_node *node, const ms_uuid *id);
/* The upload of id ended (its end is recorded): its journal entry goes. */
void ms_node_journal_done(struct ms_node *node, const ms_uuid *id);
/*
 * Resolves id in the store: with its header there it is complete (*lost
 * false); without, everything under "{id}/" is removed (*lost true). Its
 * peers/ and uploads/ leases go either way. Each removal is logged and counted.
 */
int ms_node_remove_leftovers(struct ms_node *node, const ms_uuid *id, bool *lost);
/* Resolves every journal entry; *pending: entries left for a later try (store errors). */
int ms_node_recover(struct ms_node *node, unsigned *pending);
/* Whether the recovery found id lost. */
bool ms_node_is_lost(struct ms_node *node, const ms_uuid *id);

/* ---- hooks.c: test hooks (config keys test_*) ---- */

/* test_stall_compare: holds t's compare gate until the stall passed or the node stops. */
void ms_node_hook_stall_compare(struct ms_template *t);
/* test_stall_drain: the same for t's drain gate. */
void ms_node_hook_stall_drain(struct ms_template *t);
/*
 * test_store_delay / test_hold_store: node->store becomes a fault-injecting
 * wrapper of node->store_base (every put sleeps; or the matching calls hang).
 * 0, or an error with why filled.
 */
int ms_node_hook_store(struct ms_node *node, char *why, size_t why_len);
/* test_store_faults: the kinds (metrics: memsnap_test_store_faults_total{kind}) */
enum ms_node_store_fault { MS_FAULT_PUT_TIMEOUT, MS_FAULT_PUT_REFUSED, MS_FAULT_READ_TRUNCATE };
extern const char *const ms_node_store_fault_names[3];
/* test_hold_upload: holds t's upload gate until the file exists or the node stops. */
void ms_node_hook_hold_upload(struct ms_template *t);
/* test_peer_die_after: the peer server's request hook (ctx: the node). */
int ms_node_hook_peer_die(void *ctx, const struct ms_peer_request *req);

#endif
