/*
 * cachefile.h - a local sparse cache file: mmap(MAP_SHARED) + per-block presence bits.
 *
 * Holds the bytes of one build's data on this node, filled on demand by the chunker
 * (as in E2B's orchestrator). Writes go through pwrite(2) on the file descriptor, so a
 * bad disk shows up as an errno and never as a SIGBUS in the writer; reads copy out
 * of the shared mapping with ms_faultsafe_copy(), so a fault (bad sector, file
 * truncated under the mapping) becomes MS_EFAULT_IO (docs/design.md §5.10).
 *
 * Invariants:
 *  1. A block's bit goes 0 -> 1 only after every byte of the block was written,
 *     and never goes back (atomic fetch-or, release; readers load with acquire).
 *  2. Blocks are block_size bytes from offset 0; the last one may be shorter.
 *  3. The mapping lives until ms_cachefile_free(); pointers from
 *     ms_cachefile_slice() are valid until then.
 *  4. A file opened with ms_cachefile_open() is read-only and fully present.
 *
 * Thread-safety: all functions may be called concurrently, except free, which
 * must be the last call.
 */
#ifndef MS_CACHE_CACHEFILE_H
#define MS_CACHE_CACHEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ms_cachefile;

/*
 * Creates a new sparse file at path (O_EXCL: the path must not exist) of size bytes,
 * all blocks absent. block_size: a power of two >= 512. On error nothing is left on
 * disk. 0, -EINVAL, -ENOMEM or -errno.
 */
int ms_cachefile_create(const char *path, uint64_t size, uint32_t block_size,
			struct ms_cachefile **out);
/* Opens an existing file read-only, every block present (a local diff file). */
int ms_cachefile_open(const char *path, uint32_t block_size, struct ms_cachefile **out);
/* Unmaps and closes; unlinks the file when ms_cachefile_set_remove(c, true) was called. */
void ms_cachefile_free(struct ms_cachefile *c);
/* Delete the file at free (cache files) or keep it (local diff files). */
void ms_cachefile_set_remove(struct ms_cachefile *c, bool remove_on_free);
/* Unlinks the file now (the mapping stays readable until free). 0 or -errno. */
int ms_cachefile_unlink(struct ms_cachefile *c);

uint64_t ms_cachefile_size(const struct ms_cachefile *c);
uint32_t ms_cachefile_block_size(const struct ms_cachefile *c);
const char *ms_cachefile_path(const struct ms_cachefile *c);

/* Every block touching [off, off + len) is present; false outside the file. No I/O. */
bool ms_cachefile_is_cached(const struct ms_cachefile *c, uint64_t off, uint64_t len);
/* Marks every block of [off, off + len) present. off block-aligned; the end block-aligned
 * or the end of the file (a partly covered block would lie). 0 or -EINVAL. */
int ms_cachefile_mark_cached(struct ms_cachefile *c, uint64_t off, uint64_t len);

/* Copies [off, off + len) out if present: 0, -ENODATA (not present), -ERANGE, MS_EFAULT_IO. */
int ms_cachefile_read(const struct ms_cachefile *c, void *dst, uint64_t off, size_t len);
/* As ms_cachefile_read without the presence check: for a caller that knows the bytes
 * were written (a fetch session's watermark). */
int ms_cachefile_read_unchecked(const struct ms_cachefile *c, void *dst, uint64_t off, size_t len);
/* Writes bytes with pwrite (no presence change). -EBADF on a read-only file. */
int ms_cachefile_write(struct ms_cachefile *c, const void *src, uint64_t off, size_t len);
/* Writes a block-aligned range (as for mark_cached), then marks it present. */
int ms_cachefile_write_cached(struct ms_cachefile *c, const void *src, uint64_t off, size_t len);
/* Pointer to [off, off + len) in the mapping if every block is present; -ENODATA or
 * -ERANGE otherwise. Valid until free; read it fault-safely. */
int ms_cachefile_slice(const struct ms_cachefile *c, uint64_t off, size_t len, const void **ptr);
/* Real disk usage, st_blocks * 512; 0 when fstat fails. */
uint64_t ms_cachefile_disk_bytes(const struct ms_cachefile *c);

#endif
