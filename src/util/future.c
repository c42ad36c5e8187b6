/*
 * future.c - set-once futures on a mutex + condition variable.
 *
 * Invariants:
 *  1. settled goes false -> true once, under lock; value/err never change after.
 *  2. the value is freed exactly once, by the last unref.
 */
#include "util/future.h"
#include "util/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct ms_future {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled once, when settled */
	atomic_int refs;
	bool settled; /* guarded by lock */
	int err;      /* guarded by lock; immutable once settled */
	void *value;  /* guarded by lock; immutable once settled */
	void (*free_value)(void *value);
};

struct ms_future *ms_future_new(void (*free_value)(void *value))
{
	struct ms_future *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_init(&f->lock, NULL);
	atomic_init(&f->refs, 1);
	f->free_value = free_value;
	return f;
}

struct ms_future *ms_future_ref(struct ms_future *f)
{
	atomic_fetch_add(&f->refs, 1);
	return f;
}

void ms_future_unref(struct ms_future *f)
{
	if (!f || atomic_fetch_sub(&f->refs, 1) != 1)
		return;
	if (f->settled && f->err == 0 && f->value && f->free_value)
		f->free_value(f->value);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static int ms_future_settle(struct ms_future *f, void *value, int err)
{
	pthread_mutex_lock(&f->lock);
	if (f->settled) {
		pthread_mutex_unlock(&f->lock);
		return -EALREADY;
	}
	f->settled = true;
	f->value = value;
	f->err = err;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

int ms_future_set(struct ms_future *f, void *value)
{
	return ms_future_settle(f, value, 0);
}

int ms_future_fail(struct ms_future *f, int err)
{
	return ms_future_settle(f, NULL, err < 0 ? err : -EINVAL);
}

static int ms_future_result(struct ms_future *f, void **value)
{
	if (value)
		*value = f->err ? NULL : f->value;
	return f->err;
}

int ms_future_wait(struct ms_future *f, void **value)
{
	pthread_mutex_lock(&f->lock);
	while (!f->settled)
		pthread_cond_wait(&f->cond, &f->lock);
	int err = ms_future_result(f, value);
	pthread_mutex_unlock(&f->lock);
	return err;
}

int ms_future_wait_timeout(struct ms_future *f, int64_t timeout_ns, void **value)
{
	struct timespec deadline = ms_clock_deadline(timeout_ns < 0 ? 0 : timeout_ns);
	int err = 0;
	pthread_mutex_lock(&f->lock);
	while (!f->settled) {
		if (pthread_cond_timedwait(&f->cond, &f->lock, &deadline) == ETIMEDOUT &&
		    !f->settled) {
			err = -ETIMEDOUT;
			break;
		}
	}
	if (f->settled)
		err = ms_future_result(f, value);
	pthread_mutex_unlock(&f->lock);
	return err;
}

int ms_future_wait_cancellable(struct ms_future *f, int64_t timeout_ns, const atomic_bool *cancel,
			       int cancelled_err, int64_t poll_ns, void **value)
{
	int64_t deadline = timeout_ns < 0 ? INT64_MAX : ms_clock_now_ns() + timeout_ns;
	for (;;) {
		if (cancel && atomic_load(cancel))
			return cancelled_err;
		int64_t left = deadline - ms_clock_now_ns();
		if (left <= 0)
			return -ETIMEDOUT;
		int err = ms_future_wait_timeout(f, left < poll_ns ? left : poll_ns, value);
		if (err != -ETIMEDOUT)
			return err;
		/* the poll ran out - or the future settled since (perhaps with -ETIMEDOUT
		 * as its own error): its result, not the poll's */
		if (ms_future_peek(f, value, &err))
			return err;
	}
}

bool ms_future_peek(struct ms_future *f, void **value, int *err)
{
	pthread_mutex_lock(&f->lock);
	bool settled = f->settled;
	if (settled) {
		int e = ms_future_result(f, value);
		if (err)
			*err = e;
	}
	pthread_mutex_unlock(&f->lock);
	return settled;
}
