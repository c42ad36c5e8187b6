/*
 * cachefile.c - sparse cache file, shared read-only mapping, atomic presence bits.
 *
 * Design notes: bytes enter through pwrite(2) and leave through the mapping. The
 * page cache keeps the two coherent, pwrite cannot raise SIGBUS, and copies out of
 * the mapping are fault-safe, so neither a bad disk nor a truncated file can crash
 * the process. The mapping is PROT_READ: nothing ever stores through it.
 *
 * Invariants (see cachefile.h): a presence bit is set only after its block's bytes
 * were written and is never cleared; the mapping lives until free.
 */
#include "cache/cachefile.h"
#include "util/err.h"
#include "util/faultsafe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct ms_cachefile {
	char *path;		     /* immutable */
	int fd;			     /* immutable */
	bool writable;		     /* immutable */
	uint64_t size;		     /* immutable */
	uint32_t block_size;	     /* immutable, power of two */
	uint64_t blocks;	     /* immutable: ceil(size / block_size) */
	const unsigned char *map;    /* immutable; NULL when size == 0 */
	atomic_uint_least64_t *bits; /* lock-free: presence, one bit per block */
	atomic_bool remove_on_free;  /* lock-free */
	atomic_bool unlinked;	     /* lock-free; false -> true once */
};

static bool ms_block_size_valid(uint32_t block_size)
{
	return block_size >= 512 && (block_size & (block_size - 1)) == 0;
}

static int ms_cachefile_setup(const char *path, int fd, bool writable, uint64_t size,
			      uint32_t block_size, bool all_present, struct ms_cachefile **out)
{
	int err = -ENOMEM;
	struct ms_cachefile *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	/* calloc'd: one label frees whichever of path and bits were made */
	c->path = strdup(path);
	c->blocks = (size + block_size - 1) / block_size;
	size_t words = (size_t)((c->blocks + 63) / 64);
	c->bits = calloc(words ? words : 1, sizeof(*c->bits));
	if (!c->path || !c->bits)
		goto fail;
	if (size > 0) {
		void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			err = -errno;
			goto fail;
		}
		c->map = map;
	}
	c->fd = fd;
	c->writable = writable;
	c->size = size;
	c->block_size = block_size;
	atomic_init(&c->remove_on_free, false);
	atomic_init(&c->unlinked, false);
	for (size_t i = 0; i < words; i++)
		atomic_init(&c->bits[i], 0);
	if (all_present)
		ms_cachefile_mark_cached(c, 0, size);
	*out = c;
	return 0;

fail:
	free(c->bits);
	free(c->path);
	free(c);
	return err;
}

int ms_cachefile_create(const char *path, uint64_t size, uint32_t block_size,
			struct ms_cachefile **out)
{
	if (!path || !out || !ms_block_size_valid(block_size) || size > (uint64_t)INT64_MAX)
		return -EINVAL;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int err;
	if (ftruncate(fd, (off_t)size) != 0) {
		err = -errno;
		goto fail_unlink;
	}
	err = ms_cachefile_setup(path, fd, true, size, block_size, false, out);
	if (err)
		goto fail_unlink;
	return 0;

fail_unlink:
	unlink(path);
	close(fd);
	return err;
}

int ms_cachefile_open(const char *path, uint32_t block_size, struct ms_cachefile **out)
{
	if (!path || !out || !ms_block_size_valid(block_size))
		return -EINVAL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int err;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		err = -errno;
		goto fail_close;
	}
	if (!S_ISREG(st.st_mode)) {
		err = -EINVAL;
		goto fail_close;
	}
	err = ms_cachefile_setup(path, fd, false, (uint64_t)st.st_size, block_size, true, out);
	if (err)
		goto fail_close;
	return 0;

fail_close:
	close(fd);
	return err;
}

void ms_cachefile_free(struct ms_cachefile *c)
{
	if (!c)
		return;
	if (c->map)
		munmap((void *)c->map, c->size);
	close(c->fd);
	if (atomic_load(&c->remove_on_free))
		ms_cachefile_unlink(c);
	free(c->bits);
	free(c->path);
	free(c);
}

void ms_cachefile_set_remove(struct ms_cachefile *c, bool remove_on_free)
{
	atomic_store(&c->remove_on_free, remove_on_free);
}

int ms_cachefile_unlink(struct ms_cachefile *c)
{
	if (atomic_exchange(&c->unlinked, true))
		return 0;
	if (unlink(c->path) != 0 && errno != ENOENT)
		return -errno;
	return 0;
}

uint64_t ms_cachefile_size(const struct ms_cachefile *c)
{
	return c->size;
}

uint32_t ms_cachefile_block_size(const struct ms_cachefile *c)
{
	return c->block_size;
}

const char *ms_cachefile_path(const struct ms_cachefile *c)
{
	return c->path;
}

static bool ms_range_valid(const struct ms_cachefile *c, uint64_t off, uint64_t len)
{
	return off <= c->size && len <= c->size - off;
}

bool ms_cachefile_is_cached(const struct ms_cachefile *c, uint64_t off, uint64_t len)
{
	if (!ms_range_valid(c, off, len))
		return false;
	if (len == 0)
		return true;
	uint64_t first = off / c->block_size;
	uint64_t last = (off + len - 1) / c->block_size;
	uint64_t block = first;
	while (block <= last) {
		uint64_t word = atomic_load_explicit(&c->bits[block / 64], memory_order_acquire);
		unsigned bit = (unsigned)(block % 64);
		uint64_t span = 64 - bit;
		if (span > last - block + 1)
			span = last - block + 1;
		uint64_t mask = (span == 64 ? ~0ULL : ((1ULL << span) - 1)) << bit;
		if ((word & mask) != mask)
			return false;
		block += span;
	}
	return true;
}

int ms_cachefile_mark_cached(struct ms_cachefile *c, uint64_t off, uint64_t len)
{
	if (!ms_range_valid(c, off, len) || off % c->block_size != 0 ||
	    ((off + len) % c->block_size != 0 && off + len != c->size))
		return -EINVAL;
	if (len == 0)
		return 0;
	uint64_t block = off / c->block_size;
	uint64_t end = (off + len + c->block_size - 1) / c->block_size;
	while (block < end) {
		unsigned bit = (unsigned)(block % 64);
		uint64_t span = 64 - bit;
		if (span > end - block)
			span = end - block;
		uint64_t mask = (span == 64 ? ~0ULL : ((1ULL << span) - 1)) << bit;
		atomic_fetch_or_explicit(&c->bits[block / 64], mask, memory_order_release);
		block += span;
	}
	return 0;
}

int ms_cachefile_read_unchecked(const struct ms_cachefile *c, void *dst, uint64_t off, size_t len)
{
	if (!ms_range_valid(c, off, len))
		return -ERANGE;
	if (len == 0)
		return 0;
	return ms_faultsafe_copy(dst, c->map + off, len);
}

int ms_cachefile_read(const struct ms_cachefile *c, void *dst, uint64_t off, size_t len)
{
	if (!ms_range_valid(c, off, len))
		return -ERANGE;
	if (!ms_cachefile_is_cached(c, off, len))
		return -ENODATA;
	return ms_cachefile_read_unchecked(c, dst, off, len);
}

int ms_cachefile_write(struct ms_cachefile *c, const void *src, uint64_t off, size_t len)
{
	if (!c->writable)
		return -EBADF;
	if (!ms_range_valid(c, off, len))
		return -ERANGE;
	const unsigned char *p = src;
	while (len > 0) {
		ssize_t n = pwrite(c->fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* no progress: the file shrank under us */
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int ms_cachefile_write_cached(struct ms_cachefile *c, const void *src, uint64_t off, size_t len)
{
	if (!ms_range_valid(c, off, len))
		return -ERANGE;
	if (off % c->block_size != 0 || ((off + len) % c->block_size != 0 && off + len != c->size))
		return -EINVAL;
	int err = ms_cachefile_write(c, src, off, len);
	if (err)
		return err;
	return ms_cachefile_mark_cached(c, off, len);
}

int ms_cachefile_slice(const struct ms_cachefile *c, uint64_t off, size_t len, const void **ptr)
{
	if (!ms_range_valid(c, off, len))
		return -ERANGE;
	if (!ms_cachefile_is_cached(c, off, len))
		return -ENODATA;
	*ptr = c->map ? c->map + off : (const void *)"";
	return 0;
}

uint64_t ms_cachefile_disk_bytes(const struct ms_cachefile *c)
{
	struct stat st;
	if (fstat(c->fd, &st) != 0)
		return 0;
	return (uint64_t)st.st_blocks * 512;
}
