/*
 * hooks.c - the daemon's test hooks (config keys test_*, never set in
 * production): the compare stall (test_stall_compare), the upload hold (test_hold_upload) and
 * the node that dies while a peer reads it (test_peer_die_after).
 *
 * Invariants:
 *  1. A hold always ends: when its condition is met, or when the node stops
 *     (node->stopping, broadcast on node->cond), so shutdown never hangs.
 *  2. A hook changes no state the daemon reads without the hook; it only
 *     delays, and the pipeline does the same work after it.
 */
#include "node/node_int.h"
#include "util/clock.h"
#include "util/log.h"

#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MS_MOD "node"

/* ---- holds of the pipeline's stages ---- */

void ms_node_hook_stall_compare(struct ms_template *t)
{
	struct ms_node *node = t->node;
	int64_t deadline = ms_clock_now_ns() + node->cfg.test_stall_compare_ns;
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
	ms_future_set(t->gate, NULL);
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
