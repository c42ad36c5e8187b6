/*
 * hooks.c - the daemon's test hooks (config keys test_*, never set in
 * production): the compare and drain stalls (test_stall_compare, _drain),
 * the store's delay and holds through the fault-injecting store
 * (test_store_delay, test_hold_store, test_store_faults: every N-th put
 * refused or timed out, every N-th read cut short), the upload hold (test_hold_upload) and
 * the node that dies while a peer reads it (test_peer_die_after).
 *
 * Invariants:
 *  1. A hold always ends: when its condition is met, or when the node stops
 *     (node->stopping, broadcast on node->cond), so shutdown never hangs.
 *  2. A hook changes no state the daemon reads without the hook; it only
 *     delays, and the pipeline does the same work after it.
 */
#include "node/node_int.h"
#include "storage/faulty.h"
#include "util/clock.h"
#include "util/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MS_MOD "node"

/* ---- holds of the pipeline's stages ---- */

/* Sets gate once ns passed from now, or at once when the node stops. */
static void ms_node_hook_stall(struct ms_node *node, int64_t ns, struct ms_future *gate)
{
	int64_t deadline = ms_clock_now_ns() + ns;
	pthread_mutex_lock(&node->lock);
	while (!node->stopping && ms_clock_now_ns() < deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t left = deadline - ms_clock_now_ns();
		if (left > 100 * MS_NSEC_PER_MSEC)
			left = 100 * MS_NSEC_PER_MSEC;
		ts.tv_nsec += left;
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	pthread_mutex_unlock(&node->lock);
	ms_future_set(gate, NULL);
}

void ms_node_hook_stall_compare(struct ms_template *t)
{
	ms_node_hook_stall(t->node, t->node->cfg.test_stall_compare_ns, t->gate);
}

void ms_node_hook_stall_drain(struct ms_template *t)
{
	ms_node_hook_stall(t->node, t->node->cfg.test_stall_drain_ns, t->drain_gate);
}

const char *const ms_node_store_fault_names[3] = {"put_timeout", "put_refused", "read_truncate"};

/*
 * test_store_faults = KIND:N,...: one faulty wrapper per kind, stacked over
 * store_base (each owns the one below it but the last), node->store the top.
 * A refused or timed-out put is the upload's to retry; a short read is the
 * checking store's (verified.h) to fetch again.
 */
static int ms_node_hook_store_faults(struct ms_node *node, char *why, size_t why_len)
{
	static const struct {
		enum ms_faulty_op op;
		enum ms_faulty_action action;
		int err;
	} kinds[] = {
	    [MS_FAULT_PUT_TIMEOUT] = {MS_FAULTY_PUT, MS_FAULTY_FAIL, -ETIMEDOUT},
	    [MS_FAULT_PUT_REFUSED] = {MS_FAULTY_PUT, MS_FAULTY_FAIL, -ECONNREFUSED},
	    [MS_FAULT_READ_TRUNCATE] = {MS_FAULTY_READ, MS_FAULTY_TRUNCATE, 0},
	};
	char spec[sizeof(node->cfg.test_store_faults)], *save = NULL;
	snprintf(spec, sizeof(spec), "%s", node->cfg.test_store_faults);
	for (char *term = strtok_r(spec, ",", &save); term; term = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(term, ':'), *end = NULL;
		size_t k = 0;
		while (colon && k < 3 &&
		       (strlen(ms_node_store_fault_names[k]) != (size_t)(colon - term) ||
			strncmp(term, ms_node_store_fault_names[k], (size_t)(colon - term))))
			k++;
		unsigned long every = colon ? strtoul(colon + 1, &end, 10) : 0;
		if (!colon || k == 3 || !end || *end || every < 2 || every > 1000000 ||
		    node->store_faults[k]) {
			snprintf(
			    why, why_len,
			    "test_store_faults: '%s': KIND:N, KIND put_timeout, put_refused or "
			    "read_truncate (each once), N 2..1000000",
			    term);
			return -EINVAL;
		}
		struct ms_store *w = node->store == node->store_base
					 ? ms_store_faulty_new(node->store)
					 : ms_store_faulty_new_owning(node->store);
		if (!w) {
			snprintf(why, why_len, "out of memory");
			return -ENOMEM;
		}
		ms_store_faulty_inject_every(w, kinds[k].op, (unsigned)every, kinds[k].action,
					     kinds[k].err, 0);
		node->store_faults[k] = node->store = w;
	}
	return 0;
}

int ms_node_hook_store(struct ms_node *node, char *why, size_t why_len)
{
	const struct ms_node_config *cfg = &node->cfg;
	int set = (cfg->test_store_delay_ns > 0) + !!cfg->test_hold_store[0] +
		  !!cfg->test_store_faults[0];
	if (!set)
		return 0;
	if (set > 1) {
		snprintf(why, why_len,
			 "test_store_delay, test_hold_store and test_store_faults exclude each "
			 "other");
		return -EINVAL;
	}
	if (cfg->test_store_faults[0])
		return ms_node_hook_store_faults(node, why, why_len);
	enum ms_faulty_op op = MS_FAULTY_PUT;
	const char *match = NULL;
	if (cfg->test_hold_store[0]) {
		const char *colon = strchr(cfg->test_hold_store, ':');
		size_t n = colon ? (size_t)(colon - cfg->test_hold_store) : 0;
		if (colon && n == 3 && !strncmp(cfg->test_hold_store, "put", 3))
			op = MS_FAULTY_PUT;
		else if (colon && n == 6 && !strncmp(cfg->test_hold_store, "remove", 6))
			op = MS_FAULTY_REMOVE;
		if (!colon || !colon[1] || (n != 3 && n != 6)) {
			snprintf(why, why_len, "test_hold_store: OP:SUBSTRING, OP put or remove");
			return -EINVAL;
		}
		match = colon + 1;
	}
	struct ms_store *faulty = ms_store_faulty_new(node->store_base);
	if (!faulty) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	ms_store_faulty_match(faulty, match);
	/* a delay for every write, or an hour's hang for the held calls */
	ms_store_faulty_inject_every(faulty, op, 1, MS_FAULTY_DELAY, 0,
				     match ? 3600 * MS_NSEC_PER_SEC : cfg->test_store_delay_ns);
	node->store = faulty;
	return 0;
}

void ms_node_hook_hold_upload(struct ms_template *t)
{
	struct ms_node *node = t->node;
	pthread_mutex_lock(&node->lock);
	/* a pipeline that failed before its upload never reaches the hold */
	while (!node->stopping && !node->release_uploads &&
	       access(node->cfg.test_hold_upload, F_OK) != 0 &&
	       ms_pause_state(t->pause, NULL) != MS_PAUSE_FAILED) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * MS_NSEC_PER_MSEC;
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	pthread_mutex_unlock(&node->lock);
	ms_future_set(t->upload_gate, NULL);
}

/*
 * test_peer_die_after: the Nth peer data request lets every upload finish,
 * then the node dies by SIGKILL without answering - a node lost right after
 * its upload, while a peer is in the middle of reading its build.
 */
int ms_node_hook_peer_die(void *ctx, const struct ms_peer_request *req)
{
	struct ms_node *node = ctx;
	if (req->op != MS_PEER_OP_DATA ||
	    atomic_fetch_add(&node->peer_data_requests, 1) + 1 != node->cfg.test_peer_die_after)
		return 0;
	int64_t deadline = ms_clock_now_ns() + 120 * MS_NSEC_PER_SEC;
	pthread_mutex_lock(&node->lock);
	node->release_uploads = true;
	pthread_cond_broadcast(&node->cond);
	for (;;) {
		unsigned running = 0;
		for (size_t i = 0; i < node->ntemplates; i++)
			running += !node->templates[i]->done;
		if (!running || ms_clock_now_ns() >= deadline)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	pthread_mutex_unlock(&node->lock);
	ms_warn(MS_MOD, "test_peer_die_after: peer data request %llu: dying (SIGKILL)",
		(unsigned long long)node->cfg.test_peer_die_after);
	kill(getpid(), SIGKILL);
	return 1;
}
