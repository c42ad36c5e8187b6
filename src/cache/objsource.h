/*
 * objsource.h - a build's object read in place: the store's own file, no cache copy.
 *
 * An object of the file store (ms_store_local) is already a local file: fetching
 * it into a chunker's cache file (cache/chunker.h) would write every byte a second
 * time to the same disk and copy it twice more on the way to the guest. This
 * source maps the object read-only and serves reads and slices from the mapping.
 *
 * Checking: with the build's checksum table (storage/checksums.h) every block is
 * checked against its XXH3 the first time a read or slice touches it, and only a
 * checked block is served (a read that covers a whole unchecked block copies it out
 * first and checks the copy while it is still in the CPU's cache: one pass over the
 * mapping instead of two). Every byte the file holds is present (is_cached: no
 * fetch is needed, so the page server serves it inline; the check of a 64 KiB
 * block costs a few microseconds, and going through a worker instead made a cold
 * touch 0.66-0.79x as fast as through the chunker, bench pageserver.cold_fs_mib_s).
 * A block that does not match, or that the file is too short to hold (a truncated
 * object), fails the read with MS_ECHECKSUM, is logged with the object and the
 * block, and counted once (ms_integrity_count) however often it is read; the next
 * read checks it again. Without a table (an older build, or a key no table lists)
 * nothing is checked, as through the checking store wrapper, and a read past the
 * file's end is MS_ECORRUPT.
 *
 * Mapping accesses are fault-safe (util/faultsafe.h): a disk error or a file cut
 * short under the mapping is an error, not a crash. disk_bytes is 0: the bytes are
 * the store's, not the node's cache. Thread-safe; checked bits are atomic.
 */
#ifndef MS_CACHE_OBJSOURCE_H
#define MS_CACHE_OBJSOURCE_H

#include "cache/source.h"

struct ms_sums;

/*
 * A source of size bytes over the file at path, the store object key (for the
 * log, and its name in sums). sums: NULL, or the table that lists key's name
 * (the source takes its own reference). NULL on error with *err set: -errno
 * (open, fstat, mmap), -EINVAL, -ENOMEM, MS_ECORRUPT (the table's size of the
 * object is not size).
 */
struct ms_source *ms_source_object_open(const char *path, const char *key, uint64_t size,
					struct ms_sums *sums, int *err);

/* ms_source_object_open's source kind. */
bool ms_source_is_object(const struct ms_source *src);

/* Blocks checked so far (each once), for tests and stats; 0 for another kind. */
uint64_t ms_source_object_checked(const struct ms_source *src);

#endif
