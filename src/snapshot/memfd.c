/*
 * memfd.c - the captured guest memory and its identity and packed sources.
 *
 * Invariants:
 *  1. map is non-NULL while !released, and after the release while a borrowed
 *     view pins it (pins > 0); map, fd and released change only under the
 *     exclusive lock, once; pins grow only under the shared lock, while !released;
 *  2. every copy out of map happens under the shared lock, or out of a pinned
 *     view, with faultsafe copies.
 */
#include "snapshot/memfd.h"
#include "build/layered.h"
#include "util/err.h"
#include "util/faultsafe.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct ms_memfd {
	pthread_rwlock_t lock;
	uint8_t *map;	  /* guarded by lock */
	int fd;		  /* guarded by lock; -1 once released */
	bool released;	  /* guarded by lock */
	atomic_uint pins; /* borrowed views: the last unpin after the release unmaps */
	uint64_t size;	  /* immutable */
	atomic_uint refs;
};

struct ms_memfd *ms_memfd_new(int fd, uint64_t size, int *err)
{
	struct ms_memfd *m = calloc(1, sizeof(*m));
	if (!m || size == 0 || size % MS_PAGE_SIZE) {
		*err = m ? -EINVAL : -ENOMEM;
		goto fail;
	}
	m->map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (m->map == MAP_FAILED) {
		*err = -errno;
		goto fail;
	}
	pthread_rwlock_init(&m->lock, NULL);
	m->fd = fd;
	m->size = size;
	atomic_init(&m->refs, 1);
	*err = 0;
	return m;
fail:
	free(m);
	close(fd);
	return NULL;
}

struct ms_memfd *ms_memfd_ref(struct ms_memfd *m)
{
	atomic_fetch_add(&m->refs, 1);
	return m;
}

void ms_memfd_release(struct ms_memfd *m)
{
	pthread_rwlock_wrlock(&m->lock);
	if (!m->released) {
		if (atomic_load(&m->pins) == 0) { /* else the last unpin unmaps */
			munmap(m->map, m->size);
			m->map = NULL;
		}
		close(m->fd);
		m->fd = -1;
		m->released = true;
	}
	pthread_rwlock_unlock(&m->lock);
}

int ms_memfd_pin(struct ms_memfd *m, uint64_t off, size_t len, const void **ptr)
{
	if (off > m->size || len > m->size - off)
		return -ERANGE;
	pthread_rwlock_rdlock(&m->lock);
	int err = m->released ? MS_ECLOSED : 0;
	if (!err) {
		atomic_fetch_add(&m->pins, 1);
		*ptr = m->map + off;
	}
	pthread_rwlock_unlock(&m->lock);
	return err;
}

void ms_memfd_unpin(struct ms_memfd *m)
{
	if (atomic_fetch_sub(&m->pins, 1) != 1)
		return;
	pthread_rwlock_wrlock(&m->lock);
	if (m->released && m->map && atomic_load(&m->pins) == 0) {
		munmap(m->map, m->size);
		m->map = NULL;
	}
	pthread_rwlock_unlock(&m->lock);
}

void ms_memfd_unref(struct ms_memfd *m)
{
	if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
		return;
	ms_memfd_release(m);
	pthread_rwlock_destroy(&m->lock);
	free(m);
}

uint64_t ms_memfd_size(const struct ms_memfd *m)
{
	return m->size;
}

bool ms_memfd_is_released(struct ms_memfd *m)
{
	pthread_rwlock_rdlock(&m->lock);
	bool released = m->released;
	pthread_rwlock_unlock(&m->lock);
	return released;
}

int ms_memfd_with_mapping(struct ms_memfd *m, int (*fn)(void *ctx, const uint8_t *mapping),
			  void *ctx)
{
	pthread_rwlock_rdlock(&m->lock);
	int err = m->released ? MS_ECLOSED : fn(ctx, m->map);
	pthread_rwlock_unlock(&m->lock);
	return err;
}

/* ---- sources ---- */

struct ms_memfd_source {
	struct ms_source base;
	struct ms_memfd *memfd;		       /* one reference */
	_Atomic(struct ms_layered *) fallback; /* identity only: served after the release */
	struct ms_mapping *runs;	       /* packed: device runs with packed storage offsets */
	size_t run_count;
	_Atomic uint64_t bytes_served; /* read from the memfd itself (not the fallback) */
};

struct ms_memfd_copy {
	uint8_t *dst;
	uint64_t off;
	size_t len;
};

static int ms_memfd_copy_fn(void *ctx, const uint8_t *mapping)
{
	struct ms_memfd_copy *c = ctx;
	return ms_faultsafe_copy(c->dst, mapping + c->off, c->len);
}

/* Set while a fallback read runs on this thread: a fallback that still plans on the
 * provisional header must not recurse into it. */
static _Thread_local bool ms_memfd_in_fallback;

static int ms_memfd_identity_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	struct ms_memfd_source *s = (struct ms_memfd_source *)src;
	struct ms_memfd_copy c = {dst, off, len};
	int err = ms_memfd_with_mapping(s->memfd, ms_memfd_copy_fn, &c);
	if (!err)
		atomic_fetch_add(&s->bytes_served, len);
	struct ms_layered *fallback = atomic_load(&s->fallback);
	if (err != MS_ECLOSED || !fallback || ms_memfd_in_fallback)
		return err;
	ms_memfd_in_fallback = true;
	err = ms_layered_read(fallback, dst, off, len);
	ms_memfd_in_fallback = false;
	return err;
}

uint64_t ms_memfd_source_bytes_served(struct ms_source *src)
{
	return atomic_load(&((struct ms_memfd_source *)src)->bytes_served);
}

void ms_memfd_identity_set_fallback(struct ms_source *identity, struct ms_layered *fallback)
{
	atomic_store(&((struct ms_memfd_source *)identity)->fallback, fallback);
}

static size_t ms_memfd_packed_run(const struct ms_memfd_source *s, uint64_t off);

/* Storage offset -> device offset through the packed index, run by run. */
static int ms_memfd_packed_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	struct ms_memfd_source *s = (struct ms_memfd_source *)src;
	size_t i = ms_memfd_packed_run(s, off);
	if (i >= s->run_count)
		return -ERANGE;
	uint8_t *out = dst;
	while (len) {
		if (i >= s->run_count)
			return -ERANGE;
		const struct ms_mapping *r = &s->runs[i];
		uint64_t in_run = off - r->storage_offset;
		size_t n = r->length - in_run < len ? (size_t)(r->length - in_run) : len;
		struct ms_memfd_copy c = {out, r->offset + in_run, n};
		int err = ms_memfd_with_mapping(s->memfd, ms_memfd_copy_fn, &c);
		if (err)
			return err;
		atomic_fetch_add(&s->bytes_served, n);
		out += n;
		off += n;
		len -= n;
		i++;
	}
	return 0;
}

/*
 * What a borrowed view holds (the *hold of ms_source_borrow): a pin of the
 * mapping and a memfd reference; its last unref unpins. It reads nothing itself.
 */
struct ms_memfd_view {
	struct ms_source base;
	struct ms_memfd *memfd; /* one reference, one pin */
};

static int ms_memfd_view_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	(void)src;
	(void)dst;
	(void)off;
	(void)len;
	return -ENOTSUP; /* a hold, not a source to read */
}

static bool ms_memfd_view_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	(void)src;
	(void)off;
	(void)len;
	return false;
}

static uint64_t ms_memfd_disk_bytes(struct ms_source *src);

static void ms_memfd_view_free(struct ms_source *src)
{
	struct ms_memfd_view *v = (struct ms_memfd_view *)src;
	ms_memfd_unpin(v->memfd);
	ms_memfd_unref(v->memfd);
	free(v);
}

static const struct ms_source_ops ms_memfd_view_ops = {
    .name = "memfd-view",
    .read = ms_memfd_view_read,
    .is_cached = ms_memfd_view_is_cached,
    .disk_bytes = ms_memfd_disk_bytes,
    .free = ms_memfd_view_free,
};

/* Pins [dev_off, dev_off + len) of s's memfd into a view hold. */
static int ms_memfd_borrow_at(struct ms_memfd_source *s, uint64_t dev_off, size_t len,
			      const void **ptr, struct ms_source **hold)
{
	struct ms_memfd_view *v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	int err = ms_memfd_pin(s->memfd, dev_off, len, ptr);
	if (err) {
		free(v);
		return err;
	}
	ms_source_init(&v->base, &ms_memfd_view_ops, len);
	v->memfd = ms_memfd_ref(s->memfd);
	atomic_fetch_add(&s->bytes_served, len);
	*hold = &v->base;
	return 0;
}

/* Identity offsets: the view is the memory itself (MS_ECLOSED once released). */
static int ms_memfd_identity_borrow(struct ms_source *src, uint64_t off, size_t len,
				    const void **ptr, struct ms_source **hold)
{
	return ms_memfd_borrow_at((struct ms_memfd_source *)src, off, len, ptr, hold);
}

/* The run of the packed index holding storage offset off, or run_count (-ERANGE). */
static size_t ms_memfd_packed_run(const struct ms_memfd_source *s, uint64_t off)
{
	size_t lo = 0, hi = s->run_count;
	while (lo < hi) { /* the last run starting at or before off */
		size_t mid = lo + (hi - lo) / 2;
		if (s->runs[mid].storage_offset <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == 0 ? s->run_count : lo - 1;
}

/* Packed offsets: a view only within one survivor run (else -ENOTSUP: read). */
static int ms_memfd_packed_borrow(struct ms_source *src, uint64_t off, size_t len, const void **ptr,
				  struct ms_source **hold)
{
	struct ms_memfd_source *s = (struct ms_memfd_source *)src;
	size_t i = ms_memfd_packed_run(s, off);
	if (i >= s->run_count)
		return -ERANGE;
	const struct ms_mapping *r = &s->runs[i];
	uint64_t in_run = off - r->storage_offset;
	if (len > r->length - in_run)
		return -ENOTSUP; /* crosses into the next run: not contiguous in the memory */
	return ms_memfd_borrow_at(s, r->offset + in_run, len, ptr, hold);
}

static bool ms_memfd_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	(void)off;
	(void)len;
	return !ms_memfd_is_released(((struct ms_memfd_source *)src)->memfd);
}

static uint64_t ms_memfd_disk_bytes(struct ms_source *src)
{
	(void)src;
	return 0; /* memory-backed */
}

static void ms_memfd_source_free(struct ms_source *src)
{
	struct ms_memfd_source *s = (struct ms_memfd_source *)src;
	ms_memfd_unref(s->memfd);
	free(s->runs);
	free(s);
}

static const struct ms_source_ops ms_memfd_identity_ops = {
    .name = "memfd-identity",
    .read = ms_memfd_identity_read,
    .borrow = ms_memfd_identity_borrow,
    .is_cached = ms_memfd_is_cached,
    .disk_bytes = ms_memfd_disk_bytes,
    .free = ms_memfd_source_free,
};

static const struct ms_source_ops ms_memfd_packed_ops = {
    .name = "memfd-packed",
    .read = ms_memfd_packed_read,
    .borrow = ms_memfd_packed_borrow,
    .is_cached = ms_memfd_is_cached,
    .disk_bytes = ms_memfd_disk_bytes,
    .free = ms_memfd_source_free,
};

struct ms_source *ms_memfd_identity_source_new(struct ms_memfd *m)
{
	struct ms_memfd_source *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	ms_source_init(&s->base, &ms_memfd_identity_ops, m->size);
	s->memfd = ms_memfd_ref(m);
	return &s->base;
}

struct ms_source *ms_memfd_packed_source_new(struct ms_memfd *m, const struct ms_pageset *survivors)
{
	struct ms_memfd_source *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	struct ms_mappings runs;
	ms_uuid any = MS_UUID_NIL;
	any.bytes[15] = 1; /* the index only needs offsets */
	if (ms_mappings_from_pages(&any, survivors, MS_PAGE_SIZE, false, &runs)) {
		free(s);
		return NULL;
	}
	uint64_t size = 0;
	for (size_t i = 0; i < runs.count; i++)
		size += runs.entries[i].length;
	ms_source_init(&s->base, &ms_memfd_packed_ops, size);
	s->memfd = ms_memfd_ref(m);
	s->runs = runs.entries;
	s->run_count = runs.count;
	return &s->base;
}
