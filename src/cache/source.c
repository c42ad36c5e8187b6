/*
 * source.c - the source refcount/closed wrapper, and two simple sources:
 * zeros, and a local diff file.
 *
 * Invariants:
 *  1. refs > 0 while any holder exists; ops->free runs exactly once, at 0.
 *  2. closed goes false -> true once; ops->close runs exactly once, by the
 *     thread that flipped it.
 *  3. Bounds and the closed flag are checked here, so implementations see only
 *     in-range reads of open sources (a close racing a read is allowed: the
 *     bytes stay mapped until free).
 */
#include "cache/source.h"
#include "cache/cachefile.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void ms_source_init(struct ms_source *src, const struct ms_source_ops *ops, uint64_t size)
{
	src->ops = ops;
	src->size = size;
	atomic_init(&src->refs, 1);
	atomic_init(&src->closed, false);
}

struct ms_source *ms_source_ref(struct ms_source *src)
{
	atomic_fetch_add_explicit(&src->refs, 1, memory_order_relaxed);
	return src;
}

void ms_source_unref(struct ms_source *src)
{
	if (!src)
		return;
	if (atomic_fetch_sub_explicit(&src->refs, 1, memory_order_acq_rel) != 1)
		return;
	src->ops->free(src);
}

static bool ms_source_range_valid(const struct ms_source *src, uint64_t off, size_t len)
{
	return off <= src->size && len <= src->size - off;
}

int ms_source_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	if (atomic_load(&src->closed))
		return MS_ECLOSED;
	if (!ms_source_range_valid(src, off, len))
		return -ERANGE;
	if (len == 0)
		return 0;
	if (!dst)
		return -EINVAL;
	return src->ops->read(src, dst, off, len);
}

/* What slice and borrow check before they hand out a view: open, in range, a ptr to fill. */
static int ms_source_view_check(struct ms_source *src, uint64_t off, size_t len, const void **ptr)
{
	if (atomic_load(&src->closed))
		return MS_ECLOSED;
	if (!ms_source_range_valid(src, off, len))
		return -ERANGE;
	return ptr ? 0 : -EINVAL;
}

int ms_source_slice(struct ms_source *src, uint64_t off, size_t len, const void **ptr)
{
	int err = ms_source_view_check(src, off, len, ptr);
	if (err)
		return err;
	if (!src->ops->slice)
		return -ENOTSUP;
	return src->ops->slice(src, off, len, ptr);
}

int ms_source_borrow(struct ms_source *src, uint64_t off, size_t len, const void **ptr,
		     struct ms_source **hold)
{
	*hold = NULL;
	int err = ms_source_view_check(src, off, len, ptr);
	if (err)
		return err;
	if (src->ops->borrow)
		return src->ops->borrow(src, off, len, ptr, hold);
	err = ms_source_slice(src, off, len, ptr);
	if (!err)
		*hold = ms_source_ref(src);
	return err;
}

uint64_t ms_source_size(const struct ms_source *src)
{
	return src->size;
}

bool ms_source_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	if (atomic_load(&src->closed) || !ms_source_range_valid(src, off, len))
		return false;
	return src->ops->is_cached(src, off, len);
}

uint64_t ms_source_disk_bytes(struct ms_source *src)
{
	return src->ops->disk_bytes ? src->ops->disk_bytes(src) : 0;
}

void ms_source_close(struct ms_source *src)
{
	if (atomic_exchange(&src->closed, true))
		return;
	if (src->ops->close)
		src->ops->close(src);
}

bool ms_source_is_closed(const struct ms_source *src)
{
	return atomic_load(&((struct ms_source *)src)->closed);
}

const char *ms_source_kind(const struct ms_source *src)
{
	return src->ops->name;
}

/* ---- zero source ---- */

/* One shared read-only zero mapping serves zero-copy slices of up to 2 MiB. */
#define MS_ZERO_SLICE_MAX (2u << 20)
static const void *ms_zero_map;
static pthread_once_t ms_zero_once = PTHREAD_ONCE_INIT;

static void ms_zero_map_init(void)
{
	void *map = mmap(NULL, MS_ZERO_SLICE_MAX, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ms_zero_map = map == MAP_FAILED ? NULL : map;
}

static int ms_zero_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	memset(dst, 0, len);
	return 0;
}

static int ms_zero_slice(struct ms_source *src, uint64_t off, size_t len, const void **ptr)
{
	if (len > MS_ZERO_SLICE_MAX)
		return -ENOTSUP;
	pthread_once(&ms_zero_once, ms_zero_map_init);
	if (!ms_zero_map)
		return -ENOTSUP;
	*ptr = ms_zero_map;
	return 0;
}

static bool ms_zero_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	return true;
}

static void ms_zero_free(struct ms_source *src)
{
	free(src);
}

static const struct ms_source_ops ms_zero_ops = {
    .name = "zero",
    .read = ms_zero_read,
    .slice = ms_zero_slice,
    .is_cached = ms_zero_is_cached,
    .free = ms_zero_free,
};

struct ms_source *ms_source_zero_new(uint64_t size)
{
	struct ms_source *src = calloc(1, sizeof(*src));
	if (!src)
		return NULL;
	ms_source_init(src, &ms_zero_ops, size);
	return src;
}

/* ---- local diff file ---- */

struct ms_file_source {
	struct ms_source base;
	struct ms_cachefile *file; /* immutable; fully present, read-only */
	bool delete_on_close;	   /* immutable */
};

static int ms_file_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	struct ms_file_source *fs = (struct ms_file_source *)src;
	return ms_cachefile_read(fs->file, dst, off, len);
}

static int ms_file_slice(struct ms_source *src, uint64_t off, size_t len, const void **ptr)
{
	struct ms_file_source *fs = (struct ms_file_source *)src;
	return ms_cachefile_slice(fs->file, off, len, ptr);
}

static bool ms_file_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	return true;
}

static uint64_t ms_file_disk_bytes(struct ms_source *src)
{
	struct ms_file_source *fs = (struct ms_file_source *)src;
	return ms_cachefile_disk_bytes(fs->file);
}

static void ms_file_close(struct ms_source *src)
{
	struct ms_file_source *fs = (struct ms_file_source *)src;
	if (fs->delete_on_close)
		ms_cachefile_unlink(fs->file);
}

static void ms_file_free(struct ms_source *src)
{
	struct ms_file_source *fs = (struct ms_file_source *)src;
	ms_cachefile_free(fs->file);
	free(fs);
}

static const struct ms_source_ops ms_file_ops = {
    .name = "file",
    .read = ms_file_read,
    .slice = ms_file_slice,
    .is_cached = ms_file_is_cached,
    .disk_bytes = ms_file_disk_bytes,
    .close = ms_file_close,
    .free = ms_file_free,
};

struct ms_source *ms_source_file_open(const char *path, bool delete_on_close, int *err)
{
	struct ms_file_source *fs = calloc(1, sizeof(*fs));
	if (!fs) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = ms_cachefile_open(path, 4096, &fs->file);
	if (*err) {
		free(fs);
		return NULL;
	}
	fs->delete_on_close = delete_on_close;
	ms_source_init(&fs->base, &ms_file_ops, ms_cachefile_size(fs->file));
	return &fs->base;
}
