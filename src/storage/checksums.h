/*
 * checksums.h - per-block checksums of a build's objects: "{build_id}/checksums".
 *
 * Every object a pause uploads (the data, plain or as compressed frames, the
 * snapfile, the metadata, the header) is listed here with an XXH3-64 per block,
 * so a reader can check each chunk it fetches before it caches or serves it.
 * The table is an object of its own, a sidecar, put after every object it lists
 * and before the header (the header is the build's commit point): the header
 * stays byte for byte what E2B writes and reads, and E2B ignores the sidecar.
 * A build without one (older, or written by another tool) reads unverified.
 *
 * XXH3-64 was chosen over CRC32C by measurement (bench/storage/bench_checksums.c,
 * 64 KiB blocks: 6.1-6.6 GB/s against 5.2-5.7 GB/s for the SSE4.2 crc32 loop, memcpy
 * 6.6-8.0 GB/s, on the development VM), for its 64 bits, and libxxhash is linked already.
 *
 * Format, little-endian:
 *   offset size   field
 *   0      8      magic "MSSUMS\0\1" (the last byte is the format version, 1)
 *   8      4      algorithm: 1 = XXH3-64, seed 0
 *   12     4      K: objects (1 <= K <= MS_SUMS_OBJECTS_MAX)
 *   16     ...    K object records, each:
 *     0    32     name: the key after "{build_id}/" ([A-Za-z0-9._-], 1..31 bytes,
 *                 NUL-padded), unique in the table
 *     32   8      size: the object's bytes
 *     40   4      block: bytes per block, a power of two in [4 KiB, 64 MiB]; or 0:
 *                 blocks of their own lengths (the compressed frames of a data object)
 *     44   4      n: blocks; ceil(size / block) for a fixed block, else 0..MS_SUMS_BLOCKS_MAX
 *     48   4*n    block 0 only: each block's length, > 0, summing to size
 *     ...  8*n    XXH3-64 of each block's bytes
 *   end-8  8      XXH3-64 of every byte before it
 * Blocks tile [0, size) in order. Nothing may follow the last record but the
 * trailer. The parser checks every field against the end and rejects anything
 * else with MS_ECORRUPT (MS_ECHECKSUM: a trailer that does not match; MS_EVERSION:
 * another format version or algorithm); nothing is returned then.
 *
 * Thread-safety: a table is immutable once parsed or serialized and may be read
 * from many threads; ms_sums_ref/unref are atomic.
 */
#ifndef MS_STORAGE_CHECKSUMS_H
#define MS_STORAGE_CHECKSUMS_H

#include "storage/frametable.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_SUMS_NAME_MAX      32
#define MS_SUMS_OBJECTS_MAX   16
#define MS_SUMS_BLOCKS_MAX    (1u << 24)
#define MS_SUMS_BLOCK_MIN     (4u << 10)
#define MS_SUMS_BLOCK_MAX     (64u << 20)
#define MS_SUMS_BLOCK_DEFAULT (64u << 10)
/* the largest table the format allows with K objects of MS_SUMS_BLOCKS_MAX blocks is
 * bigger; readers refuse tables over this */
#define MS_SUMS_SIZE_MAX (64u << 20)

struct ms_sums_object {
	char name[MS_SUMS_NAME_MAX]; /* NUL-terminated */
	uint64_t size;
	uint32_t block; /* 0: blocks of their own lengths */
	uint32_t count;
	uint64_t *starts; /* count + 1 offsets: block i is [starts[i], starts[i + 1]) */
	uint64_t *hashes; /* count */
};

struct ms_sums {
	atomic_uint refs;
	unsigned count;
	struct ms_sums_object objects[MS_SUMS_OBJECTS_MAX];
};

/* An empty table, one reference. NULL on -ENOMEM. */
struct ms_sums *ms_sums_new(void);
struct ms_sums *ms_sums_ref(struct ms_sums *sums);
/* NULL is ignored. */
void ms_sums_unref(struct ms_sums *sums);

/*
 * Adds an object, hashed in blocks of block bytes (0: MS_SUMS_BLOCK_DEFAULT):
 * from a buffer, or size bytes of fd from offset 0. -EINVAL (bad name, block,
 * or a name already there), -E2BIG (table full), -ENOMEM, -errno, -EIO (fd shorter).
 */
int ms_sums_add_buf(struct ms_sums *sums, const char *name, const void *buf, size_t len,
		    uint32_t block);
int ms_sums_add_fd(struct ms_sums *sums, const char *name, int fd, uint64_t size, uint32_t block);
/* Adds a compressed object read from fd: one block per frame of table, over its
 * compressed bytes [start_c, start_c + size_c), which must tile the object from 0. */
int ms_sums_add_frames(struct ms_sums *sums, const char *name, int fd,
		       const struct ms_frame_table *table);

/* Adds a copy of object (from another table), under its own name: the errors of
 * ms_sums_add_buf. */
int ms_sums_add_object(struct ms_sums *sums, const struct ms_sums_object *object);

/* The serialized table, malloc'd. 0 or -ENOMEM. */
int ms_sums_serialize(const struct ms_sums *sums, uint8_t **out, size_t *len);
/* Parses a serialized table (see the format above); *out gets one reference. */
int ms_sums_parse(const void *buf, size_t len, struct ms_sums **out);

/* The object named name, or NULL. */
const struct ms_sums_object *ms_sums_find(const struct ms_sums *sums, const char *name);

/* Index of the block holding byte off (off < object->size). */
uint32_t ms_sums_block_of(const struct ms_sums_object *object, uint64_t off);
/*
 * Checks bytes [starts[first], starts[first] + len) against their blocks: len must
 * end on a block end (or the object's end). 0, or MS_ECHECKSUM with *bad (may be
 * NULL) the first block that does not match; -EINVAL for a range off the blocks.
 */
int ms_sums_check(const struct ms_sums_object *object, uint32_t first, const void *buf, size_t len,
		  uint32_t *bad);
/*
 * Checks the object's bytes in fd (from offset 0) block by block; a block that
 * does not match is read once more. 0, MS_ECHECKSUM with *bad (may be NULL) the
 * block that mismatched twice, -EIO (fd shorter), -ENOMEM or -errno.
 */
int ms_sums_check_fd(const struct ms_sums_object *object, int fd, uint32_t *bad);
/* The XXH3-64 the table uses. */
uint64_t ms_sums_hash(const void *buf, size_t len);

/*
 * Mismatches seen by this process, by the kind of object (the metric
 * memsnap_integrity_failures_total{object}). Process-wide like the log: a
 * corrupt object is counted wherever in the process it was read.
 */
enum ms_integrity_object {
	MS_INTEGRITY_MEMFILE,
	MS_INTEGRITY_ROOTFS,
	MS_INTEGRITY_HEADER,
	MS_INTEGRITY_SNAPFILE,
	MS_INTEGRITY_METADATA,
	MS_INTEGRITY_CHECKSUMS,
	MS_INTEGRITY_OTHER,
	MS_INTEGRITY_OBJECTS,
};

/* "memfile", "rootfs", "header", "snapfile", "metadata", "checksums", "other". */
const char *ms_integrity_object_name(enum ms_integrity_object object);
/* The kind of an object name or key ("memfile.zstd", "{id}/rootfs.ext4.header", ...). */
enum ms_integrity_object ms_integrity_classify(const char *name);
void ms_integrity_count(enum ms_integrity_object object);
uint64_t ms_integrity_failures(enum ms_integrity_object object);

#endif
