/*
 * checksums.c - the checksum table: building, (de)serialization, checks, counters.
 *
 * Design: a table is built by hashing whole objects (ms_sums_add_*), then
 * serialized once; a reader parses it through a bounds-checked cursor and gets
 * an immutable, reference-counted table. Every object keeps its block starts
 * (count + 1 offsets) whether its blocks are fixed or not, so a lookup is one
 * division or one binary search.
 */
#include "storage/checksums.h"
#include "util/err.h"
#include "util/interval.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
/* libxxhash's XXH3 picks the widest vector unit the CPU has at run time (AVX2,
 * AVX-512); the plain entry point is the SSE2 build. Same hash, bit for bit. */
#include <xxh_x86dispatch.h>
#define MS_XXH3_64 XXH3_64bits_dispatch
#else
#define MS_XXH3_64 XXH3_64bits
#endif

static const uint8_t ms_sums_magic[8] = {'M', 'S', 'S', 'U', 'M', 'S', 0, 1};
#define MS_SUMS_ALGO_XXH3 1u
#define MS_SUMS_HEAD	  16u
#define MS_SUMS_RECORD	  48u

uint64_t ms_sums_hash(const void *buf, size_t len)
{
	return MS_XXH3_64(buf, len);
}

struct ms_sums *ms_sums_new(void)
{
	struct ms_sums *sums = calloc(1, sizeof(*sums));
	if (sums)
		atomic_init(&sums->refs, 1);
	return sums;
}

struct ms_sums *ms_sums_ref(struct ms_sums *sums)
{
	atomic_fetch_add(&sums->refs, 1);
	return sums;
}

void ms_sums_unref(struct ms_sums *sums)
{
	if (!sums || atomic_fetch_sub(&sums->refs, 1) != 1)
		return;
	for (unsigned i = 0; i < sums->count; i++) {
		free(sums->objects[i].starts);
		free(sums->objects[i].hashes);
	}
	free(sums);
}

static bool ms_sums_name_valid(const char *name, size_t len)
{
	if (len == 0 || len >= MS_SUMS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return !(len == 1 && name[0] == '.') && !(len == 2 && name[0] == '.' && name[1] == '.');
}

static bool ms_sums_block_valid(uint32_t block)
{
	return block >= MS_SUMS_BLOCK_MIN && block <= MS_SUMS_BLOCK_MAX &&
	       (block & (block - 1)) == 0;
}

const struct ms_sums_object *ms_sums_find(const struct ms_sums *sums, const char *name)
{
	for (unsigned i = 0; i < sums->count; i++)
		if (strcmp(sums->objects[i].name, name) == 0)
			return &sums->objects[i];
	return NULL;
}

/* Reserves the next object: arrays for count blocks. On error nothing was added. */
static int ms_sums_reserve(struct ms_sums *sums, const char *name, uint64_t size, uint32_t block,
			   uint64_t count, struct ms_sums_object **out)
{
	if (!name || !ms_sums_name_valid(name, strlen(name)) || ms_sums_find(sums, name))
		return -EINVAL;
	if (sums->count == MS_SUMS_OBJECTS_MAX)
		return -E2BIG;
	if (count > MS_SUMS_BLOCKS_MAX)
		return -E2BIG;
	struct ms_sums_object *o = &sums->objects[sums->count];
	memset(o, 0, sizeof(*o));
	o->starts = malloc(((size_t)count + 1) * sizeof(*o->starts));
	o->hashes = malloc((count ? (size_t)count : 1) * sizeof(*o->hashes));
	if (!o->starts || !o->hashes) {
		free(o->starts);
		free(o->hashes);
		return -ENOMEM;
	}
	strcpy(o->name, name);
	o->size = size;
	o->block = block;
	o->count = (uint32_t)count;
	*out = o;
	return 0;
}

int ms_sums_add_buf(struct ms_sums *sums, const char *name, const void *buf, size_t len,
		    uint32_t block)
{
	if (!block)
		block = MS_SUMS_BLOCK_DEFAULT;
	if (!ms_sums_block_valid(block) || (len && !buf))
		return -EINVAL;
	struct ms_sums_object *o;
	int err = ms_sums_reserve(sums, name, len, block, (len + block - 1) / block, &o);
	if (err)
		return err;
	for (uint32_t i = 0; i < o->count; i++) {
		uint64_t off = (uint64_t)i * block;
		size_t n = len - off < block ? (size_t)(len - off) : block;
		o->starts[i] = off;
		o->hashes[i] = ms_sums_hash((const uint8_t *)buf + off, n);
	}
	o->starts[o->count] = len;
	sums->count++;
	return 0;
}

static int ms_sums_pread(int fd, void *dst, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)dst + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO; /* shorter than its size */
		done += (size_t)n;
	}
	return 0;
}

/* Block i of o read from fd into *buf, grown (to *cap bytes) when it is too small. */
static int ms_sums_read_block(const struct ms_sums_object *o, uint32_t i, int fd, uint8_t **buf,
			      size_t *cap)
{
	size_t n = (size_t)(o->starts[i + 1] - o->starts[i]);
	if (n > *cap) {
		free(*buf);
		*cap = 0;
		if (!(*buf = malloc(n)))
			return -ENOMEM;
		*cap = n;
	}
	return ms_sums_pread(fd, *buf, n, o->starts[i]);
}

/*
 * Hashes the blocks of the reserved object o (starts filled) from fd and adds it
 * to sums; on error o is released and nothing was added.
 */
static int ms_sums_commit_fd(struct ms_sums *sums, struct ms_sums_object *o, int fd)
{
	size_t cap = 0;
	uint8_t *buf = NULL;
	int err = 0;
	for (uint32_t i = 0; !err && i < o->count; i++)
		if (!(err = ms_sums_read_block(o, i, fd, &buf, &cap)))
			o->hashes[i] = ms_sums_hash(buf, (size_t)(o->starts[i + 1] - o->starts[i]));
	free(buf);
	if (err) {
		free(o->starts);
		free(o->hashes);
		return err;
	}
	sums->count++;
	return 0;
}

int ms_sums_add_fd(struct ms_sums *sums, const char *name, int fd, uint64_t size, uint32_t block)
{
	if (!block)
		block = MS_SUMS_BLOCK_DEFAULT;
	if (!ms_sums_block_valid(block) || fd < 0)
		return -EINVAL;
	struct ms_sums_object *o;
	int err = ms_sums_reserve(sums, name, size, block, (size + block - 1) / block, &o);
	if (err)
		return err;
	for (uint32_t i = 0; i < o->count; i++)
		o->starts[i] = (uint64_t)i * block;
	o->starts[o->count] = size;
	return ms_sums_commit_fd(sums, o, fd);
}

int ms_sums_add_frames(struct ms_sums *sums, const char *name, int fd,
		       const struct ms_frame_table *table)
{
	if (!table || fd < 0 || ms_frame_table_validate(table))
		return -EINVAL;
	uint64_t end = 0;
	for (uint32_t i = 0; i < table->count; i++) {
		if ((uint64_t)table->frames[i].start_c != end)
			return -EINVAL; /* a trimmed table: the frames must tile the object */
		end += (uint64_t)table->frames[i].size_c;
	}
	struct ms_sums_object *o;
	int err = ms_sums_reserve(sums, name, end, 0, table->count, &o);
	if (err)
		return err;
	for (uint32_t i = 0; i < table->count; i++)
		o->starts[i] = (uint64_t)table->frames[i].start_c;
	o->starts[o->count] = end;
	return ms_sums_commit_fd(sums, o, fd);
}

int ms_sums_add_object(struct ms_sums *sums, const struct ms_sums_object *object)
{
	struct ms_sums_object *o;
	int err =
	    ms_sums_reserve(sums, object->name, object->size, object->block, object->count, &o);
	if (err)
		return err;
	memcpy(o->starts, object->starts, ((size_t)object->count + 1) * sizeof(*o->starts));
	if (object->count)
		memcpy(o->hashes, object->hashes, (size_t)object->count * sizeof(*o->hashes));
	sums->count++;
	return 0;
}

/* ---- serialization ---- */

static void ms_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void ms_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t ms_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ms_get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int ms_sums_serialize(const struct ms_sums *sums, uint8_t **out, size_t *len)
{
	size_t total = MS_SUMS_HEAD + 8;
	for (unsigned i = 0; i < sums->count; i++) {
		const struct ms_sums_object *o = &sums->objects[i];
		total += MS_SUMS_RECORD + (size_t)o->count * (o->block ? 8 : 12);
	}
	uint8_t *buf = malloc(total), *p = buf;
	if (!buf)
		return -ENOMEM;
	memcpy(p, ms_sums_magic, 8);
	ms_put_u32(p + 8, MS_SUMS_ALGO_XXH3);
	ms_put_u32(p + 12, sums->count);
	p += MS_SUMS_HEAD;
	for (unsigned i = 0; i < sums->count; i++) {
		const struct ms_sums_object *o = &sums->objects[i];
		memset(p, 0, MS_SUMS_NAME_MAX);
		memcpy(p, o->name, strlen(o->name));
		ms_put_u64(p + 32, o->size);
		ms_put_u32(p + 40, o->block);
		ms_put_u32(p + 44, o->count);
		p += MS_SUMS_RECORD;
		if (!o->block)
			for (uint32_t b = 0; b < o->count; b++, p += 4)
				ms_put_u32(p, (uint32_t)(o->starts[b + 1] - o->starts[b]));
		for (uint32_t b = 0; b < o->count; b++, p += 8)
			ms_put_u64(p, o->hashes[b]);
	}
	ms_put_u64(p, ms_sums_hash(buf, (size_t)(p - buf)));
	*out = buf;
	*len = total;
	return 0;
}

/* Parses one object record at *p (at most end - *p bytes) into o. */
static int ms_sums_parse_object(const uint8_t **pp, const uint8_t *end, struct ms_sums *sums,
				struct ms_sums_object *o)
{
	const uint8_t *p = *pp;
	if ((size_t)(end - p) < MS_SUMS_RECORD)
		return MS_ECORRUPT;
	size_t name_len = strnlen((const char *)p, MS_SUMS_NAME_MAX);
	if (!ms_sums_name_valid((const char *)p, name_len))
		return MS_ECORRUPT; /* also: no NUL in the 32 bytes */
	for (size_t i = name_len; i < MS_SUMS_NAME_MAX; i++)
		if (p[i])
			return MS_ECORRUPT; /* padding must be NUL */
	memcpy(o->name, p, name_len);
	o->name[name_len] = '\0';
	if (ms_sums_find(sums, o->name))
		return MS_ECORRUPT; /* duplicate */
	o->size = ms_get_u64(p + 32);
	o->block = ms_get_u32(p + 40);
	o->count = ms_get_u32(p + 44);
	p += MS_SUMS_RECORD;
	size_t per = o->block ? 8 : 12;
	if (o->count > MS_SUMS_BLOCKS_MAX || o->count > (size_t)(end - p) / per)
		return MS_ECORRUPT;
	if (o->block) {
		if (!ms_sums_block_valid(o->block) || o->size > INT64_MAX ||
		    o->count != (o->size + o->block - 1) / o->block)
			return MS_ECORRUPT;
	} else if (o->count > o->size) {
		return MS_ECORRUPT; /* every block has at least one byte */
	}
	o->starts = malloc(((size_t)o->count + 1) * sizeof(*o->starts));
	o->hashes = malloc((o->count ? (size_t)o->count : 1) * sizeof(*o->hashes));
	if (!o->starts || !o->hashes)
		return -ENOMEM;
	uint64_t at = 0;
	for (uint32_t b = 0; b < o->count; b++) {
		o->starts[b] = at;
		if (o->block) {
			at += o->block;
		} else {
			uint32_t n = ms_get_u32(p);
			p += 4;
			if (n == 0 || n > o->size - at)
				return MS_ECORRUPT;
			at += n;
		}
	}
	if (!o->block && at != o->size)
		return MS_ECORRUPT; /* the lengths do not add up to the size */
	o->starts[o->count] = o->size;
	for (uint32_t b = 0; b < o->count; b++, p += 8)
		o->hashes[b] = ms_get_u64(p);
	*pp = p;
	return 0;
}

int ms_sums_parse(const void *buf, size_t len, struct ms_sums **out)
{
	*out = NULL;
	const uint8_t *p = buf;
	if (len > MS_SUMS_SIZE_MAX)
		return MS_ETOOBIG;
	if (len < MS_SUMS_HEAD + 8 || memcmp(p, ms_sums_magic, 7) != 0)
		return MS_ECORRUPT;
	if (ms_get_u64(p + len - 8) != ms_sums_hash(p, len - 8))
		return MS_ECHECKSUM;
	if (p[7] != ms_sums_magic[7] || ms_get_u32(p + 8) != MS_SUMS_ALGO_XXH3)
		return MS_EVERSION;
	uint32_t count = ms_get_u32(p + 12);
	if (count == 0 || count > MS_SUMS_OBJECTS_MAX)
		return MS_ECORRUPT;
	struct ms_sums *sums = ms_sums_new();
	if (!sums)
		return -ENOMEM;
	const uint8_t *end = p + len - 8;
	p += MS_SUMS_HEAD;
	int err = 0;
	for (uint32_t i = 0; i < count && !err; i++) {
		err = ms_sums_parse_object(&p, end, sums, &sums->objects[i]);
		if (!err || sums->objects[i].starts || sums->objects[i].hashes)
			sums->count++; /* so that unref frees a half-parsed object too */
	}
	if (!err && p != end)
		err = MS_ECORRUPT; /* bytes between the last record and the trailer */
	if (err) {
		ms_sums_unref(sums);
		return err;
	}
	*out = sums;
	return 0;
}

/* ---- checks ---- */

static void ms_sums_block_at(const void *table, size_t i, uint64_t *start, uint64_t *length)
{
	const uint64_t *starts = table;
	*start = starts[i];
	*length = starts[i + 1] - starts[i];
}

uint32_t ms_sums_block_of(const struct ms_sums_object *object, uint64_t off)
{
	if (object->block)
		return (uint32_t)(off / object->block);
	size_t index = object->count;
	ms_interval_find(object->starts, object->count, off, ms_sums_block_at, &index);
	return (uint32_t)index;
}

int ms_sums_check(const struct ms_sums_object *object, uint32_t first, const void *buf, size_t len,
		  uint32_t *bad)
{
	if (first > object->count)
		return -EINVAL;
	uint64_t done = 0;
	uint32_t b = first;
	while (done < len) {
		if (b >= object->count)
			return -EINVAL;
		uint64_t n = object->starts[b + 1] - object->starts[b];
		if (n > len - done)
			return -EINVAL; /* the range ends inside a block */
		if (ms_sums_hash((const uint8_t *)buf + done, (size_t)n) != object->hashes[b]) {
			if (bad)
				*bad = b;
			return MS_ECHECKSUM;
		}
		done += n;
		b++;
	}
	return 0;
}

int ms_sums_check_fd(const struct ms_sums_object *object, int fd, uint32_t *bad)
{
	size_t cap = 0;
	uint8_t *buf = NULL;
	int err = 0;
	for (uint32_t i = 0; !err && i < object->count; i++) {
		size_t n = (size_t)(object->starts[i + 1] - object->starts[i]);
		for (int tries = 0; tries < 2; tries++) { /* a mismatch is read once more */
			if ((err = ms_sums_read_block(object, i, fd, &buf, &cap)))
				break;
			err = ms_sums_check(object, i, buf, n, bad);
			if (!err)
				break;
		}
	}
	free(buf);
	return err;
}

/* ---- counters ---- */

static atomic_uint_least64_t ms_integrity_counters[MS_INTEGRITY_OBJECTS];

static const char *const ms_integrity_names[MS_INTEGRITY_OBJECTS] = {
    [MS_INTEGRITY_MEMFILE] = "memfile",	  [MS_INTEGRITY_ROOTFS] = "rootfs",
    [MS_INTEGRITY_HEADER] = "header",	  [MS_INTEGRITY_SNAPFILE] = "snapfile",
    [MS_INTEGRITY_METADATA] = "metadata", [MS_INTEGRITY_CHECKSUMS] = "checksums",
    [MS_INTEGRITY_OTHER] = "other",
};

const char *ms_integrity_object_name(enum ms_integrity_object object)
{
	return (unsigned)object < MS_INTEGRITY_OBJECTS ? ms_integrity_names[object] : "other";
}

enum ms_integrity_object ms_integrity_classify(const char *name)
{
	const char *slash = strrchr(name, '/');
	if (slash)
		name = slash + 1;
	size_t len = strlen(name);
	if (len >= 7 && strcmp(name + len - 7, ".header") == 0)
		return MS_INTEGRITY_HEADER;
	if (strncmp(name, "memfile", 7) == 0)
		return MS_INTEGRITY_MEMFILE;
	if (strncmp(name, "rootfs", 6) == 0)
		return MS_INTEGRITY_ROOTFS;
	if (strcmp(name, "snapfile") == 0)
		return MS_INTEGRITY_SNAPFILE;
	if (strncmp(name, "metadata", 8) == 0)
		return MS_INTEGRITY_METADATA;
	if (strcmp(name, "checksums") == 0)
		return MS_INTEGRITY_CHECKSUMS;
	return MS_INTEGRITY_OTHER;
}

void ms_integrity_count(enum ms_integrity_object object)
{
	if ((unsigned)object >= MS_INTEGRITY_OBJECTS)
		object = MS_INTEGRITY_OTHER;
	atomic_fetch_add(&ms_integrity_counters[object], 1);
}

uint64_t ms_integrity_failures(enum ms_integrity_object object)
{
	if ((unsigned)object >= MS_INTEGRITY_OBJECTS)
		return 0;
	return atomic_load(&ms_integrity_counters[object]);
}
