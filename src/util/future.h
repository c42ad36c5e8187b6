/*
 * future.h - set-once futures: a value or an error, set exactly once.
 *
 * Futures connect the pause stages (compare result, deduped header, drain done,
 * upload done, swapped). The future owns its value once set and frees it with the
 * destructor given at creation when the last reference goes. A value returned by
 * wait/peek is borrowed: valid while the caller holds a reference.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef MS_UTIL_FUTURE_H
#define MS_UTIL_FUTURE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct ms_future;

/* free_value may be NULL (value not owned). Returns NULL on -ENOMEM. Refcount starts at 1. */
struct ms_future *ms_future_new(void (*free_value)(void *value));
struct ms_future *ms_future_ref(struct ms_future *f);
void ms_future_unref(struct ms_future *f);

/* Sets the value. Returns -EALREADY (and does not take value) when already settled. */
int ms_future_set(struct ms_future *f, void *value);
/* Settles with error err (< 0). Returns -EALREADY when already settled. */
int ms_future_fail(struct ms_future *f, int err);

/* Blocks until settled. Returns 0 with *value set, or the error. value may be NULL. */
int ms_future_wait(struct ms_future *f, void **value);
/* As ms_future_wait, but returns -ETIMEDOUT after timeout_ns nanoseconds. */
int ms_future_wait_timeout(struct ms_future *f, int64_t timeout_ns, void **value);
/*
 * As ms_future_wait_timeout (timeout_ns < 0: forever), looking at *cancel every
 * poll_ns: the future's result, -ETIMEDOUT, or cancelled_err once *cancel is set.
 * A future that settles between two looks gives its own result, never -ETIMEDOUT.
 */
int ms_future_wait_cancellable(struct ms_future *f, int64_t timeout_ns, const atomic_bool *cancel,
			       int cancelled_err, int64_t poll_ns, void **value);
/* Never blocks: false while pending; else true with *value / *err filled (either may be NULL). */
bool ms_future_peek(struct ms_future *f, void **value, int *err);

#endif
