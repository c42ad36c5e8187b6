/*
 * test_chunker.c - chunked fetch sessions over a real fs store: one fetch per chunk
 * under 16 concurrent readers, progressive wake-up, abandoned readers, failures that
 * mark nothing, the hard timeout, compressed frames and their checksums; read-ahead
 * along a stream (right bytes, one fetch per chunk, its errors never fail a read
 * that did not need them) and close while read-ahead fetches are in flight.
 */
#include "ms_test.h"
#include "cache/chunker.h"
#include "storage/frames.h"
#include "storage/store.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define MIB	    (1u << 20)
#define CHUNK	    (4u * MIB)
#define SUBREAD	    (256u << 10)
#define MAX_ORIGINS 64

/* ---- a wrapper store that counts, fails, delays and gates reads ---- */

struct test_store {
	struct ms_store base;
	struct ms_store *inner;
	uint64_t origin_unit; /* reads starting at a multiple count as fetches */
	atomic_uint origin_reads[MAX_ORIGINS];
	atomic_ullong bytes;
	atomic_uint calls;
	unsigned fail_call;	/* 1-based call number that fails with -EIO */
	int64_t sleep_first_ns; /* the first call sleeps this long */
	int64_t delay_ns;	/* every call sleeps this long */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_cond;
	bool gate_closed; /* reads at off >= gate_from wait while closed */
	uint64_t gate_from;
	atomic_int fail_budget; /* this many reads in [fail_from, fail_to) fail with -EIO */
	uint64_t fail_from, fail_to;
};

static struct test_store *ts_of(struct ms_store *store)
{
	return (struct test_store *)store;
}

static int ts_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
		      const struct ms_store_meta *meta)
{
	return ms_store_put_buf(ts_of(store)->inner, key, buf, len, meta);
}

static int ts_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
			 size_t len, size_t *got)
{
	struct test_store *ts = ts_of(store);
	unsigned call = atomic_fetch_add(&ts->calls, 1) + 1;
	if (call == 1 && ts->sleep_first_ns)
		ms_clock_sleep_ns(ts->sleep_first_ns);
	if (ts->delay_ns)
		ms_clock_sleep_ns(ts->delay_ns);
	pthread_mutex_lock(&ts->gate_lock);
	while (ts->gate_closed && off >= ts->gate_from)
		pthread_cond_wait(&ts->gate_cond, &ts->gate_lock);
	pthread_mutex_unlock(&ts->gate_lock);
	if (ts->fail_call && call == ts->fail_call)
		return -EIO;
	if (off >= ts->fail_from && off < ts->fail_to && atomic_fetch_sub(&ts->fail_budget, 1) > 0)
		return -EIO;
	if (off % ts->origin_unit == 0 && off / ts->origin_unit < MAX_ORIGINS)
		atomic_fetch_add(&ts->origin_reads[off / ts->origin_unit], 1);
	int err = ms_store_read_range(ts->inner, key, off, dst, len, got);
	if (!err)
		atomic_fetch_add(&ts->bytes, *got);
	return err;
}

static int ts_size(struct ms_store *store, const char *key, uint64_t *size)
{
	return ms_store_size(ts_of(store)->inner, key, size);
}

static void ts_free(struct ms_store *store)
{
	(void)store; /* owned by the test */
}

static const struct ms_store_ops ts_ops = {
    .name = "test",
    .put_buf = ts_put_buf,
    .read_range = ts_read_range,
    .size = ts_size,
    .free = ts_free,
};

static void ts_gate(struct test_store *ts, bool closed, uint64_t from)
{
	pthread_mutex_lock(&ts->gate_lock);
	ts->gate_closed = closed;
	ts->gate_from = from;
	pthread_cond_broadcast(&ts->gate_cond);
	pthread_mutex_unlock(&ts->gate_lock);
}

/* ---- fixture ---- */

struct fixture {
	char *dir;
	struct ms_store *fs;
	struct test_store ts;
	unsigned char *data;
	size_t size;
	unsigned cache_seq;
};

static unsigned char *make_data(size_t len, uint64_t seed)
{
	unsigned char *d = malloc(len);
	uint64_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		if (i % 8 == 0)
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		/* Compressible but not trivial: runs of a value, then noise. */
		d[i] = (i / 4096) % 3 == 0 ? (unsigned char)(i / 4096) : (unsigned char)(x >> 56);
	}
	return d;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	char *objects = NULL;
	assert_true(asprintf(&objects, "%s/objects", f->dir) > 0);
	int err = 0;
	f->fs = ms_store_fs_new(objects, &err);
	free(objects);
	assert_non_null(f->fs);
	f->ts.base.ops = &ts_ops;
	f->ts.inner = f->fs;
	f->ts.origin_unit = CHUNK;
	pthread_mutex_init(&f->ts.gate_lock, NULL);
	pthread_cond_init(&f->ts.gate_cond, NULL);
	f->size = 20 * MIB + 12345; /* 5 full chunks and a short last one */
	f->data = make_data(f->size, 7);
	assert_int_equal(ms_store_put_buf(f->fs, "b1/memfile", f->data, f->size, NULL), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	pthread_mutex_destroy(&f->ts.gate_lock);
	pthread_cond_destroy(&f->ts.gate_cond);
	ms_store_free(f->fs);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f->data);
	free(f);
	return 0;
}

static char *cache_path(struct fixture *f)
{
	char *path = NULL;
	assert_true(asprintf(&path, "%s/cache-%u", f->dir, f->cache_seq++) > 0);
	return path;
}

static struct ms_source *open_chunker(struct fixture *f, const char *key, uint64_t size,
				      const struct ms_frame_table *frames,
				      const struct ms_chunker_config *cfg)
{
	char *path = cache_path(f);
	int err = 0;
	struct ms_source *src = ms_chunker_new(&f->ts.base, key, size, frames, path, cfg, &err);
	assert_int_equal(err, 0);
	assert_non_null(src);
	free(path);
	return src;
}

/* A waiter wakes when its bytes are in; the session marks the chunk just after. */
static bool wait_cached(struct ms_source *src, uint64_t off, uint64_t len)
{
	int64_t until = ms_clock_now_ns() + 10 * MS_NSEC_PER_SEC;
	while (!ms_source_is_cached(src, off, len) && ms_clock_now_ns() < until)
		ms_clock_sleep_ns(MS_NSEC_PER_MSEC);
	return ms_source_is_cached(src, off, len);
}

/* ---- concurrent readers ---- */

struct reader_arg {
	struct ms_source *src;
	const unsigned char *data;
	size_t size;
	unsigned seed;
	atomic_int *failures;
};

static void *reader(void *p)
{
	struct reader_arg *arg = p;
	unsigned char *buf = malloc(6 * MIB);
	uint64_t x = arg->seed * 0x9E3779B97F4A7C15ULL + 3;
	for (int i = 0; i < 12; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t off = x % arg->size;
		size_t len = (size_t)((x >> 20) % (6 * MIB)) + 1;
		if (len > arg->size - off)
			len = arg->size - off;
		int err = ms_source_read(arg->src, buf, off, len);
		if (err || memcmp(buf, arg->data + off, len) != 0)
			atomic_fetch_add(arg->failures, 1);
	}
	free(buf);
	return NULL;
}

static void test_concurrent_one_fetch_per_chunk(void **state)
{
	struct fixture *f = *state;
	f->ts.delay_ns = 500 * 1000; /* readers pile up on in-flight sessions */
	struct ms_chunker_config cfg = {.chunk_size = CHUNK, .read_size = SUBREAD};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	assert_true(ms_source_is_chunker(src));
	assert_false(ms_source_is_cached(src, 0, 1));

	enum { THREADS = 16 };
	pthread_t threads[THREADS];
	struct reader_arg args[THREADS];
	atomic_int failures = 0;
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct reader_arg){src, f->data, f->size, (unsigned)i + 1, &failures};
		assert_int_equal(pthread_create(&threads[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	assert_int_equal(atomic_load(&failures), 0);

	/* Read everything once more so every chunk is surely fetched, then count. */
	unsigned char *all = malloc(f->size);
	assert_int_equal(ms_source_read(src, all, 0, f->size), 0);
	assert_memory_equal(all, f->data, f->size);
	free(all);
	unsigned chunks = (unsigned)((f->size + CHUNK - 1) / CHUNK);
	for (unsigned c = 0; c < chunks; c++)
		assert_int_equal(atomic_load(&f->ts.origin_reads[c]), 1);
	assert_int_equal(atomic_load(&f->ts.bytes), f->size);
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.sessions, chunks);
	assert_int_equal(stats.failures, 0);
	assert_int_equal(stats.fetched_bytes, f->size);
	assert_true(wait_cached(src, 0, f->size));
	assert_true(ms_source_disk_bytes(src) >= f->size);

	/* A cached read does no I/O; a zero-copy slice works. */
	unsigned calls = atomic_load(&f->ts.calls);
	const void *ptr = NULL;
	assert_int_equal(ms_source_slice(src, 5 * MIB, MIB, &ptr), 0);
	assert_memory_equal(ptr, f->data + 5 * MIB, MIB);
	assert_int_equal(atomic_load(&f->ts.calls), calls);
	ms_source_unref(src);
}

/* ---- progressive wake-up and abandoned readers ---- */

struct bg_read {
	struct ms_source *src;
	uint64_t off;
	size_t len;
	unsigned char *buf;
	int64_t deadline_ns;
	int err;
	atomic_bool finished;
};

static void *bg_reader(void *p)
{
	struct bg_read *r = p;
	r->err = ms_chunker_read_deadline(r->src, r->buf, r->off, r->len, r->deadline_ns);
	atomic_store(&r->finished, true);
	return NULL;
}

static bool wait_for(atomic_bool *flag, int64_t timeout_ns)
{
	int64_t until = ms_clock_now_ns() + timeout_ns;
	while (!atomic_load(flag) && ms_clock_now_ns() < until)
		ms_clock_sleep_ns(MS_NSEC_PER_MSEC);
	return atomic_load(flag);
}

static void test_progressive_wakeup(void **state)
{
	struct fixture *f = *state;
	struct ms_chunker_config cfg = {.chunk_size = CHUNK, .read_size = SUBREAD};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	/* Everything after the first sub-read of chunk 1 waits behind the gate. */
	ts_gate(&f->ts, true, CHUNK + SUBREAD);
	struct bg_read r = {.src = src, .off = CHUNK + 1000, .len = 5000, .deadline_ns = INT64_MAX};
	r.buf = malloc(r.len);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, bg_reader, &r), 0);
	/* The reader returns while the chunk is still incomplete. */
	assert_true(wait_for(&r.finished, 10 * MS_NSEC_PER_SEC));
	pthread_join(t, NULL);
	assert_int_equal(r.err, 0);
	assert_memory_equal(r.buf, f->data + r.off, r.len);
	/* The piece that landed is present at once; the rest of the chunk is not. */
	bool first_piece = ms_source_is_cached(src, CHUNK, SUBREAD);
	bool whole_chunk = ms_source_is_cached(src, CHUNK, CHUNK);
	ts_gate(&f->ts, false, 0);
	assert_true(first_piece);
	assert_false(whole_chunk);
	unsigned char *buf = malloc(CHUNK);
	assert_int_equal(ms_source_read(src, buf, CHUNK, CHUNK), 0);
	assert_memory_equal(buf, f->data + CHUNK, CHUNK);
	assert_true(wait_cached(src, CHUNK, CHUNK));
	assert_int_equal(atomic_load(&f->ts.origin_reads[1]), 1);
	free(buf);
	free(r.buf);
	ms_source_unref(src);
}

static void test_abandoned_reader(void **state)
{
	struct fixture *f = *state;
	/* Read-ahead off: this counts the sessions of one chunk. */
	struct ms_chunker_config cfg = {
	    .chunk_size = CHUNK, .read_size = SUBREAD, .readahead = MS_CHUNK_READAHEAD_OFF};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	ts_gate(&f->ts, true, 0);
	unsigned char *buf = malloc(CHUNK);
	int64_t start = ms_clock_now_ns();
	assert_int_equal(
	    ms_chunker_read_deadline(src, buf, 100, 4096, start + 50 * MS_NSEC_PER_MSEC),
	    -ETIMEDOUT);
	assert_true(ms_clock_now_ns() - start < 5 * MS_NSEC_PER_SEC);
	/* The fetch goes on without any reader and fills the cache. */
	ts_gate(&f->ts, false, 0);
	int64_t until = ms_clock_now_ns() + 10 * MS_NSEC_PER_SEC;
	while (!ms_source_is_cached(src, 0, CHUNK) && ms_clock_now_ns() < until)
		ms_clock_sleep_ns(MS_NSEC_PER_MSEC);
	assert_true(ms_source_is_cached(src, 0, CHUNK));
	unsigned calls = atomic_load(&f->ts.calls);
	assert_int_equal(ms_source_read(src, buf, 0, CHUNK), 0);
	assert_memory_equal(buf, f->data, CHUNK);
	assert_int_equal(atomic_load(&f->ts.calls), calls); /* served from the cache */
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.sessions, 1);
	assert_int_equal(atomic_load(&f->ts.origin_reads[0]), 1);
	assert_int_equal(ms_chunker_read_deadline(src, buf, 0, 1, 0), 0); /* cached: no wait */
	free(buf);
	ms_source_unref(src);
}

/* ---- failures ---- */

static void test_failure_keeps_landed_pieces_then_retry(void **state)
{
	struct fixture *f = *state;
	/* One lane, no read-ahead: the third store call is the third piece of chunk 0. */
	struct ms_chunker_config cfg = {.chunk_size = CHUNK,
					.read_size = SUBREAD,
					.parallel = 1,
					.readahead = MS_CHUNK_READAHEAD_OFF};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	f->ts.fail_call = 3; /* two sub-reads land in the file, then the store fails */
	unsigned char *buf = malloc(CHUNK);
	assert_int_equal(ms_source_read(src, buf, 0, CHUNK), -EIO);
	/* The two pieces that landed stay present; nothing after them is. */
	assert_true(ms_source_is_cached(src, 0, 2 * SUBREAD));
	assert_false(ms_source_is_cached(src, 2 * SUBREAD, 1));
	assert_false(ms_source_is_cached(src, 0, CHUNK));
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.failures, 1);
	assert_int_equal(stats.fetched_bytes, 2 * SUBREAD);
	/* The next read starts a fresh session that fetches only the missing pieces. */
	memset(buf, 0, CHUNK);
	assert_int_equal(ms_source_read(src, buf, 0, CHUNK), 0);
	assert_memory_equal(buf, f->data, CHUNK);
	assert_true(wait_cached(src, 0, CHUNK));
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.sessions, 2);
	assert_int_equal(stats.fetched_bytes, CHUNK);
	free(buf);
	ms_source_unref(src);
}

static void test_short_object_is_corrupt(void **state)
{
	struct fixture *f = *state;
	/* The caller believes the object is longer than it is. */
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size + 2 * MIB, NULL, NULL);
	unsigned char buf[4096];
	assert_int_equal(ms_source_read(src, buf, f->size + 100, sizeof(buf)), MS_ECORRUPT);
	assert_false(ms_source_is_cached(src, f->size - 1, 1));
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), 0);
	assert_memory_equal(buf, f->data, sizeof(buf));
	ms_source_unref(src);

	src = open_chunker(f, "b1/missing", MIB, NULL, NULL);
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), MS_ENOTFOUND);
	ms_source_unref(src);
}

static void test_timeout_on_hanging_store(void **state)
{
	struct fixture *f = *state;
	f->ts.sleep_first_ns = 1500 * MS_NSEC_PER_MSEC; /* the first store call hangs */
	struct ms_chunker_config cfg = {.fetch_timeout_ns = 100 * MS_NSEC_PER_MSEC,
					.readahead = MS_CHUNK_READAHEAD_OFF};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	unsigned char buf[8192];
	int64_t start = ms_clock_now_ns();
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), -ETIMEDOUT);
	int64_t took = ms_clock_now_ns() - start;
	assert_true(took >= 90 * MS_NSEC_PER_MSEC);
	assert_true(took < 1000 * MS_NSEC_PER_MSEC); /* not the store's 1.5 s */
	assert_false(ms_source_is_cached(src, 0, 1));
	/* A later read starts a fresh session that works. */
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), 0);
	assert_memory_equal(buf, f->data, sizeof(buf));
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.timeouts, 1);
	assert_int_equal(stats.sessions, 2);
	ms_source_unref(src); /* joins the thread still stuck in the store */
}

static void test_close_fails_reads_and_removes_file(void **state)
{
	struct fixture *f = *state;
	char *path = cache_path(f);
	int err = 0;
	/* Read-ahead off: chunk 2 must still be missing when the reader asks for it. */
	struct ms_chunker_config cfg = {.readahead = MS_CHUNK_READAHEAD_OFF};
	struct ms_source *src =
	    ms_chunker_new(&f->ts.base, "b1/memfile", f->size, NULL, path, &cfg, &err);
	assert_non_null(src);
	unsigned char buf[4096];
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), 0);
	assert_int_equal(access(path, F_OK), 0);
	/* A reader waiting on a session when the source closes gets MS_ECLOSED. */
	ts_gate(&f->ts, true, 0);
	struct bg_read r = {.src = src, .off = 2 * CHUNK, .len = 100, .deadline_ns = INT64_MAX};
	r.buf = malloc(r.len);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, bg_reader, &r), 0);
	ms_clock_sleep_ns(20 * MS_NSEC_PER_MSEC);
	ms_source_close(src);
	pthread_join(t, NULL);
	/* Either it was already waiting (MS_ECLOSED from the session) or it saw the flag. */
	assert_int_equal(r.err, MS_ECLOSED);
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), MS_ECLOSED);
	assert_int_equal(access(path, F_OK), -1);
	ts_gate(&f->ts, false, 0);
	free(r.buf);
	free(path);
	ms_source_unref(src);
}

static void test_bad_arguments(void **state)
{
	struct fixture *f = *state;
	char *path = cache_path(f);
	int err = 0;
	struct ms_chunker_config odd = {.chunk_size = CHUNK + 100};
	assert_null(ms_chunker_new(&f->ts.base, "b1/memfile", f->size, NULL, path, &odd, &err));
	assert_int_equal(err, -EINVAL);
	assert_null(ms_chunker_new(&f->ts.base, "/abs", f->size, NULL, path, NULL, &err));
	assert_int_equal(err, -EINVAL);
	struct ms_frame_table *ft = ms_frame_table_new(MS_COMPRESS_ZSTD);
	assert_int_equal(ms_frame_table_append(ft, 6000, 100), 0); /* not block-aligned */
	assert_int_equal(ms_frame_table_append(ft, 4096, 100), 0);
	assert_null(ms_chunker_new(&f->ts.base, "b1/memfile", 10096, ft, path, NULL, &err));
	assert_int_equal(err, MS_ECORRUPT);
	/* Frames that do not cover the size. */
	assert_null(ms_chunker_new(&f->ts.base, "b1/memfile", 20000, ft, path, NULL, &err));
	assert_int_equal(err, MS_ECORRUPT);
	ms_frame_table_free(ft);
	assert_int_equal(access(path, F_OK), -1); /* nothing left behind */
	struct ms_source *src =
	    ms_chunker_new(&f->ts.base, "b1/memfile", f->size, NULL, path, NULL, &err);
	assert_non_null(src);
	unsigned char buf[16];
	assert_int_equal(ms_source_read(src, buf, f->size - 8, 16), -ERANGE);
	assert_int_equal(ms_chunker_read_deadline(src, buf, f->size, 1, INT64_MAX), -ERANGE);
	ms_source_unref(src);
	struct ms_source *z = ms_source_zero_new(10);
	assert_int_equal(ms_chunker_read_deadline(z, buf, 0, 1, INT64_MAX), -EINVAL);
	ms_source_unref(z);
	free(path);
}

/* ---- read-ahead ---- */

static void test_readahead_stream(void **state)
{
	struct fixture *f = *state;
	struct ms_chunker_config cfg = {.chunk_size = CHUNK, .read_size = SUBREAD, .readahead = 2};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	unsigned char buf[65536];
	/* The first read of chunk 0 fetches chunks 1 and 2 that nobody asked for yet. */
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), 0);
	assert_memory_equal(buf, f->data, sizeof(buf));
	assert_true(wait_cached(src, CHUNK, 2 * CHUNK));
	assert_false(ms_source_is_cached(src, 3 * CHUNK, 1));
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.readahead, 2);
	/* Reading on through chunk 1 (cached) slides the window: chunk 3 comes. */
	assert_int_equal(ms_source_read(src, buf, CHUNK + 4096, sizeof(buf)), 0);
	assert_memory_equal(buf, f->data + CHUNK + 4096, sizeof(buf));
	assert_true(wait_cached(src, 3 * CHUNK, CHUNK));
	/* The whole stream, 64 KiB at a time, every read against the model. */
	for (uint64_t off = 0; off < f->size; off += sizeof(buf)) {
		size_t n = f->size - off < sizeof(buf) ? f->size - off : sizeof(buf);
		assert_int_equal(ms_source_read(src, buf, off, n), 0);
		assert_memory_equal(buf, f->data + off, n);
	}
	unsigned chunks = (unsigned)((f->size + CHUNK - 1) / CHUNK);
	for (unsigned c = 0; c < chunks; c++)
		assert_int_equal(atomic_load(&f->ts.origin_reads[c]), 1); /* one fetch each */
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.sessions, chunks);
	assert_int_equal(stats.readahead, chunks - 1); /* all but chunk 0 came ahead */
	assert_int_equal(stats.fetched_bytes, f->size);
	assert_int_equal(stats.failures, 0);
	ms_source_unref(src);
}

static void test_readahead_random_readers_see_the_model(void **state)
{
	struct fixture *f = *state;
	f->ts.delay_ns = 200 * 1000;
	/* Small chunks and pieces: many sessions, read-ahead and lanes in play at once. */
	struct ms_chunker_config cfg = {
	    .chunk_size = MIB, .read_size = 64 << 10, .parallel = 3, .readahead = 3};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	enum { THREADS = 8 };
	pthread_t threads[THREADS];
	struct reader_arg args[THREADS];
	atomic_int failures = 0;
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct reader_arg){src, f->data, f->size, (unsigned)i + 40, &failures};
		assert_int_equal(pthread_create(&threads[i], NULL, reader, &args[i]), 0);
	}
	/* A sequential reader alongside the random ones. */
	unsigned char *buf = malloc(3 * 4096);
	for (uint64_t off = 0; off < f->size; off += 3 * 4096) {
		size_t n = f->size - off < 3 * 4096 ? f->size - off : 3 * 4096;
		assert_int_equal(ms_source_read(src, buf, off, n), 0);
		assert_memory_equal(buf, f->data + off, n);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	assert_int_equal(atomic_load(&failures), 0);
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.fetched_bytes, f->size); /* every byte fetched once */
	assert_true(stats.readahead > 0);
	free(buf);
	ms_source_unref(src);
}

static void test_readahead_error_spares_reads_that_did_not_need_it(void **state)
{
	struct fixture *f = *state;
	struct ms_chunker_config cfg = {.chunk_size = CHUNK, .read_size = SUBREAD, .readahead = 2};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	/* Every read of chunk 1 fails: only its read-ahead needs it. */
	f->ts.fail_from = CHUNK;
	f->ts.fail_to = 2 * CHUNK;
	atomic_store(&f->ts.fail_budget, 1 << 20);
	unsigned char *buf = malloc(CHUNK);
	assert_int_equal(ms_source_read(src, buf, 0, CHUNK), 0);
	assert_memory_equal(buf, f->data, CHUNK);
	assert_true(wait_cached(src, 2 * CHUNK, CHUNK)); /* its neighbour came fine */
	struct ms_chunker_stats stats;
	int64_t until = ms_clock_now_ns() + 10 * MS_NSEC_PER_SEC;
	do {
		ms_chunker_get_stats(src, &stats);
	} while (stats.failures == 0 && ms_clock_now_ns() < until);
	assert_int_equal(stats.failures, 1);
	assert_false(ms_source_is_cached(src, CHUNK, 1));
	/* Reads of cached chunks around it go on working. */
	assert_int_equal(ms_source_read(src, buf, 2 * CHUNK + 100, 5000), 0);
	assert_memory_equal(buf, f->data + 2 * CHUNK + 100, 5000);
	/* Once the store is well again, chunk 1 is fetched afresh. */
	atomic_store(&f->ts.fail_budget, 0);
	assert_int_equal(ms_source_read(src, buf, CHUNK, CHUNK), 0);
	assert_memory_equal(buf, f->data + CHUNK, CHUNK);
	free(buf);
	ms_source_unref(src);
}

static void test_reader_that_joined_a_failed_readahead_retries(void **state)
{
	struct fixture *f = *state;
	/* One piece per chunk: the read-ahead of chunk 1 is one store call. */
	struct ms_chunker_config cfg = {
	    .chunk_size = CHUNK, .read_size = CHUNK, .parallel = 1, .readahead = 1};
	struct ms_source *src = open_chunker(f, "b1/memfile", f->size, NULL, &cfg);
	ts_gate(&f->ts, true, CHUNK); /* hold every read past chunk 0 */
	unsigned char buf[4096];
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), 0); /* read-ahead of 1 waits */
	struct bg_read r = {.src = src, .off = CHUNK + 5, .len = 3000, .deadline_ns = INT64_MAX};
	r.buf = malloc(r.len);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, bg_reader, &r), 0);
	ms_clock_sleep_ns(50 * MS_NSEC_PER_MSEC); /* the reader joins the read-ahead session */
	f->ts.fail_from = CHUNK;
	f->ts.fail_to = 2 * CHUNK;
	atomic_store(&f->ts.fail_budget, 1); /* the held read-ahead fails, the next call not */
	ts_gate(&f->ts, false, 0);
	assert_true(wait_for(&r.finished, 10 * MS_NSEC_PER_SEC));
	pthread_join(t, NULL);
	assert_int_equal(r.err, 0);
	assert_memory_equal(r.buf, f->data + r.off, r.len);
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.failures, 1);
	assert_int_equal(atomic_load(&f->ts.origin_reads[1]),
			 1); /* the failed call is not counted */
	free(r.buf);
	ms_source_unref(src);
}

struct delayed_gate {
	struct test_store *ts;
	int64_t delay_ns;
};

static void *open_gate_later(void *p)
{
	struct delayed_gate *g = p;
	ms_clock_sleep_ns(g->delay_ns);
	ts_gate(g->ts, false, 0);
	return NULL;
}

static void test_close_with_readahead_in_flight(void **state)
{
	struct fixture *f = *state;
	char *path = cache_path(f);
	int err = 0;
	struct ms_chunker_config cfg = {.chunk_size = CHUNK, .read_size = SUBREAD, .readahead = 4};
	struct ms_source *src =
	    ms_chunker_new(&f->ts.base, "b1/memfile", f->size, NULL, path, &cfg, &err);
	assert_non_null(src);
	ts_gate(&f->ts, true, CHUNK);
	unsigned char buf[4096];
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), 0);
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.readahead, 4); /* four sessions, their lanes held in the store */
	ms_source_close(src);
	assert_int_equal(ms_source_read(src, buf, CHUNK, sizeof(buf)), MS_ECLOSED);
	assert_int_equal(access(path, F_OK), -1);
	/* The last unref waits for the held store calls, then frees every session. */
	struct delayed_gate g = {&f->ts, 50 * MS_NSEC_PER_MSEC};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, open_gate_later, &g), 0);
	ms_source_unref(src);
	pthread_join(t, NULL);
	assert_false(atomic_load(&f->ts.bytes) > (uint64_t)(1 + 4 * 4) * SUBREAD + CHUNK);
	free(path);
}

/* ---- compressed frames ---- */

static void compressed_case(struct fixture *f, enum ms_compression type)
{
	size_t size = 10 * MIB + 3 * 4096;
	unsigned char *data = make_data(size, 11 + type);
	void *packed = NULL;
	size_t packed_len = 0;
	struct ms_frame_table *ft = NULL;
	assert_int_equal(
	    ms_frames_compress_buf(data, size, type, 0, 2 * MIB, &packed, &packed_len, &ft, NULL),
	    0);
	assert_int_equal(ft->count, 6);
	const char *key = type == MS_COMPRESS_ZSTD ? "b2/memfile.zstd" : "b2/memfile.lz4";
	assert_int_equal(ms_store_put_buf(f->fs, key, packed, packed_len, NULL), 0);
	memset(f->ts.origin_reads, 0, sizeof(f->ts.origin_reads));
	f->ts.origin_unit = 1; /* count reads per compressed start offset below */

	struct ms_source *src = open_chunker(f, key, size, ft, NULL);
	enum { THREADS = 8 };
	pthread_t threads[THREADS];
	struct reader_arg args[THREADS];
	atomic_int failures = 0;
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct reader_arg){src, data, size, (unsigned)i + 100, &failures};
		assert_int_equal(pthread_create(&threads[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	assert_int_equal(atomic_load(&failures), 0);
	unsigned char *all = malloc(size);
	assert_int_equal(ms_source_read(src, all, 0, size), 0);
	assert_memory_equal(all, data, size);
	free(all);
	struct ms_chunker_stats stats;
	ms_chunker_get_stats(src, &stats);
	assert_int_equal(stats.sessions, ft->count); /* one session per frame */
	assert_int_equal(stats.fetched_bytes, packed_len);
	ms_source_unref(src);

	/* A corrupt frame is neither served nor cached; its neighbours are fine. */
	unsigned char *bad = malloc(packed_len);
	memcpy(bad, packed, packed_len);
	const struct ms_frame *f1 = &ft->frames[1];
	bad[f1->start_c + f1->size_c / 2] ^= 0x5A;
	assert_int_equal(ms_store_put_buf(f->fs, "b3/memfile", bad, packed_len, NULL), 0);
	src = open_chunker(f, "b3/memfile", size, ft, NULL);
	unsigned char buf[4096];
	int err = ms_source_read(src, buf, (uint64_t)f1->start_u + 4096, sizeof(buf));
	assert_true(err == MS_ECHECKSUM || err == MS_ECORRUPT);
	assert_false(ms_source_is_cached(src, (uint64_t)f1->start_u, 1));
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), 0);
	assert_memory_equal(buf, data, sizeof(buf));
	assert_int_equal(ms_source_read(src, buf, (uint64_t)ft->frames[2].start_u, sizeof(buf)), 0);
	assert_memory_equal(buf, data + ft->frames[2].start_u, sizeof(buf));
	ms_source_unref(src);

	free(bad);
	free(packed);
	free(data);
	ms_frame_table_free(ft);
}

static void test_compressed_zstd(void **state)
{
	compressed_case(*state, MS_COMPRESS_ZSTD);
}

static void test_compressed_lz4(void **state)
{
	compressed_case(*state, MS_COMPRESS_LZ4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_concurrent_one_fetch_per_chunk, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_progressive_wakeup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abandoned_reader, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failure_keeps_landed_pieces_then_retry, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_short_object_is_corrupt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_on_hanging_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_fails_reads_and_removes_file, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readahead_stream, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readahead_random_readers_see_the_model, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_readahead_error_spares_reads_that_did_not_need_it,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reader_that_joined_a_failed_readahead_retries,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_with_readahead_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compressed_zstd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compressed_lz4, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
