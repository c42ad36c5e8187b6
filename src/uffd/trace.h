/*
 * trace.h - a resume's first-touch trace: which blocks of guest memory the
 * guest touched first, in order, and how; recorded from the page server's
 * fault stream and kept in a build's metadata.json for the next resume's
 * prefetch (prefetch.h).
 *
 * metadata.json carries it as E2B's layout (an object among other keys):
 *
 *   "prefetch": {"memory": {"block_size": 4096,
 *                           "indices": [17, 18, 4, ...],
 *                           "access_types": ["r", "w", "p", ...]}}
 *
 *   key           type              meaning
 *   block_size    u64               bytes per index: the session's page size (4 KiB or 2 MiB)
 *   indices       array of u64      block numbers (device offset / block_size), first touch
 *                                   first; each at most once, each < image size / block_size
 *   access_types  array of strings  one per index: "r" read fault, "w" write fault,
 *                                   "p" installed ahead by a prefetch (the guest's working
 *                                   set of the resume before, kept so that a prefetched
 *                                   resume does not drop it from the next trace)
 *
 * A trace comes from the store: outside input. ms_uffd_trace_parse() refuses
 * (MS_EPROTO, with the reason in why) indices past the end, duplicates, a
 * block size other than expected, arrays of different lengths, an unknown
 * access type, more than MS_UFFD_TRACE_MAX entries, and JSON that does not
 * parse (a truncated metadata.json). No prefetch key at all is not an error:
 * the trace is empty.
 */
#ifndef MS_UFFD_TRACE_H
#define MS_UFFD_TRACE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define MS_UFFD_TRACE_MAX (1u << 24) /* entries accepted from outside (64 GiB of 4 KiB) */

enum ms_uffd_access {
	MS_UFFD_ACCESS_READ = 'r',
	MS_UFFD_ACCESS_WRITE = 'w',
	MS_UFFD_ACCESS_PREFETCH = 'p',
};

/* A trace: owned arrays, count entries. */
struct ms_uffd_trace {
	uint64_t block_size;
	uint64_t *indices;
	uint8_t *access; /* enum ms_uffd_access */
	size_t count;
};

void ms_uffd_trace_fini(struct ms_uffd_trace *trace);

/*
 * Parses metadata.json text[0, len) and returns its trace in *out (empty when
 * it has no prefetch.memory). image_size bounds the indices, block_size is the
 * one expected. 0, MS_EPROTO (why says what was wrong), -ENOMEM. On error *out
 * is empty. Safe on arbitrary bytes.
 */
int ms_uffd_trace_parse(const char *text, size_t len, uint64_t image_size, uint64_t block_size,
			struct ms_uffd_trace *out, char *why, size_t why_len);

/*
 * Adds "prefetch": {"memory": {...}} for trace to the JSON object root (a
 * cJSON *; void here so that users need not include cJSON). 0 or -ENOMEM.
 */
int ms_uffd_trace_to_json(const struct ms_uffd_trace *trace, void *root);

/*
 * The recorder: appends each block the first time it is touched. The session's
 * event thread is the only writer; ms_uffd_recorder_copy may run on any thread.
 */
struct ms_uffd_recorder {
	pthread_mutex_t lock; /* guards entries and count against copy; the writer's bitmap
				 (seen) is its own */
	uint64_t *seen;	      /* one bit per block; event thread only */
	uint64_t blocks;
	uint64_t block_size;
	uint64_t *indices; /* lock */
	uint8_t *access;   /* lock */
	size_t count, cap; /* lock */
	int error;	   /* -ENOMEM once an append failed: the trace is cut there */
};

int ms_uffd_recorder_init(struct ms_uffd_recorder *r, uint64_t image_size, uint64_t block_size);
void ms_uffd_recorder_fini(struct ms_uffd_recorder *r);
/* Event thread: records block (device offset / block_size) unless it was recorded before. */
void ms_uffd_recorder_add(struct ms_uffd_recorder *r, uint64_t block, enum ms_uffd_access access);
/* Any thread: a copy of the trace so far. 0 or -ENOMEM. */
int ms_uffd_recorder_copy(struct ms_uffd_recorder *r, struct ms_uffd_trace *out);

#endif
