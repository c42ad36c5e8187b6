/*
 * lock.h - debug checks that a lock is held where a caller must hold it.
 *
 * Every function named *_locked() starts with MS_ASSERT_HELD(&obj->lock). It
 * checks that the mutex is held (by some thread: pthreads cannot tell which
 * one without an owner field, and SQLite's sqlite3_mutex_held() is the same
 * approximation). A default (non-recursive) mutex held by anyone makes
 * pthread_mutex_trylock() answer EBUSY; anything else means the caller forgot
 * the lock, and in a debug build that is an assertion failure. With NDEBUG the
 * check compiles to nothing.
 */
#ifndef MS_UTIL_LOCK_H
#define MS_UTIL_LOCK_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>

#ifdef NDEBUG
#define MS_ASSERT_HELD(m) ((void)(m))
#else
static inline int ms_mutex_held(pthread_mutex_t *m)
{
	int rc = pthread_mutex_trylock(m);
	if (rc == 0) {
		pthread_mutex_unlock(m);
		return 0;
	}
	return rc == EBUSY;
}
#define MS_ASSERT_HELD(m) assert(ms_mutex_held(m))
#endif

#endif
