/*
 * test_checksums.c - the checksum table (storage/checksums.h) and the checking
 * store (storage/verified.h): round trips, the parser's refusals, and reads of a
 * flipped byte, a truncated object, a corrupt table and a one-off bad fetch;
 * readers on many threads over more builds than the table cache holds (TSan).
 */
#include "ms_test.h"
#include "storage/checksums.h"
#include "storage/faulty.h"
#include "storage/frames.h"
#include "storage/verified.h"
#include "util/err.h"
#include "util/uuid.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define ID    "6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162"
#define BLOCK (16u << 10)
#define SIZE  (5 * BLOCK + 1000) /* the last block is short */

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 2654435761u + seed) >> 7);
	return p;
}

static struct ms_sums *roundtrip(const struct ms_sums *sums)
{
	uint8_t *buf;
	size_t len;
	assert_int_equal(ms_sums_serialize(sums, &buf, &len), 0);
	struct ms_sums *back;
	assert_int_equal(ms_sums_parse(buf, len, &back), 0);
	free(buf);
	return back;
}

/* The table's hash is XXH3-64, seed 0, whichever vector unit computes it: the same
 * bytes as libxxhash's plain (SSE2) entry point, short inputs and long ones. */
static void test_hash_is_xxh3(void **state)
{
	(void)state;
	assert_true(ms_sums_hash("", 0) == 0x2D06800538D394C2ull); /* XXH3-64 of nothing */
	size_t max = 1u << 20;
	uint8_t *buf = malloc(max);
	assert_non_null(buf);
	for (size_t i = 0; i < max; i++)
		buf[i] = (uint8_t)(i * 131 + (i >> 9));
	static const size_t lens[] = {1,    3,	  16,	17,    128,   129,   240,     241,
				      1023, 1024, 4096, 65535, 65536, 65537, 1u << 20};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		assert_true(ms_sums_hash(buf + 1, lens[i] - 1) ==
				XXH3_64bits(buf + 1, lens[i] - 1) &&
			    ms_sums_hash(buf, lens[i]) == XXH3_64bits(buf, lens[i]));
	free(buf);
}

static void test_roundtrip_and_check(void **state)
{
	(void)state;
	uint8_t *data = pattern(SIZE, 1);
	struct ms_sums *sums = ms_sums_new();
	assert_int_equal(ms_sums_add_buf(sums, "memfile", data, SIZE, BLOCK), 0);
	assert_int_equal(ms_sums_add_buf(sums, "snapfile", "state", 5, 0), 0);
	assert_int_equal(ms_sums_add_buf(sums, "empty", NULL, 0, 0), 0);
	assert_int_equal(ms_sums_add_buf(sums, "memfile", data, 1, 0), -EINVAL); /* twice */
	assert_int_equal(ms_sums_add_buf(sums, "a/b", data, 1, 0), -EINVAL);
	assert_int_equal(ms_sums_add_buf(sums, "x", data, 1, 1000), -EINVAL); /* not 2^n */
	/* compressed frames: one block per frame, over the compressed bytes */
	void *packed;
	size_t packed_len;
	struct ms_frame_table *table;
	assert_int_equal(ms_frames_compress_buf(data, SIZE, MS_COMPRESS_ZSTD, 1, 8192, &packed,
						&packed_len, &table, NULL),
			 0);
	char path[] = "/tmp/memsnap-sums.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, packed, packed_len), (ssize_t)packed_len);
	assert_int_equal(ms_sums_add_frames(sums, "memfile.zstd", fd, table), 0);
	close(fd);

	struct ms_sums *back = roundtrip(sums);
	assert_int_equal(back->count, 4);
	const struct ms_sums_object *o = ms_sums_find(back, "memfile");
	assert_non_null(o);
	assert_int_equal(o->size, SIZE);
	assert_int_equal(o->count, 6);
	assert_int_equal(ms_sums_check(o, 0, data, SIZE, NULL), 0);
	assert_int_equal(ms_sums_check(o, 5, data + 5 * BLOCK, 1000, NULL), 0);
	assert_int_equal(ms_sums_check(o, 1, data + BLOCK, 100, NULL), -EINVAL); /* mid-block */
	data[3 * BLOCK + 7] ^= 0x40;
	uint32_t bad = 0;
	assert_int_equal(ms_sums_check(o, 0, data, SIZE, &bad), MS_ECHECKSUM);
	assert_int_equal(bad, 3);
	assert_int_equal(ms_sums_block_of(o, 3 * BLOCK + 7), 3);
	const struct ms_sums_object *z = ms_sums_find(back, "memfile.zstd");
	assert_non_null(z);
	assert_int_equal(z->block, 0);
	assert_int_equal(z->count, table->count);
	assert_int_equal(z->size, packed_len);
	for (uint32_t i = 0; i < table->count; i++) {
		assert_int_equal(z->starts[i], table->frames[i].start_c);
		assert_int_equal(ms_sums_block_of(z, (uint64_t)table->frames[i].start_c), i);
		assert_int_equal(ms_sums_check(z, i, (uint8_t *)packed + table->frames[i].start_c,
					       (size_t)table->frames[i].size_c, NULL),
				 0);
	}
	assert_non_null(ms_sums_find(back, "empty"));
	assert_null(ms_sums_find(back, "rootfs"));
	ms_sums_unref(back);
	ms_sums_unref(sums);
	ms_frame_table_free(table);
	free(packed);
	free(data);
}

/* A serialized table with its trailer recomputed after an edit. */
static void reseal(uint8_t *buf, size_t len)
{
	uint64_t h = ms_sums_hash(buf, len - 8);
	for (int i = 0; i < 8; i++)
		buf[len - 8 + i] = (uint8_t)(h >> (8 * i));
}

static int parse(const uint8_t *buf, size_t len)
{
	struct ms_sums *out = (void *)1;
	int err = ms_sums_parse(buf, len, &out);
	if (err)
		assert_null(out);
	ms_sums_unref(err ? NULL : out);
	return err;
}

/* A copied object checks the same bytes; ms_sums_check_fd names the changed block. */
static void test_copy_and_check_fd(void **state)
{
	(void)state;
	const size_t len = 5 * 4096 + 100;
	uint8_t *buf = malloc(len);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	struct ms_sums *a = ms_sums_new(), *b = ms_sums_new();
	assert_int_equal(ms_sums_add_buf(a, "memfile", buf, len, 4096), 0);
	assert_int_equal(ms_sums_add_object(b, ms_sums_find(a, "memfile")), 0);
	assert_int_equal(ms_sums_add_object(b, ms_sums_find(a, "memfile")), -EINVAL); /* taken */
	const struct ms_sums_object *o = ms_sums_find(b, "memfile");
	assert_non_null(o);
	assert_int_equal(o->count, 6);
	assert_int_equal(ms_sums_check(o, 0, buf, len, NULL), 0);
	char *dir = ms_test_tmpdir();
	char path[512];
	snprintf(path, sizeof(path), "%s/f", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	uint32_t bad = 99;
	assert_int_equal(ms_sums_check_fd(o, fd, &bad), 0);
	uint8_t x = buf[3 * 4096 + 5] ^ 1;
	assert_int_equal(pwrite(fd, &x, 1, 3 * 4096 + 5), 1);
	assert_int_equal(ms_sums_check_fd(o, fd, &bad), MS_ECHECKSUM);
	assert_int_equal(bad, 3);
	assert_int_equal(ftruncate(fd, (off_t)(len - 50)), 0);
	assert_int_equal(pwrite(fd, &buf[3 * 4096 + 5], 1, 3 * 4096 + 5), 1);
	assert_int_equal(ms_sums_check_fd(o, fd, &bad), -EIO); /* shorter */
	close(fd);
	ms_test_rmtree(dir);
	free(dir);
	ms_sums_unref(a);
	ms_sums_unref(b);
	free(buf);
}

static void test_parser_refuses(void **state)
{
	(void)state;
	uint8_t *data = pattern(SIZE, 2);
	struct ms_sums *sums = ms_sums_new();
	assert_int_equal(ms_sums_add_buf(sums, "memfile", data, SIZE, BLOCK), 0);
	uint8_t *good;
	size_t len;
	assert_int_equal(ms_sums_serialize(sums, &good, &len), 0);
	assert_int_equal(len, 16 + 48 + 6 * 8 + 8);
	uint8_t *b = malloc(len + 16);
	assert_int_equal(parse(good, len), 0);
	for (size_t cut = 0; cut < len; cut++) /* every truncation */
		assert_int_not_equal(parse(good, cut), 0);
	memcpy(b, good, len);
	b[70] ^= 1; /* a hash byte: the trailer no longer matches */
	assert_int_equal(parse(b, len), MS_ECHECKSUM);
	memcpy(b, good, len);
	b[7] = 2; /* another format version */
	reseal(b, len);
	assert_int_equal(parse(b, len), MS_EVERSION);
	memcpy(b, good, len);
	b[0] = 'X';
	reseal(b, len);
	assert_int_equal(parse(b, len), MS_ECORRUPT);
	memcpy(b, good, len);
	b[12] = 0; /* no object */
	reseal(b, len);
	assert_int_equal(parse(b, len), MS_ECORRUPT);
	memcpy(b, good, len);
	b[16 + 44] = 5; /* 5 blocks where the size needs 6 */
	reseal(b, len);
	assert_int_equal(parse(b, len), MS_ECORRUPT);
	memcpy(b, good, len);
	b[16 + 40] = 0;
	b[16 + 41] = 0x30; /* block 12 KiB: not a power of two */
	reseal(b, len);
	assert_int_equal(parse(b, len), MS_ECORRUPT);
	memcpy(b, good, len);
	b[16 + 10] = 'x'; /* a byte after the name's NUL */
	reseal(b, len);
	assert_int_equal(parse(b, len), MS_ECORRUPT);
	memcpy(b, good, len);
	b[16] = '/';
	reseal(b, len);
	assert_int_equal(parse(b, len), MS_ECORRUPT);
	/* bytes between the last record and the trailer */
	memcpy(b, good, len - 8);
	memset(b + len - 8, 0, 8);
	reseal(b, len + 8);
	assert_int_equal(parse(b, len + 8), MS_ECORRUPT);
	/* the same object twice */
	struct ms_sums *two = ms_sums_new();
	assert_int_equal(ms_sums_add_buf(two, "a", "x", 1, 0), 0);
	assert_int_equal(ms_sums_add_buf(two, "b", "x", 1, 0), 0);
	uint8_t *dup;
	size_t dup_len;
	assert_int_equal(ms_sums_serialize(two, &dup, &dup_len), 0);
	dup[16 + 56] = 'a'; /* the second record's name: "b" -> "a" */
	reseal(dup, dup_len);
	assert_int_equal(parse(dup, dup_len), MS_ECORRUPT);
	/* variable blocks whose lengths do not add up to the size */
	struct ms_sums *var = ms_sums_new();
	struct ms_frame_table *t = ms_frame_table_new(MS_COMPRESS_ZSTD);
	assert_int_equal(ms_frame_table_append(t, 4096, 100), 0);
	assert_int_equal(ms_frame_table_append(t, 4096, 50), 0);
	char path[] = "/tmp/memsnap-sums.XXXXXX";
	int fd = mkstemp(path);
	unlink(path);
	assert_int_equal(write(fd, data, 150), 150);
	assert_int_equal(ms_sums_add_frames(var, "memfile.zstd", fd, t), 0);
	close(fd);
	uint8_t *vb;
	size_t vlen;
	assert_int_equal(ms_sums_serialize(var, &vb, &vlen), 0);
	assert_int_equal(parse(vb, vlen), 0);
	vb[16 + 48] = 99; /* first length 100 -> 99 */
	reseal(vb, vlen);
	assert_int_equal(parse(vb, vlen), MS_ECORRUPT);
	vb[16 + 48] = 0; /* a zero-length block */
	reseal(vb, vlen);
	assert_int_equal(parse(vb, vlen), MS_ECORRUPT);
	free(vb);
	ms_frame_table_free(t);
	ms_sums_unref(var);
	free(dup);
	ms_sums_unref(two);
	free(b);
	free(good);
	ms_sums_unref(sums);
	free(data);
}

/* ---- the checking store ---- */

struct fixture {
	char *dir;
	struct ms_store *fs, *faulty, *store; /* store: verified over faulty over fs */
	uint8_t *data;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	int err;
	f->fs = ms_store_fs_new(f->dir, &err);
	assert_non_null(f->fs);
	f->faulty = ms_store_faulty_new(f->fs);
	f->store = ms_store_verified_new(f->faulty, false);
	f->data = pattern(SIZE, 3);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_store_free(f->store);
	ms_store_free(f->faulty);
	ms_store_free(f->fs);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f->data);
	free(f);
	return 0;
}

/* Puts ID/memfile and ID/snapfile, their table, and a header. */
static void publish(struct fixture *f, bool with_sums)
{
	assert_int_equal(ms_store_put_buf(f->fs, ID "/memfile", f->data, SIZE, NULL), 0);
	assert_int_equal(ms_store_put_buf(f->fs, ID "/snapfile", "vcpu state", 10, NULL), 0);
	if (with_sums) {
		struct ms_sums *sums = ms_sums_new();
		assert_int_equal(ms_sums_add_buf(sums, "memfile", f->data, SIZE, BLOCK), 0);
		assert_int_equal(ms_sums_add_buf(sums, "snapfile", "vcpu state", 10, 0), 0);
		uint8_t *buf;
		size_t len;
		assert_int_equal(ms_sums_serialize(sums, &buf, &len), 0);
		assert_int_equal(ms_store_put_buf(f->store, ID "/checksums", buf, len, NULL), 0);
		free(buf);
		ms_sums_unref(sums);
	}
	assert_int_equal(ms_store_put_buf(f->fs, ID "/memfile.header", "h", 1, NULL), 0);
}

/* Overwrites byte off of the stored key with its value xor mask (a file store: a file). */
static void flip(struct fixture *f, const char *key, uint64_t off, uint8_t mask)
{
	char path[1200];
	snprintf(path, sizeof(path), "%s/%s", f->dir, key);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= mask;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static uint64_t failures(enum ms_integrity_object o)
{
	return ms_integrity_failures(o);
}

static void test_reads_check_every_block(void **state)
{
	struct fixture *f = *state;
	publish(f, true);
	uint8_t *buf = malloc(SIZE);
	size_t got = 0;
	/* aligned, unaligned, the short tail, past the end */
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, SIZE, &got), 0);
	assert_int_equal(got, SIZE);
	assert_memory_equal(buf, f->data, SIZE);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 100, buf, 3 * BLOCK, &got),
			 0);
	assert_int_equal(got, 3 * BLOCK);
	assert_memory_equal(buf, f->data + 100, 3 * BLOCK);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", SIZE - 10, buf, 100, &got),
			 0);
	assert_int_equal(got, 10);
	assert_memory_equal(buf, f->data + SIZE - 10, 10);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", SIZE + 5, buf, 100, &got), 0);
	assert_int_equal(got, 0);
	void *all;
	size_t len;
	assert_int_equal(ms_store_read_all(f->store, ID "/snapfile", 100, &all, &len), 0);
	assert_int_equal(len, 10);
	free(all);

	/* one flipped byte: the block that holds it fails twice, the read fails */
	uint64_t before = failures(MS_INTEGRITY_MEMFILE);
	flip(f, ID "/memfile", 2 * BLOCK + 5, 0x10);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, SIZE, &got),
			 MS_ECHECKSUM);
	assert_int_equal(failures(MS_INTEGRITY_MEMFILE), before + 1); /* one read, once */
	/* blocks that do not hold it still read */
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 3 * BLOCK, buf, BLOCK, &got),
			 0);
	assert_memory_equal(buf, f->data + 3 * BLOCK, BLOCK);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 2 * BLOCK + 5, buf, 1, &got),
			 MS_ECHECKSUM);
	flip(f, ID "/memfile", 2 * BLOCK + 5, 0x10);

	/* the snapfile the same way, through read_all */
	before = failures(MS_INTEGRITY_SNAPFILE);
	flip(f, ID "/snapfile", 9, 0x01);
	assert_int_equal(ms_store_read_all(f->store, ID "/snapfile", 100, &all, &len),
			 MS_ECHECKSUM);
	assert_int_equal(failures(MS_INTEGRITY_SNAPFILE), before + 1);
	free(buf);
}

static void test_truncated_object_fails(void **state)
{
	struct fixture *f = *state;
	publish(f, true);
	char path[1200];
	snprintf(path, sizeof(path), "%s/" ID "/memfile", f->dir);
	assert_int_equal(truncate(path, SIZE - 3), 0);
	uint8_t *buf = malloc(SIZE);
	size_t got;
	uint64_t before = failures(MS_INTEGRITY_MEMFILE);
	assert_int_equal(
	    ms_store_read_range(f->store, ID "/memfile", 4 * BLOCK, buf, 2 * BLOCK, &got),
	    MS_ECHECKSUM);
	void *all;
	size_t len;
	assert_int_equal(ms_store_read_all(f->store, ID "/memfile", SIZE, &all, &len),
			 MS_ECHECKSUM);
	assert_int_equal(failures(MS_INTEGRITY_MEMFILE), before + 2);
	/* what is still whole reads */
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, BLOCK, &got), 0);
	free(buf);
}

static void test_corruption_once_is_fetched_again(void **state)
{
	struct fixture *f = *state;
	publish(f, true);
	uint8_t *buf = malloc(SIZE);
	size_t got;
	/* load the table first, so that the next read is the data's */
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, 1, &got), 0);
	uint64_t before = failures(MS_INTEGRITY_MEMFILE);
	ms_store_faulty_inject(f->faulty, MS_FAULTY_READ, 1, MS_FAULTY_CORRUPT, 0, 0);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, SIZE, &got), 0);
	assert_memory_equal(buf, f->data, SIZE);
	assert_int_equal(failures(MS_INTEGRITY_MEMFILE), before + 1);
	/* a truncated fetch, once: the same */
	ms_store_faulty_inject(f->faulty, MS_FAULTY_READ, 1, MS_FAULTY_TRUNCATE, 0, 0);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", BLOCK, buf, 2 * BLOCK, &got),
			 0);
	assert_memory_equal(buf, f->data + BLOCK, 2 * BLOCK);
	assert_int_equal(failures(MS_INTEGRITY_MEMFILE), before + 2);
	free(buf);
}

static void test_corrupt_table_fails_every_read(void **state)
{
	struct fixture *f = *state;
	publish(f, true);
	flip(f, ID "/checksums", 30, 0x04);
	uint8_t buf[64];
	size_t got;
	uint64_t before = failures(MS_INTEGRITY_CHECKSUMS);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, sizeof(buf), &got),
			 MS_ECHECKSUM);
	assert_int_equal(failures(MS_INTEGRITY_CHECKSUMS), before + 1);
	/* a table corrupt once on the wire is fetched again */
	flip(f, ID "/checksums", 30, 0x04);
	ms_store_faulty_inject(f->faulty, MS_FAULTY_READ, 1, MS_FAULTY_CORRUPT, 0, 0);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, sizeof(buf), &got),
			 0);
	assert_memory_equal(buf, f->data, sizeof(buf));
	assert_int_equal(failures(MS_INTEGRITY_CHECKSUMS), before + 2);
}

static void test_builds_without_table(void **state)
{
	struct fixture *f = *state;
	publish(f, false); /* an older build: header, no table */
	flip(f, ID "/memfile", 7, 0xff);
	uint8_t buf[16];
	size_t got;
	uint64_t before = failures(MS_INTEGRITY_MEMFILE);
	/* read unverified (as before checksums), and remembered: one look for the table */
	unsigned calls = ms_store_faulty_calls(f->faulty, MS_FAULTY_ANY);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, 16, &got), 0);
	assert_int_equal(buf[7], (uint8_t)(f->data[7] ^ 0xff));
	unsigned first = ms_store_faulty_calls(f->faulty, MS_FAULTY_ANY) - calls;
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, 16, &got), 0);
	assert_int_equal(ms_store_faulty_calls(f->faulty, MS_FAULTY_ANY) - calls, first + 1);
	assert_int_equal(failures(MS_INTEGRITY_MEMFILE), before);
	/* keys that are no build's object pass through */
	assert_int_equal(ms_store_put_buf(f->store, "peers/" ID, "{}", 2, NULL), 0);
	assert_int_equal(ms_store_read_range(f->store, "peers/" ID, 0, buf, 2, &got), 0);
	assert_int_equal(got, 2);
	/* a table put later (through the wrapper) is seen */
	struct ms_sums *sums = ms_sums_new();
	assert_int_equal(ms_sums_add_buf(sums, "memfile", f->data, SIZE, BLOCK), 0);
	uint8_t *table;
	size_t len;
	assert_int_equal(ms_sums_serialize(sums, &table, &len), 0);
	assert_int_equal(ms_store_put_buf(f->store, ID "/checksums", table, len, NULL), 0);
	assert_int_equal(ms_store_read_range(f->store, ID "/memfile", 0, buf, 16, &got),
			 MS_ECHECKSUM);
	assert_ptr_equal(ms_store_unverified(f->store), f->faulty);
	assert_ptr_equal(ms_store_unverified(f->fs), f->fs);
	free(table);
	ms_sums_unref(sums);
}

/* ---- many readers, more builds than the cache holds ---- */

#define MANY_BUILDS 300 /* > the checking store's cache of 256 tables: entries are evicted */
#define READERS	    4

struct readers {
	struct fixture *f;
	char keys[MANY_BUILDS][80];
	unsigned seed;
	atomic_int bad;
};

static void *reader_main(void *arg)
{
	struct readers *r = arg;
	unsigned seed = __atomic_add_fetch(&r->seed, 7919, __ATOMIC_RELAXED);
	uint8_t *buf = malloc(SIZE);
	for (int i = 0; i < 1500; i++) {
		seed = seed * 1103515245u + 12345u;
		unsigned b = (seed >> 8) % MANY_BUILDS;
		uint64_t off = (seed >> 4) % SIZE, len = 1 + (seed >> 12) % (SIZE - off);
		size_t got = 0;
		if (ms_store_read_range(r->f->store, r->keys[b], off, buf, len, &got) ||
		    got != len || memcmp(buf, r->f->data + off, len) != 0)
			atomic_fetch_add(&r->bad, 1);
	}
	free(buf);
	return NULL;
}

static void test_concurrent_readers_and_eviction(void **state)
{
	struct fixture *f = *state;
	struct readers *r = calloc(1, sizeof(*r));
	r->f = f;
	struct ms_sums *sums = ms_sums_new();
	assert_int_equal(ms_sums_add_buf(sums, "memfile", f->data, SIZE, BLOCK), 0);
	uint8_t *table;
	size_t len;
	assert_int_equal(ms_sums_serialize(sums, &table, &len), 0);
	for (unsigned b = 0; b < MANY_BUILDS; b++) {
		ms_uuid id;
		char text[MS_UUID_STR_LEN], key[80];
		ms_uuid_generate(&id);
		ms_uuid_format(&id, text);
		snprintf(r->keys[b], sizeof(r->keys[b]), "%s/memfile", text);
		assert_int_equal(ms_store_put_buf(f->fs, r->keys[b], f->data, SIZE, NULL), 0);
		snprintf(key, sizeof(key), "%s/checksums", text);
		assert_int_equal(ms_store_put_buf(f->fs, key, table, len, NULL), 0);
	}
	pthread_t threads[READERS];
	for (int t = 0; t < READERS; t++)
		assert_int_equal(pthread_create(&threads[t], NULL, reader_main, r), 0);
	for (int t = 0; t < READERS; t++)
		pthread_join(threads[t], NULL);
	assert_int_equal(atomic_load(&r->bad), 0);
	free(table);
	ms_sums_unref(sums);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_is_xxh3),
	    cmocka_unit_test(test_roundtrip_and_check),
	    cmocka_unit_test(test_parser_refuses),
	    cmocka_unit_test(test_copy_and_check_fd),
	    cmocka_unit_test_setup_teardown(test_reads_check_every_block, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncated_object_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corruption_once_is_fetched_again, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_table_fails_every_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_builds_without_table, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_readers_and_eviction, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
