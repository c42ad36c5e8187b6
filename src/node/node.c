/*
 * node.c - memsnapd's node: its lifecycle (ms_node_new opens the backend,
 * the store, the diff store and the peers, and starts the janitor;
 * ms_node_shutdown stops it; ms_node_free frees it) and the lock on its
 * cache directory. The other jobs live next to it: worker.c (the thread that
 * drives a VM), templates.c (the template cache), sandboxes.c (the sandbox
 * registry, start/resume/pause), handlers.c (the API) and hooks.c (test
 * hooks); node_int.h has the structs they share and their locks.
 *
 * Invariants:
 *  1. One daemon per cache dir: an exclusive flock on cache_dir/.memsnapd.lock
 *     is taken before anything in the dir is touched, so a second daemon
 *     never wipes a live one's files.
 *  2. Nothing in the cache dir survives a restart: it is emptied at start
 *     (but its lock and the upload journal, which recovery.c resolves first:
 *     the builds a dead daemon left half uploaded).
 *  3. Free order: sandboxes, then the peer server (no peer request holds a
 *     build's file), templates, the diff store, the peers (their routing
 *     sources were the resolver's), the store.
 */
#include "node/node_int.h"
#include "storage/s3.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MS_MOD "node"

void ms_node_count_request(struct ms_node *node, unsigned status)
{
	unsigned c = status / 100;
	atomic_fetch_add(&node->metrics.http_requests[c >= 1 && c <= 5 ? c : 0], 1);
}

const char *ms_node_backend(struct ms_node *node)
{
	return node->backend->name;
}

const char *ms_node_peer_address(struct ms_node *node)
{
	return ms_node_peers_address(node->peers);
}

/* ---- startup and shutdown ---- */

static int ms_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path))
		ms_warn(MS_MOD, "cannot remove leftover %s: %s", path, strerror(errno));
	return 0;
}

/*
 * Takes the cache dir (created if missing) for this daemon: an exclusive
 * flock on its lock file, so a second daemon never wipes a live one's files.
 */
static int ms_node_lock_dir(const char *dir, int *fd_out)
{
	char path[MS_NODE_PATH_MAX + 32];
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), "%s/%s", dir, MS_NODE_LOCK_NAME);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int err = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return err;
	}
	*fd_out = fd;
	return 0;
}

/*
 * Empties dir but its lock and the upload journal (recovery.c reads it):
 * nothing else in it survives a restart.
 */
static int ms_node_clean_dir(const char *dir, unsigned *removed)
{
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int err = 0;
	*removed = 0;
	while (!err && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    !strcmp(e->d_name, MS_NODE_LOCK_NAME) ||
		    !strcmp(e->d_name, MS_NODE_JOURNAL_NAME))
			continue;
		char path[MS_NODE_PATH_MAX + 300];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		(*removed)++;
		if (nftw(path, ms_rm_entry, 16, FTW_DEPTH | FTW_PHYS))
			err = -errno;
	}
	closedir(d);
	return err;
}

struct ms_node *ms_node_new(const struct ms_node_config *cfg, int *err, char *why, size_t why_len)
{
	struct ms_node *node = calloc(1, sizeof(*node));
	if (!node) {
		*err = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	node->cfg = *cfg;
	node->started_ns = ms_clock_now_ns();
	char host[32] = "?";
	gethostname(host, sizeof(host) - 1);
	snprintf(node->upload_holder, sizeof(node->upload_holder), "memsnapd pid %ld on %s",
		 (long)getpid(), host);
	node->lock_fd = -1;
	pthread_mutex_init(&node->lock, NULL);
	pthread_mutex_init(&node->quota_lock, NULL);
	pthread_cond_init(&node->cond, NULL);
	ms_metrics_init(&node->metrics);
	if ((*err = ms_sandbox_backend_pick(cfg->backend, &node->backend, node->backend_why,
					    sizeof(node->backend_why)))) {
		snprintf(why, why_len, "backend: %s", node->backend_why);
		goto fail;
	}
	enum ms_tracker_mode want;
	if ((*err = ms_tracker_mode_parse(cfg->tracker, &want))) {
		snprintf(why, why_len, "tracker %s: not auto, async or sync", cfg->tracker);
		goto fail;
	}
	if ((*err = ms_tracker_pick(want, cfg->test_tracker_probe_none, &node->tracker,
				    node->tracker_why, sizeof(node->tracker_why)))) {
		snprintf(why, why_len, "%s", node->tracker_why);
		goto fail;
	}
	ms_tracker_set_mode(node->tracker);
	if ((*err = ms_node_lock_dir(cfg->cache_dir, &node->lock_fd))) {
		snprintf(why, why_len, "cache_dir %s: %s", cfg->cache_dir,
			 *err == -EBUSY ? "another memsnapd uses it" : ms_strerror(*err));
		goto fail;
	}
	if (mkdir(cfg->run_dir, 0700) && errno != EEXIST) {
		*err = -errno;
		snprintf(why, why_len, "run_dir %s: %s", cfg->run_dir, strerror(errno));
		goto fail;
	}
	struct ms_s3_config s3 = {
	    .endpoint = cfg->s3_endpoint[0] ? cfg->s3_endpoint : NULL,
	    .sts_endpoint = cfg->s3_sts_endpoint[0] ? cfg->s3_sts_endpoint : NULL,
	    .imds = cfg->s3_imds,
	    .imds_endpoint = cfg->s3_imds_endpoint[0] ? cfg->s3_imds_endpoint : NULL,
	};
	ms_s3_env_apply(&cfg->s3_env, &s3);
	node->store = ms_store_open(cfg->store, &s3, err);
	if (!node->store) {
		snprintf(why, why_len, "store %s: %s", cfg->store, ms_strerror(*err));
		goto fail;
	}
	if (cfg->s3_create_bucket && !strncmp(cfg->store, "s3://", 5) &&
	    (*err = ms_store_s3_create_bucket(node->store))) {
		snprintf(why, why_len, "store %s: cannot create the bucket: %s", cfg->store,
			 ms_strerror(*err));
		goto fail;
	}
	if (!(node->store = ms_store_timed_new(node->store, &node->metrics.store_timing))) {
		*err = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		goto fail;
	}
	node->store_base = node->store;
	if ((*err = ms_node_hook_store(node, why, why_len)))
		goto fail;
	/* what a daemon that died left: its unfinished uploads first, then the cache */
	unsigned pending = 0;
	if ((*err = ms_node_recover(node, &pending)) && !pending) {
		snprintf(why, why_len, "recovery: %s", ms_strerror(*err));
		goto fail;
	}
	node->recovery_pending = pending > 0; /* the janitor tries again */
	unsigned removed = 0;
	if ((*err = ms_node_clean_dir(cfg->cache_dir, &removed))) {
		snprintf(why, why_len, "cache_dir %s: %s", cfg->cache_dir, ms_strerror(*err));
		goto fail;
	}
	if (removed) {
		ms_info(MS_MOD, "removed %u leftovers from %s", removed, cfg->cache_dir);
		atomic_fetch_add(&node->metrics.recovery_removed[MS_RECOVERY_CACHE_ENTRY], removed);
	}
	struct ms_diffstore_config dcfg = {.ttl_ns = node->cfg.cache_ttl_ns,
					   .delete_delay_ns = node->cfg.cache_delete_delay_ns};
	if ((*err = ms_build_cache_init(&node->builds, node->store, node->cfg.cache_dir, &dcfg))) {
		snprintf(why, why_len, "diff store: %s", ms_strerror(*err));
		goto fail;
	}
	if (!(node->peers =
		  ms_node_peers_new(&node->cfg, &node->builds.storage,
				    cfg->test_peer_die_after ? ms_node_hook_peer_die : NULL, node,
				    err, why, why_len)))
		goto fail;
	node->resolve = ms_node_peers_resolve(node->peers, &node->resolve_ctx);
	if (ms_node_peers_address(node->peers))
		ms_info(MS_MOD, "serving builds to peers on %s",
			ms_node_peers_address(node->peers));
	if ((*err = -pthread_create(&node->janitor, NULL, ms_node_janitor, node))) {
		snprintf(why, why_len, "janitor thread: %s", ms_strerror(*err));
		goto fail;
	}
	node->janitor_started = true;
	ms_info(MS_MOD, "sandbox backend: %s", node->backend_why);
	ms_info(MS_MOD, "written-page tracker: %s (%s)", ms_tracker_mode_name(node->tracker),
		node->tracker_why);
	return node;
fail:
	ms_node_free(node);
	return NULL;
}

/* How long a shutdown waits for cancelled pipelines to stop (a put under way ends first). */
#define MS_NODE_CANCEL_WAIT_NS (30 * MS_NSEC_PER_SEC)

unsigned ms_node_shutdown(struct ms_node *node)
{
	pthread_mutex_lock(&node->lock);
	node->stopping = true;
	pthread_cond_broadcast(&node->cond); /* stalls and the janitor end */
	struct ms_node_sandbox **sandboxes = node->sandboxes;
	size_t nsandboxes = node->nsandboxes;
	node->sandboxes = NULL;
	node->nsandboxes = node->sandboxes_cap = 0;
	pthread_mutex_unlock(&node->lock);
	if (node->janitor_started) {
		pthread_join(node->janitor, NULL);
		node->janitor_started = false;
	}
	/* running sandboxes stop: their VMs are killed (a node shutdown ends them) */
	for (size_t i = 0; i < nsandboxes; i++) {
		struct ms_node_sandbox *sb = sandboxes[i];
		pthread_mutex_lock(&sb->op);
		ms_nsb_teardown(sb);
		sb->deleted = true;
		pthread_mutex_unlock(&sb->op);
		ms_nsb_unref(sb);
	}
	free(sandboxes);
	/* uploads finish (bounded by shutdown_timeout); fetches end */
	int64_t deadline = ms_clock_now_ns() + node->cfg.shutdown_timeout_ns;
	unsigned unfinished = 0;
	pthread_mutex_lock(&node->lock);
	for (;;) {
		unfinished = node->fetches;
		for (size_t i = 0; i < node->ntemplates; i++)
			unfinished += !node->templates[i]->done;
		if (!unfinished || ms_clock_now_ns() >= deadline)
			break;
		ms_info(MS_MOD, "shutdown: waiting for %u uploads and fetches", unfinished);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	/*
	 * Past shutdown_timeout the pipelines still running are cancelled (their one
	 * token): each stops at its next wait or put, before its header, so nothing
	 * half-written becomes visible (data without a header is never read). Then
	 * they are waited for, bounded: a put under way still ends on its own.
	 */
	unsigned cancelled = 0;
	for (size_t i = 0; unfinished && i < node->ntemplates; i++)
		if (!node->templates[i]->done && node->templates[i]->pause) {
			ms_pause_cancel(node->templates[i]->pause);
			cancelled++;
		}
	if (cancelled)
		ms_err(MS_MOD, "shutdown: %u uploads did not finish in time: cancelled", cancelled);
	deadline = ms_clock_now_ns() + MS_NODE_CANCEL_WAIT_NS;
	while (cancelled && ms_clock_now_ns() < deadline) {
		unsigned running = 0;
		for (size_t i = 0; i < node->ntemplates; i++)
			running += node->templates[i]->pause && !node->templates[i]->done;
		if (!running)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * MS_NSEC_PER_MSEC;
		ts.tv_sec += ts.tv_nsec / MS_NSEC_PER_SEC;
		ts.tv_nsec %= MS_NSEC_PER_SEC;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	pthread_mutex_unlock(&node->lock);
	if (unfinished)
		ms_err(MS_MOD, "shutdown: %u uploads or fetches did not finish in time",
		       unfinished);
	return unfinished;
}

void ms_node_free(struct ms_node *node)
{
	if (!node)
		return;
	if (node->janitor_started || node->nsandboxes)
		ms_node_shutdown(node);
	/* no peer request holds a build's file once this returns */
	ms_node_peers_stop_server(node->peers);
	for (size_t i = 0; i < node->ntemplates; i++)
		ms_template_unref(node->templates[i]);
	free(node->templates);
	free(node->lost);
	ms_build_cache_fini(&node->builds);
	/* after the diff store: its routing sources were the resolver's */
	ms_node_peers_free(node->peers);
	if (node->store && node->store != node->store_base)
		ms_store_free(node->store); /* the wrapper: it borrows store_base */
	if (node->store_base)
		ms_store_free(node->store_base);
	ms_metrics_fini(&node->metrics);
	if (node->lock_fd >= 0)
		close(node->lock_fd);
	pthread_cond_destroy(&node->cond);
	pthread_mutex_destroy(&node->lock);
	pthread_mutex_destroy(&node->quota_lock);
	free(node);
}
