/*
 * layered.c - reads through one header snapshot; swaps and the durable header.
 *
 * Invariants:
 *  1. a read uses exactly one header snapshot per attempt (never segments of two);
 *  2. the snapshot and every source it uses stay referenced until the attempt ends;
 *  3. an attempt that meets MS_ECLOSED is discarded whole and re-planned (bounded).
 */
#include "build/layered.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MS_LAYERED_MAX_REPLANS 16

struct ms_layered {
	pthread_mutex_t lock;
	struct ms_header_ref *current; /* guarded by lock; never NULL */
	struct ms_future *durable;     /* guarded by lock; may be NULL */
	ms_layered_resolve_fn resolve; /* immutable */
	void *ctx;		       /* immutable */
	uint64_t size;		       /* immutable: every header of a file has one size */
	atomic_ullong replans;	       /* lock-free counter */
};

struct ms_header_ref *ms_header_ref_new(struct ms_header *header)
{
	struct ms_header_ref *ref = malloc(sizeof(*ref));
	if (!ref) {
		ms_header_free(header);
		return NULL;
	}
	ref->header = header;
	atomic_init(&ref->refs, 1);
	return ref;
}

struct ms_header_ref *ms_header_ref_ref(struct ms_header_ref *ref)
{
	atomic_fetch_add(&ref->refs, 1);
	return ref;
}

void ms_header_ref_unref(struct ms_header_ref *ref)
{
	if (!ref || atomic_fetch_sub(&ref->refs, 1) != 1)
		return;
	ms_header_free(ref->header);
	free(ref);
}

static void ms_header_ref_unref_value(void *value)
{
	ms_header_ref_unref(value);
}

struct ms_layered *ms_layered_new(struct ms_header *header, ms_layered_resolve_fn resolve,
				  void *ctx)
{
	struct ms_layered *file = calloc(1, sizeof(*file));
	if (!file) {
		ms_header_free(header);
		return NULL;
	}
	if (!(file->current = ms_header_ref_new(header))) {
		free(file);
		return NULL;
	}
	pthread_mutex_init(&file->lock, NULL);
	file->resolve = resolve;
	file->ctx = ctx;
	file->size = header->meta.size;
	atomic_init(&file->replans, 0);
	return file;
}

void ms_layered_free(struct ms_layered *file)
{
	if (!file)
		return;
	ms_header_ref_unref(file->current);
	if (file->durable)
		ms_future_unref(file->durable);
	pthread_mutex_destroy(&file->lock);
	free(file);
}

struct ms_header_ref *ms_layered_header(struct ms_layered *file)
{
	pthread_mutex_lock(&file->lock);
	struct ms_header_ref *ref = ms_header_ref_ref(file->current);
	pthread_mutex_unlock(&file->lock);
	return ref;
}

uint64_t ms_layered_size(struct ms_layered *file)
{
	return file->size;
}

uint64_t ms_layered_replans(struct ms_layered *file)
{
	return atomic_load(&file->replans);
}

bool ms_layered_is_cached(struct ms_layered *file, uint64_t off, size_t len)
{
	if (off > file->size || len > file->size - off)
		return false;
	struct ms_header_ref *snap = ms_layered_header(file);
	bool cached = true;
	while (len && cached) {
		ms_uuid build;
		uint64_t in_build, left;
		uint64_t page_off = off & ~(MS_PAGE_SIZE - 1), skip = off - page_off;
		if (ms_header_lookup(snap->header, page_off, &build, &in_build, &left)) {
			cached = false;
			break;
		}
		size_t n = left - skip < len ? (size_t)(left - skip) : len;
		if (!ms_uuid_is_nil(&build)) {
			struct ms_source *src = NULL;
			cached = file->resolve(file->ctx, &build, snap->header, &src) == 0 &&
				 ms_source_is_cached(src, in_build + skip, n);
			ms_source_unref(src);
		}
		off += n;
		len -= n;
	}
	ms_header_ref_unref(snap);
	return cached;
}

/* MS_LAYERED_PAGE_MEMFD or _PEER by the kind of source (cache/source.h names), else 0. */
static uint8_t ms_layered_source_where(const struct ms_source *src)
{
	const char *kind = ms_source_kind(src);
	if (!strncmp(kind, "memfd", 5))
		return MS_LAYERED_PAGE_MEMFD;
	if (!strncmp(kind, "peer", 4))
		return MS_LAYERED_PAGE_PEER;
	if (!strcmp(kind, "object"))
		return MS_LAYERED_PAGE_STORE;
	return 0;
}

/* The flags of one page that spans several mapping entries (a 2 MiB page over 4 KiB
 * mappings): NIL when every piece is nil, CACHED when every piece is nil or cached. */
static uint8_t ms_layered_page_flags_split(struct ms_layered *file, const struct ms_header *h,
					   uint64_t off, uint64_t len)
{
	bool all_nil = true;
	if (len > file->size - off)
		len = file->size - off;
	while (len) {
		ms_uuid build;
		uint64_t in_build, left;
		if (ms_header_lookup(h, off, &build, &in_build, &left))
			return 0;
		uint64_t n = left < len ? left : len;
		if (!ms_uuid_is_nil(&build)) {
			struct ms_source *src = NULL;
			bool cached = file->resolve(file->ctx, &build, h, &src) == 0 &&
				      ms_source_is_cached(src, in_build, (size_t)n);
			ms_source_unref(src);
			if (!cached)
				return 0;
			all_nil = false;
		}
		off += n;
		len -= n;
	}
	return all_nil ? MS_LAYERED_PAGE_NIL : MS_LAYERED_PAGE_CACHED;
}

void ms_layered_page_flags(struct ms_layered *file, uint64_t off, uint64_t page_size, size_t npages,
			   uint8_t *flags)
{
	struct ms_header_ref *snap = ms_layered_header(file);
	size_t i = 0;
	while (i < npages) {
		uint64_t at = off + i * page_size;
		ms_uuid build;
		uint64_t in_build, left;
		if (at >= file->size ||
		    ms_header_lookup(snap->header, at, &build, &in_build, &left)) {
			flags[i++] = 0;
			continue;
		}
		/* One mapping entry: its whole pages share the build and so the source. */
		size_t run = (size_t)(left / page_size);
		if (run == 0) {
			flags[i++] = ms_layered_page_flags_split(file, snap->header, at, page_size);
			continue;
		}
		if (run > npages - i)
			run = npages - i;
		if (ms_uuid_is_nil(&build)) {
			memset(flags + i, MS_LAYERED_PAGE_NIL, run);
			i += run;
			continue;
		}
		struct ms_source *src = NULL;
		bool resolved = file->resolve(file->ctx, &build, snap->header, &src) == 0;
		bool all = resolved && ms_source_is_cached(src, in_build, run * page_size);
		uint8_t where = resolved ? ms_layered_source_where(src) : 0;
		for (size_t k = 0; k < run; k++)
			flags[i + k] =
			    (all || (resolved &&
				     ms_source_is_cached(src, in_build + k * page_size, page_size))
				 ? MS_LAYERED_PAGE_CACHED
				 : 0) |
			    where;
		ms_source_unref(src);
		i += run;
	}
	ms_header_ref_unref(snap);
}

int ms_layered_slice(struct ms_layered *file, uint64_t off, size_t len, const void **ptr,
		     struct ms_source **hold)
{
	if (off > file->size || len > file->size - off)
		return -ERANGE;
	struct ms_header_ref *snap = ms_layered_header(file);
	ms_uuid build;
	uint64_t in_build, left, page_off = off & ~(MS_PAGE_SIZE - 1), skip = off - page_off;
	int err = ms_header_lookup(snap->header, page_off, &build, &in_build, &left);
	if (!err && (left - skip < len || ms_uuid_is_nil(&build)))
		err = -ENOTSUP; /* more than one run, or zeros: read */
	struct ms_source *src = NULL;
	if (!err)
		err = file->resolve(file->ctx, &build, snap->header, &src);
	ms_header_ref_unref(snap);
	struct ms_source *view = NULL;
	if (!err && ms_source_is_cached(src, in_build + skip, len))
		err = ms_source_borrow(src, in_build + skip, len, ptr, &view);
	else if (!err)
		err = -ENOTSUP; /* a slice never fetches */
	ms_source_unref(src);
	if (err)
		return err;
	*hold = view; /* src itself, or what keeps a memfd's view mapped */
	return 0;
}

/* One attempt against one snapshot. MS_ECLOSED means: re-plan. */
static int ms_layered_read_once(struct ms_layered *file, const struct ms_header *h, uint8_t *dst,
				uint64_t off, size_t len)
{
	while (len) {
		uint64_t page_off = off & ~(MS_PAGE_SIZE - 1);
		ms_uuid build;
		uint64_t in_build, left;
		int err = ms_header_lookup(h, page_off, &build, &in_build, &left);
		if (err)
			return err;
		uint64_t skip = off - page_off;
		size_t n = left - skip < len ? (size_t)(left - skip) : len;
		if (ms_uuid_is_nil(&build)) {
			memset(dst, 0, n);
		} else {
			struct ms_source *src = NULL;
			if ((err = file->resolve(file->ctx, &build, h, &src)))
				return err;
			err = ms_source_read(src, dst, in_build + skip, n);
			ms_source_unref(src);
			if (err)
				return err;
		}
		dst += n;
		off += n;
		len -= n;
	}
	return 0;
}

int ms_layered_read(struct ms_layered *file, void *dst, uint64_t off, size_t len)
{
	if (off > file->size || len > file->size - off)
		return -ERANGE;
	for (int attempt = 0;; attempt++) {
		struct ms_header_ref *snap = ms_layered_header(file);
		int err = ms_layered_read_once(file, snap->header, dst, off, len);
		ms_header_ref_unref(snap);
		if (err != MS_ECLOSED)
			return err;
		atomic_fetch_add(&file->replans, 1);
		if (attempt + 1 == MS_LAYERED_MAX_REPLANS) {
			ms_warn("build", "read at %llu: sources kept closing, %d re-plans",
				(unsigned long long)off, MS_LAYERED_MAX_REPLANS);
			return err;
		}
	}
}

static int ms_layered_install(struct ms_layered *file, const struct ms_header_ref *expected,
			      struct ms_header *header)
{
	if (header->meta.size != file->size)
		return -EINVAL; /* a file never changes size */
	struct ms_header_ref *next = malloc(sizeof(*next));
	if (!next) {
		ms_header_free(header);
		return -ENOMEM;
	}
	pthread_mutex_lock(&file->lock);
	if (expected && file->current != expected) {
		pthread_mutex_unlock(&file->lock);
		free(next);
		return -EAGAIN;
	}
	next->header = header;
	atomic_init(&next->refs, 1);
	struct ms_header_ref *old = file->current;
	file->current = next;
	pthread_mutex_unlock(&file->lock);
	ms_header_ref_unref(old);
	return 0;
}

int ms_layered_swap(struct ms_layered *file, struct ms_header *header)
{
	return ms_layered_install(file, NULL, header);
}

int ms_layered_swap_if_current(struct ms_layered *file, const struct ms_header_ref *expected,
			       struct ms_header *header)
{
	if (!expected)
		return -EINVAL;
	return ms_layered_install(file, expected, header);
}

void ms_layered_set_durable_future(struct ms_layered *file, struct ms_future *future)
{
	ms_future_ref(future);
	pthread_mutex_lock(&file->lock);
	struct ms_future *old = file->durable;
	file->durable = future;
	pthread_mutex_unlock(&file->lock);
	if (old)
		ms_future_unref(old);
}

/* The live header if complete (with a reference), else the future (with a reference). */
static struct ms_header_ref *ms_layered_durable_state(struct ms_layered *file,
						      struct ms_future **future)
{
	struct ms_header_ref *live = NULL;
	*future = NULL;
	pthread_mutex_lock(&file->lock);
	if (!file->current->header->incomplete)
		live = ms_header_ref_ref(file->current);
	else if (file->durable)
		*future = ms_future_ref(file->durable);
	pthread_mutex_unlock(&file->lock);
	return live;
}

int ms_layered_durable_header(struct ms_layered *file, int64_t timeout_ns,
			      struct ms_header_ref **out)
{
	struct ms_future *future;
	struct ms_header_ref *live = ms_layered_durable_state(file, &future);
	if (live) {
		*out = live;
		return 0;
	}
	if (!future)
		return -ENOENT;
	void *value = NULL;
	int err = timeout_ns < 0 ? ms_future_wait(future, &value)
				 : ms_future_wait_timeout(future, timeout_ns, &value);
	if (!err)
		*out = ms_header_ref_ref(value);
	ms_future_unref(future);
	return err;
}

struct ms_header_ref *ms_layered_durable_header_now(struct ms_layered *file)
{
	struct ms_future *future;
	struct ms_header_ref *live = ms_layered_durable_state(file, &future);
	if (live || !future)
		return live;
	void *value = NULL;
	int err = 0;
	struct ms_header_ref *ref = NULL;
	if (ms_future_peek(future, &value, &err) && !err && value)
		ref = ms_header_ref_ref(value);
	ms_future_unref(future);
	return ref;
}

void ms_header_ref_free_value(void *value)
{
	ms_header_ref_unref_value(value);
}
