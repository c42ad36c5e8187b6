/*
 * wpset.c - the sync tracker's written set and its hand-over registry (wpset.h).
 *
 * Invariants:
 *  1. A page's protection is lifted (resolve) and restored (take with reset) only
 *     under w->lock, with the set updated in the same critical section.
 *  2. The registry holds one reference per published set; entries are keyed by
 *     the memfd's (st_dev, st_ino), which every fd of the file shares.
 */
#include "util/wpset.h"
#include "util/clock.h"
#include "util/lock.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>

struct ms_wpset {
	atomic_int refs;
	uint64_t base, size; /* immutable */
	pthread_mutex_t lock;
	pthread_cond_t claimed_cond;
	struct ms_pageset *pages; /* guarded by lock: written since the last reset */
	bool claimed;		  /* guarded by lock */
	_Atomic uint64_t faults;
};

struct ms_wpset *ms_wpset_new(uint64_t base, uint64_t size)
{
	struct ms_wpset *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	if (!(w->pages = ms_pageset_new())) {
		free(w);
		return NULL;
	}
	atomic_init(&w->refs, 1);
	w->base = base;
	w->size = size;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&w->claimed_cond, &attr);
	pthread_condattr_destroy(&attr);
	return w;
}

struct ms_wpset *ms_wpset_ref(struct ms_wpset *w)
{
	atomic_fetch_add(&w->refs, 1);
	return w;
}

void ms_wpset_unref(struct ms_wpset *w)
{
	if (!w || atomic_fetch_sub(&w->refs, 1) != 1)
		return;
	ms_pageset_free(w->pages);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->claimed_cond);
	free(w);
}

static int ms_wpset_protect_locked(struct ms_wpset *w, int uffd, uint64_t start, uint64_t len,
				   bool protect)
{
	MS_ASSERT_HELD(&w->lock);
	struct uffdio_writeprotect wp = {.range = {.start = start, .len = len},
					 .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

int ms_wpset_resolve(struct ms_wpset *w, int uffd, uint64_t addr, uint64_t len)
{
	uint64_t start = addr & ~4095ULL;
	if (len == 0 || len % 4096)
		return -EINVAL;
	start &= ~(len - 1); /* len is the page size: a power of two */
	if (start < w->base || start - w->base >= w->size || len > w->base + w->size - start)
		return -EINVAL;
	atomic_fetch_add(&w->faults, 1);
	pthread_mutex_lock(&w->lock);
	/* recorded first: once unprotected, the write can land at any moment */
	ms_pageset_add_range(w->pages, (start - w->base) / 4096, (start - w->base + len) / 4096);
	int err = ms_wpset_protect_locked(w, uffd, start, len, false);
	pthread_mutex_unlock(&w->lock);
	return err;
}

void ms_wpset_begin_install(struct ms_wpset *w, uint64_t addr, uint64_t len)
{
	pthread_mutex_lock(&w->lock);
	uint64_t start = addr < w->base ? w->base : addr, end = addr + len;
	if (end > w->base + w->size)
		end = w->base + w->size;
	if (start < end)
		ms_pageset_add_range(w->pages, (start - w->base) / 4096,
				     (end - w->base + 4095) / 4096);
}

void ms_wpset_end_install(struct ms_wpset *w)
{
	pthread_mutex_unlock(&w->lock);
}

int ms_wpset_take(struct ms_wpset *w, int uffd, bool reset, struct ms_pageset *set)
{
	int err = 0;
	pthread_mutex_lock(&w->lock);
	if (reset)
		err = ms_wpset_protect_locked(w, uffd, w->base, w->size, true);
	if (!err) {
		ms_pageset_union(set, w->pages);
		if (reset)
			ms_pageset_clear(w->pages);
	}
	pthread_mutex_unlock(&w->lock);
	return err;
}

uint64_t ms_wpset_faults(struct ms_wpset *w)
{
	return atomic_load(&w->faults);
}

/* ---- the hand-over registry ---- */

struct ms_wpset_entry {
	dev_t dev;
	ino_t ino;
	struct ms_wpset *set;
	struct ms_wpset_entry *next;
};

static pthread_mutex_t ms_wpset_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ms_wpset_entry *ms_wpset_registry; /* guarded by ms_wpset_registry_lock */

int ms_wpset_publish(struct ms_wpset *w, int memfd)
{
	struct stat st;
	if (fstat(memfd, &st))
		return -errno;
	struct ms_wpset_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	e->set = ms_wpset_ref(w);
	pthread_mutex_lock(&ms_wpset_registry_lock);
	e->next = ms_wpset_registry;
	ms_wpset_registry = e;
	pthread_mutex_unlock(&ms_wpset_registry_lock);
	return 0;
}

/* Unlinks the entry for memfd's file: the caller frees it; NULL when none. */
static struct ms_wpset_entry *ms_wpset_unlink(int memfd)
{
	struct stat st;
	if (fstat(memfd, &st))
		return NULL;
	struct ms_wpset_entry *found = NULL;
	pthread_mutex_lock(&ms_wpset_registry_lock);
	for (struct ms_wpset_entry **p = &ms_wpset_registry; *p; p = &(*p)->next)
		if ((*p)->dev == st.st_dev && (*p)->ino == st.st_ino) {
			found = *p;
			*p = found->next;
			break;
		}
	pthread_mutex_unlock(&ms_wpset_registry_lock);
	return found;
}

void ms_wpset_withdraw(int memfd)
{
	struct ms_wpset_entry *e = ms_wpset_unlink(memfd);
	if (e) {
		ms_wpset_unref(e->set);
		free(e);
	}
}

struct ms_wpset *ms_wpset_claim(int memfd)
{
	/* one claim per publish: a second session on the same memory must not share it */
	struct ms_wpset_entry *e = memfd >= 0 ? ms_wpset_unlink(memfd) : NULL;
	if (!e)
		return NULL;
	struct ms_wpset *w = e->set; /* the registry's reference goes to the caller */
	free(e);
	pthread_mutex_lock(&w->lock);
	w->claimed = true;
	pthread_cond_broadcast(&w->claimed_cond);
	pthread_mutex_unlock(&w->lock);
	return w;
}

int ms_wpset_wait_claimed(struct ms_wpset *w, int64_t timeout_ns)
{
	struct timespec ts = ms_clock_deadline(timeout_ns);
	int err = 0;
	pthread_mutex_lock(&w->lock);
	while (!w->claimed && err != ETIMEDOUT)
		err = pthread_cond_timedwait(&w->claimed_cond, &w->lock, &ts);
	bool claimed = w->claimed;
	pthread_mutex_unlock(&w->lock);
	return claimed ? 0 : -ETIMEDOUT;
}
