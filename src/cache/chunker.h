/*
 * chunker.h - a storage-backed source: an object fetched on demand, in chunks,
 * into a local sparse cache file (as in E2B's orchestrator).
 *
 * A chunk is 4 MiB of the uncompressed object (the last one shorter) or exactly
 * one frame of a compressed object. The first reader of a missing chunk starts
 * a fetch session on its own thread; every other reader of that chunk waits on
 * the same session. Uncompressed data is fetched in pieces (read_size) by up to
 * `parallel` store reads in flight, and a waiter wakes as soon as the pieces it
 * needs are in; a compressed frame is released only after it was decoded and its
 * codec checksum verified.
 *
 * Read-ahead: a read that misses chunk k while chunk k-1 is present or in flight
 * (or k is 0) looks like a stream, and starts sessions for the `readahead` chunks
 * after it. Each chunk fetched that way carries a mark; the first read that touches
 * a marked chunk clears it and slides the window on, so a sequential fault stream
 * finds its chunks fetched before it reaches them. A read-ahead session is only a
 * guess: a reader that joined one that failed starts its own session once before it
 * reports an error, and no reader that did not need it ever sees its error.
 *
 * Invariants:
 *  1. At most one unfinished session per chunk; a session belongs to the source,
 *     not to a reader: a reader that gives up (its deadline passed) leaves the
 *     fetch running for the others and for the cache.
 *  2. Bytes are marked present only after they were written (and, for a
 *     compressed frame, verified): an uncompressed chunk piece by piece as each
 *     lands (so readers of a landed piece stop waiting on the session, and the
 *     page server can serve it as local), a frame whole; the whole chunk is
 *     present before the session reports success.
 *  3. A failed session marks nothing more and wakes its waiters with the error;
 *     the pieces it had finished stay present, and the next read of a missing
 *     part starts a fresh session that fetches only the pieces still missing.
 *  4. A session ends within fetch_timeout_ns for its waiters: past that deadline
 *     it is failed with -ETIMEDOUT even when the store call has not returned
 *     (the thread then stops at its next step and marks nothing).
 *  5. The store must outlive the source: the last unref closes the source and
 *     waits for every session thread (a store call stuck past the timeout delays it).
 *
 * ms_source_close() fails unfinished sessions with MS_ECLOSED and unlinks the cache
 * file; the cache file is also removed when the source is freed.
 */
#ifndef MS_CACHE_CHUNKER_H
#define MS_CACHE_CHUNKER_H

#include "cache/source.h"
#include "storage/frametable.h"
#include "storage/store.h"

#include <stdint.h>

#define MS_CHUNK_SIZE_DEFAULT	   (4u << 20)
#define MS_CHUNK_READ_SIZE_DEFAULT (256u << 10)
#define MS_CHUNK_TIMEOUT_DEFAULT   (60LL * 1000000000LL)
#define MS_CHUNK_PARALLEL_DEFAULT  4u
#define MS_CHUNK_READAHEAD_DEFAULT 2u
#define MS_CHUNK_READAHEAD_OFF	   UINT32_MAX

/* Zero fields take the defaults. */
struct ms_chunker_config {
	uint64_t chunk_size; /* uncompressed chunk bytes; default 4 MiB; multiple of block_size */
	uint64_t read_size;  /* bytes per store read of an uncompressed chunk; default 256 KiB */
	int64_t fetch_timeout_ns; /* hard limit of one session; default 60 s */
	uint32_t block_size;	  /* presence granularity, power of two; default 4096 */
	uint32_t parallel;	  /* store reads in flight per uncompressed chunk; default 4 */
	uint32_t readahead;	  /* chunks fetched ahead of a stream; default 2; _OFF: none */
};

struct ms_chunker_stats {
	uint64_t sessions;	/* sessions started */
	uint64_t failures;	/* sessions that ended in an error (timeouts included) */
	uint64_t timeouts;	/* sessions failed by their deadline */
	uint64_t fetched_bytes; /* bytes read from the store */
	uint64_t readahead;	/* sessions started by read-ahead (included in sessions) */
};

/*
 * A source over the object key of store, of uncompressed size bytes, cached in a
 * new file at cache_path (must not exist). frames: NULL or an uncompressed table
 * for a plain object; else the object's frame table (copied), which must cover size
 * and start every frame on a block boundary. config may be NULL.
 * NULL on error with *err set: -EINVAL, MS_ECORRUPT (frame table), -ENOMEM, -errno.
 */
struct ms_source *ms_chunker_new(struct ms_store *store, const char *key, uint64_t size,
				 const struct ms_frame_table *frames, const char *cache_path,
				 const struct ms_chunker_config *config, int *err);

/* ms_chunker_new's source kind. */
bool ms_source_is_chunker(const struct ms_source *src);

/*
 * ms_source_read with a reader deadline (CLOCK_MONOTONIC ns, see util/clock.h):
 * -ETIMEDOUT when the deadline passes first; the fetch goes on. -EINVAL when src
 * is not a chunker.
 */
int ms_chunker_read_deadline(struct ms_source *src, void *dst, uint64_t off, size_t len,
			     int64_t deadline_ns);

void ms_chunker_get_stats(struct ms_source *src, struct ms_chunker_stats *out);

#endif
