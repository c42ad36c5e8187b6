/*
 * objsource.c - a store object mapped in place, its blocks checked on first touch
 * (objsource.h has the design).
 *
 * Invariants:
 *  1. A checked bit is set only after its block's bytes in the mapping matched the
 *     table, and is never cleared: the file is the store's immutable object.
 *  2. Nothing is served from a block whose bit is clear.
 *  3. The mapping lives until free (source.h invariant 1).
 */
#include "cache/objsource.h"
#include "storage/checksums.h"
#include "util/err.h"
#include "util/faultsafe.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct ms_objsource {
	struct ms_source base;
	char *key;			  /* immutable */
	int fd;				  /* immutable */
	const unsigned char *map;	  /* immutable; NULL for an empty file */
	uint64_t file_size;		  /* immutable: the file's bytes (may be short) */
	struct ms_sums *sums;		  /* immutable, one reference; NULL: unchecked */
	const struct ms_sums_object *obj; /* immutable, in sums */
	atomic_uint_least64_t *checked;	  /* lock-free: one bit per block (invariant 1) */
	atomic_uint_least64_t *counted;	  /* lock-free: one bit per block found bad */
	atomic_uint_least64_t stat_checked;
};

static const struct ms_source_ops ms_objsource_ops;

bool ms_source_is_object(const struct ms_source *src)
{
	return src && src->ops == &ms_objsource_ops;
}

uint64_t ms_source_object_checked(const struct ms_source *src)
{
	if (!ms_source_is_object(src))
		return 0;
	return atomic_load(&((struct ms_objsource *)src)->stat_checked);
}

static bool ms_obj_block_checked(const struct ms_objsource *o, uint32_t b)
{
	return atomic_load_explicit(&o->checked[b / 64], memory_order_acquire) >> (b % 64) & 1;
}

/* The blocks under [off, off + len) (len > 0): [*first, *last]. */
static void ms_obj_blocks(const struct ms_objsource *o, uint64_t off, uint64_t len, uint32_t *first,
			  uint32_t *last)
{
	*first = ms_sums_block_of(o->obj, off);
	*last = ms_sums_block_of(o->obj, off + len - 1);
}

struct ms_obj_check {
	const struct ms_sums_object *obj;
	uint32_t block;
	const void *bytes;
	size_t len;
};

/* Runs under ms_faultsafe_call: touches memory only. */
static int ms_obj_check_fn(void *ctx)
{
	struct ms_obj_check *c = ctx;
	return ms_sums_check(c->obj, c->block, c->bytes, c->len, NULL);
}

/*
 * Checks block b once (invariant 1): 0, MS_ECHECKSUM (counted by the caller), MS_EFAULT_IO.
 * copy, when not NULL, holds the block's bytes as a read just copied them out of the
 * mapping: those are checked (still hot in the cache) instead of the mapping's.
 */
static int ms_obj_check_block(struct ms_objsource *o, uint32_t b, const void *copy)
{
	if (ms_obj_block_checked(o, b))
		return 0;
	uint64_t start = o->obj->starts[b], end = o->obj->starts[b + 1];
	if (end > o->file_size) {
		ms_warn("cache",
			"%s: block %u at %llu ends past the object's %llu bytes (truncated)",
			o->key, b, (unsigned long long)start, (unsigned long long)o->file_size);
		return MS_ECHECKSUM;
	}
	int err;
	if (copy) {
		err = ms_sums_check(o->obj, b, copy, (size_t)(end - start), NULL);
	} else {
		struct ms_obj_check c = {o->obj, b, o->map + start, (size_t)(end - start)};
		err = ms_faultsafe_call(ms_obj_check_fn, &c);
	}
	if (err == MS_ECHECKSUM)
		ms_warn("cache", "%s: block %u at %llu does not match its checksum", o->key, b,
			(unsigned long long)start);
	else if (err)
		ms_warn("cache", "%s: block %u at %llu cannot be read: %s", o->key, b,
			(unsigned long long)start, ms_strerror(err));
	if (err)
		return err;
	if (!(atomic_fetch_or_explicit(&o->checked[b / 64], 1ull << (b % 64),
				       memory_order_acq_rel) >>
		  (b % 64) &
	      1))
		atomic_fetch_add(&o->stat_checked, 1);
	return 0;
}

/* Block b's check ended in err: a damaged block counts once, however often it is read (a
 * failed inline read is retried by a page-server worker). Returns err. */
static int ms_obj_count_bad(struct ms_objsource *o, uint32_t b, int err)
{
	if (err == MS_ECHECKSUM &&
	    !(atomic_fetch_or(&o->counted[b / 64], 1ull << (b % 64)) >> (b % 64) & 1))
		ms_integrity_count(ms_integrity_classify(o->obj->name));
	return err;
}

/* An unchecked object's read must lie inside the file: 0 or MS_ECORRUPT. */
static int ms_obj_check_bounds(const struct ms_objsource *o, uint64_t off, size_t len)
{
	if (off + len <= o->file_size)
		return 0;
	ms_warn("cache", "%s: object ends at %llu, a read wants [%llu, +%zu)", o->key,
		(unsigned long long)o->file_size, (unsigned long long)off, len);
	return MS_ECORRUPT;
}

/* Every block under [off, off + len) checked, or the read's error (counted once). */
static int ms_obj_check_range(struct ms_objsource *o, uint64_t off, size_t len)
{
	if (!o->obj)
		return ms_obj_check_bounds(o, off, len);
	uint32_t first, last;
	ms_obj_blocks(o, off, len, &first, &last);
	for (uint32_t b = first; b <= last; b++) {
		int err = ms_obj_count_bad(o, b, ms_obj_check_block(o, b, NULL));
		if (err)
			return err;
	}
	return 0;
}

/*
 * Block by block: a block the read covers whole and has not checked yet is copied out
 * first and its copy checked (one pass over the mapping instead of two); any other is
 * checked in the mapping, then copied. On an error dst's bytes are undefined.
 */
static int ms_obj_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	struct ms_objsource *o = (struct ms_objsource *)src;
	if (!o->obj || len == 0) {
		int err = o->obj ? 0 : ms_obj_check_bounds(o, off, len);
		return err ? err : ms_faultsafe_copy(dst, o->map + off, len);
	}
	uint32_t first, last;
	ms_obj_blocks(o, off, len, &first, &last);
	for (uint32_t b = first; b <= last; b++) {
		uint64_t start = o->obj->starts[b], end = o->obj->starts[b + 1];
		uint64_t lo = start > off ? start : off, hi = end < off + len ? end : off + len;
		unsigned char *out = (unsigned char *)dst + (lo - off);
		bool whole = lo == start && hi == end && end <= o->file_size;
		int err;
		if (whole && !ms_obj_block_checked(o, b)) {
			err = ms_faultsafe_copy(out, o->map + lo, (size_t)(hi - lo));
			if (!err)
				err = ms_obj_check_block(o, b, out);
		} else {
			err = ms_obj_check_block(o, b, NULL);
			if (!err)
				err = ms_faultsafe_copy(out, o->map + lo, (size_t)(hi - lo));
		}
		if (ms_obj_count_bad(o, b, err))
			return err;
	}
	return 0;
}

static int ms_obj_slice(struct ms_source *src, uint64_t off, size_t len, const void **ptr)
{
	struct ms_objsource *o = (struct ms_objsource *)src;
	if (len == 0) {
		*ptr = o->map ? (const void *)o->map : (const void *)"";
		return 0;
	}
	int err = ms_obj_check_range(o, off, len);
	if (!err)
		*ptr = o->map + off;
	return err;
}

/* In the local file: a read needs no fetch, only the check of what it has not checked. */
static bool ms_obj_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	struct ms_objsource *o = (struct ms_objsource *)src;
	return off + len <= o->file_size;
}

static void ms_obj_free(struct ms_source *src)
{
	struct ms_objsource *o = (struct ms_objsource *)src;
	if (o->map)
		munmap((void *)o->map, (size_t)o->file_size);
	close(o->fd);
	ms_sums_unref(o->sums);
	free(o->checked);
	free(o->counted);
	free(o->key);
	free(o);
}

static const struct ms_source_ops ms_objsource_ops = {
    .name = "object",
    .read = ms_obj_read,
    .slice = ms_obj_slice,
    .is_cached = ms_obj_is_cached,
    .free = ms_obj_free,
};

struct ms_source *ms_source_object_open(const char *path, const char *key, uint64_t size,
					struct ms_sums *sums, int *err)
{
	*err = -EINVAL;
	if (!path || !key)
		return NULL;
	const char *slash = strrchr(key, '/');
	const struct ms_sums_object *obj =
	    sums ? ms_sums_find(sums, slash ? slash + 1 : key) : NULL;
	if (obj && obj->size != size) {
		ms_warn("cache", "%s: its checksum table says %llu bytes, its header %llu", key,
			(unsigned long long)obj->size, (unsigned long long)size);
		*err = MS_ECORRUPT;
		return NULL;
	}
	*err = -ENOMEM;
	struct ms_objsource *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->fd = -1;
	o->key = strdup(key);
	size_t words = obj ? ((size_t)obj->count + 63) / 64 : 0;
	o->checked = calloc(words ? words : 1, sizeof(*o->checked));
	o->counted = calloc(words ? words : 1, sizeof(*o->counted));
	if (!o->key || !o->checked || !o->counted)
		goto fail;
	o->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (o->fd < 0 || fstat(o->fd, &st) != 0) {
		*err = errno == ENOENT ? MS_ENOTFOUND : -errno;
		goto fail;
	}
	o->file_size = (uint64_t)st.st_size;
	if (o->file_size > 0) {
		void *map = mmap(NULL, (size_t)o->file_size, PROT_READ, MAP_SHARED, o->fd, 0);
		if (map == MAP_FAILED) {
			*err = -errno;
			goto fail;
		}
		o->map = map;
	}
	if (obj) {
		o->sums = ms_sums_ref(sums);
		o->obj = obj;
	}
	for (size_t i = 0; i < words; i++) {
		atomic_init(&o->checked[i], 0);
		atomic_init(&o->counted[i], 0);
	}
	atomic_init(&o->stat_checked, 0);
	ms_source_init(&o->base, &ms_objsource_ops, size);
	*err = 0;
	return &o->base;

fail:
	if (o->fd >= 0)
		close(o->fd);
	free(o->checked);
	free(o->counted);
	free(o->key);
	free(o);
	return NULL;
}
