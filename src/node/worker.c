/*
 * worker.c - the worker thread of a sandbox: the only thread that drives its
 * VM. The proc backend is ptrace'd, and only the thread that seized a process
 * may drive it, so every VM operation of one sandbox runs here.
 *
 * Invariants:
 *  1. One call at a time: callers hold the sandbox's op lock around
 *     ms_worker_call, so fn/arg are never overwritten while pending.
 *  2. w->lock guards fn, arg, result, pending, done and quit; fn runs without it.
 */
#include "node/node_int.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

static void *ms_worker_main(void *arg)
{
	struct ms_worker *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->pending && !w->quit)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->quit)
			break;
		int (*fn)(void *) = w->fn;
		void *fn_arg = w->arg;
		pthread_mutex_unlock(&w->lock);
		int result = fn(fn_arg);
		pthread_mutex_lock(&w->lock);
		w->result = result;
		w->pending = false;
		w->done = true;
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int ms_worker_start(struct ms_worker *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	int err = pthread_create(&w->thread, NULL, ms_worker_main, w);
	if (err) {
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->lock);
		return -err;
	}
	w->started = true;
	return 0;
}

int ms_worker_call(struct ms_worker *w, int (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&w->lock);
	w->fn = fn;
	w->arg = arg;
	w->pending = true;
	w->done = false;
	pthread_cond_broadcast(&w->cond);
	while (!w->done)
		pthread_cond_wait(&w->cond, &w->lock);
	int result = w->result;
	pthread_mutex_unlock(&w->lock);
	return result;
}

void ms_worker_stop(struct ms_worker *w)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->lock);
	w->quit = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	w->started = false;
}
