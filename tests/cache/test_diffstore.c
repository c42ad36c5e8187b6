/*
 * test_diffstore.c - the diff store: single-flight creation, TTL, disk pressure,
 * pins, delayed delete and its cancellation, MS_ECLOSED for holders of an evicted
 * source, and a race of all of them against the background thread.
 */
#include "ms_test.h"
#include "cache/diffstore.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define MSEC MS_NSEC_PER_MSEC

/* ---- helpers ---- */

static char *tmp_file(const char *dir, const char *name, size_t size, unsigned char fill)
{
	char *path = NULL;
	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	unsigned char *buf = malloc(size);
	memset(buf, fill, size);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	free(buf);
	close(fd);
	return path;
}

static struct ms_source *file_source(const char *dir, const char *name, size_t size,
				     unsigned char fill)
{
	char *path = tmp_file(dir, name, size, fill);
	int err = 0;
	struct ms_source *src = ms_source_file_open(path, true, &err);
	assert_non_null(src);
	free(path);
	return src;
}

static bool file_exists(const char *dir, const char *name)
{
	char *path = NULL;
	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	bool exists = access(path, F_OK) == 0;
	free(path);
	return exists;
}

/* A usage function the tests drive. */
struct fake_disk {
	atomic_ullong total;
	atomic_ullong used;
	atomic_uint calls;
};

static int fake_usage(const char *dir, uint64_t *total, uint64_t *used, void *ctx)
{
	struct fake_disk *disk = ctx;
	atomic_fetch_add(&disk->calls, 1);
	*total = atomic_load(&disk->total);
	*used = atomic_load(&disk->used);
	return 0;
}

/* A clock the test moves by hand: TTL checks do not depend on how the machine schedules us. */
static int64_t fake_now(void *ctx)
{
	return atomic_load((atomic_llong *)ctx);
}

static struct ms_diffstore *store_new_clock(const char *dir, struct fake_disk *disk, int64_t ttl_ns,
					    int64_t delay_ns, bool thread, atomic_llong *clock)
{
	struct ms_diffstore_config cfg = {
	    .cache_dir = dir,
	    .ttl_ns = ttl_ns,
	    .delete_delay_ns = delay_ns,
	    .pressure_interval_ns = 5 * MSEC,
	    .usage_fn = disk ? fake_usage : NULL,
	    .usage_ctx = disk,
	    .no_thread = !thread,
	    .now_fn = clock ? fake_now : NULL,
	    .now_ctx = clock,
	};
	int err = 0;
	struct ms_diffstore *ds = ms_diffstore_new(&cfg, &err);
	assert_int_equal(err, 0);
	assert_non_null(ds);
	return ds;
}

static struct ms_diffstore *store_new(const char *dir, struct fake_disk *disk, int64_t ttl_ns,
				      int64_t delay_ns, bool thread)
{
	return store_new_clock(dir, disk, ttl_ns, delay_ns, thread, NULL);
}

/* ---- single-flight creation ---- */

struct create_ctx {
	atomic_int arrived;
	atomic_int calls;
	int threads;
	int result;
	const char *dir;
};

static int slow_create(const char *key, void *p, struct ms_source **out)
{
	struct create_ctx *ctx = p;
	atomic_fetch_add(&ctx->calls, 1);
	/* Hold the creation until every thread has asked, then a little more so that
	 * they are all waiting on it. */
	int64_t until = ms_clock_now_ns() + 10 * MS_NSEC_PER_SEC;
	while (atomic_load(&ctx->arrived) < ctx->threads && ms_clock_now_ns() < until)
		ms_clock_sleep_ns(MSEC);
	ms_clock_sleep_ns(50 * MSEC);
	if (ctx->result)
		return ctx->result;
	*out = ms_source_zero_new(4096);
	return *out ? 0 : -ENOMEM;
}

struct getter {
	pthread_t thread;
	struct ms_diffstore *ds;
	struct create_ctx *ctx;
	struct ms_source *src;
	int err;
};

static void *getter_run(void *p)
{
	struct getter *g = p;
	atomic_fetch_add(&g->ctx->arrived, 1);
	g->err = ms_diffstore_get_or_create(g->ds, "b1/memfile", slow_create, g->ctx, &g->src);
	return NULL;
}

static void run_getters(struct ms_diffstore *ds, struct create_ctx *ctx, struct getter *g, int n)
{
	ctx->threads = n;
	for (int i = 0; i < n; i++) {
		g[i] = (struct getter){.ds = ds, .ctx = ctx};
		assert_int_equal(pthread_create(&g[i].thread, NULL, getter_run, &g[i]), 0);
	}
	for (int i = 0; i < n; i++)
		pthread_join(g[i].thread, NULL);
}

static void test_get_or_create_once(void **state)
{
	char *dir = ms_test_tmpdir();
	struct ms_diffstore *ds = store_new(dir, NULL, 0, 0, false);
	enum { N = 12 };
	struct getter g[N];

	/* A failing creator: everyone gets its error, nothing is left. */
	struct create_ctx failing = {.result = -EIO, .dir = dir};
	run_getters(ds, &failing, g, N);
	assert_int_equal(atomic_load(&failing.calls), 1);
	for (int i = 0; i < N; i++) {
		assert_int_equal(g[i].err, -EIO);
		assert_null(g[i].src);
	}
	assert_false(ms_diffstore_contains(ds, "b1/memfile"));
	struct ms_source *src = NULL;
	assert_int_equal(ms_diffstore_get(ds, "b1/memfile", &src), MS_ENOTFOUND);

	/* A working creator: one call, one shared source. */
	struct create_ctx working = {.dir = dir};
	run_getters(ds, &working, g, N);
	assert_int_equal(atomic_load(&working.calls), 1);
	for (int i = 0; i < N; i++) {
		assert_int_equal(g[i].err, 0);
		assert_ptr_equal(g[i].src, g[0].src);
	}
	assert_int_equal(ms_diffstore_get(ds, "b1/memfile", &src), 0);
	assert_ptr_equal(src, g[0].src);
	ms_source_unref(src);
	for (int i = 0; i < N; i++)
		ms_source_unref(g[i].src);

	/* insert refuses a present key and takes its own reference. */
	struct ms_source *zero = ms_source_zero_new(10);
	assert_int_equal(ms_diffstore_insert(ds, "b1/memfile", zero), -EEXIST);
	assert_int_equal(ms_diffstore_insert(ds, "prov/memfile", zero), 0);
	ms_source_unref(zero);
	assert_int_equal(ms_diffstore_get(ds, "prov/memfile", &src), 0);
	assert_ptr_equal(src, zero);
	ms_source_unref(src);
	struct ms_diffstore_stats stats;
	ms_diffstore_get_stats(ds, &stats);
	assert_int_equal(stats.entries, 2);
	assert_int_equal(stats.bytes, 0); /* memory-backed sources count 0 */
	ms_diffstore_free(ds);
	ms_test_rmtree(dir);
	free(dir);
}

/* ---- TTL and delayed delete ---- */

static void test_ttl_and_delayed_delete(void **state)
{
	char *dir = ms_test_tmpdir();
	struct fake_disk disk = {.total = 1000, .used = 0};
	atomic_llong clock = 1000 * MSEC;
	struct ms_diffstore *ds = store_new_clock(dir, &disk, 80 * MSEC, 60 * MSEC, false, &clock);
	struct ms_source *src = file_source(dir, "b1-memfile", 8192, 0x11);
	assert_int_equal(ms_diffstore_insert(ds, "b1/memfile", src), 0);

	/* Accesses within the TTL keep it alive. */
	for (int i = 0; i < 4; i++) {
		atomic_fetch_add(&clock, 40 * MSEC);
		struct ms_source *got = NULL;
		assert_int_equal(ms_diffstore_get(ds, "b1/memfile", &got), 0);
		ms_source_unref(got);
		assert_int_equal(ms_diffstore_tick(ds), 0);
		assert_false(ms_diffstore_is_pending_delete(ds, "b1/memfile"));
	}
	/* Past the TTL: pending delete, not yet closed. */
	atomic_fetch_add(&clock, 100 * MSEC);
	ms_diffstore_tick(ds);
	assert_true(ms_diffstore_is_pending_delete(ds, "b1/memfile"));
	assert_false(ms_source_is_closed(src));
	/* An access before the delay revives it. */
	struct ms_source *got = NULL;
	assert_int_equal(ms_diffstore_get(ds, "b1/memfile", &got), 0);
	ms_source_unref(got);
	assert_false(ms_diffstore_is_pending_delete(ds, "b1/memfile"));
	atomic_fetch_add(&clock, 70 * MSEC); /* past the old delete time, within the new TTL */
	ms_diffstore_tick(ds);
	assert_true(ms_diffstore_contains(ds, "b1/memfile"));
	assert_false(ms_source_is_closed(src));

	/* Expire again and let the delay pass: closed, file gone, MS_ECLOSED for holders. */
	atomic_fetch_add(&clock, 100 * MSEC);
	ms_diffstore_tick(ds);
	assert_true(ms_diffstore_is_pending_delete(ds, "b1/memfile"));
	atomic_fetch_add(&clock, 80 * MSEC);
	ms_diffstore_tick(ds);
	assert_false(ms_diffstore_contains(ds, "b1/memfile"));
	assert_true(ms_source_is_closed(src));
	unsigned char buf[16];
	assert_int_equal(ms_source_read(src, buf, 0, sizeof(buf)), MS_ECLOSED);
	assert_false(file_exists(dir, "b1-memfile"));
	assert_int_equal(ms_diffstore_get(ds, "b1/memfile", &got), MS_ENOTFOUND);
	struct ms_diffstore_stats stats;
	ms_diffstore_get_stats(ds, &stats);
	assert_int_equal(stats.expirations, 2);
	assert_int_equal(stats.revivals, 1);
	assert_int_equal(stats.deletes, 1);
	assert_int_equal(stats.entries, 0);
	assert_int_equal(stats.pending_delete_bytes, 0);
	ms_source_unref(src);
	ms_diffstore_free(ds);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_background_thread_expires(void **state)
{
	char *dir = ms_test_tmpdir();
	struct fake_disk disk = {.total = 1000, .used = 0};
	struct ms_diffstore *ds = store_new(dir, &disk, 30 * MSEC, 20 * MSEC, true);
	struct ms_source *src = file_source(dir, "b2-memfile", 4096, 0x22);
	assert_int_equal(ms_diffstore_insert(ds, "b2/memfile", src), 0);
	int64_t until = ms_clock_now_ns() + 5 * MS_NSEC_PER_SEC;
	while (ms_diffstore_contains(ds, "b2/memfile") && ms_clock_now_ns() < until)
		ms_clock_sleep_ns(2 * MSEC);
	assert_false(ms_diffstore_contains(ds, "b2/memfile"));
	assert_true(ms_source_is_closed(src));
	assert_true(atomic_load(&disk.calls) > 0);
	ms_source_unref(src);
	ms_diffstore_free(ds);
	ms_test_rmtree(dir);
	free(dir);
}

/* ---- disk pressure and pins ---- */

static void test_pressure_evicts_closest_to_expiry_never_pinned(void **state)
{
	char *dir = ms_test_tmpdir();
	struct fake_disk disk = {.total = 0, .used = 0};
	struct ms_diffstore *ds = store_new(dir, &disk, 0, 0, false); /* 25 h TTL, 60 s delay */
	struct ms_source *a = file_source(dir, "a", 64 << 10, 1);
	struct ms_source *b = file_source(dir, "b", 64 << 10, 2);
	struct ms_source *c = file_source(dir, "c", 64 << 10, 3);
	struct ms_source *z = ms_source_zero_new(1 << 20);
	/* Inserted in this order, so their expiry is in this order. */
	assert_int_equal(ms_diffstore_insert(ds, "a/memfile", a), 0);
	ms_clock_sleep_ns(2 * MSEC);
	assert_int_equal(ms_diffstore_insert(ds, "b/memfile", b), 0);
	ms_clock_sleep_ns(2 * MSEC);
	assert_int_equal(ms_diffstore_insert(ds, "c/memfile", c), 0);
	ms_clock_sleep_ns(2 * MSEC);
	assert_int_equal(ms_diffstore_insert(ds, "z/memfile", z), 0);
	assert_int_equal(ms_diffstore_pin(ds, "a/memfile"), 0);

	uint64_t bb = ms_source_disk_bytes(b), cb = ms_source_disk_bytes(c);
	assert_true(bb > 0 && cb > 0);
	struct ms_diffstore_stats stats;
	ms_diffstore_get_stats(ds, &stats);
	assert_int_equal(stats.bytes, ms_source_disk_bytes(a) + bb + cb); /* z counts 0 */
	assert_int_equal(stats.pinned, 1);

	/* Under the threshold: nothing happens. */
	uint64_t total = 100 * bb;
	atomic_store(&disk.total, total);
	atomic_store(&disk.used, 80 * bb);
	assert_int_equal(ms_diffstore_tick(ds), 0);

	/* Over by half an entry: evicting one entry (its bytes become pending) is enough. */
	atomic_store(&disk.used, 85 * bb + bb / 2);
	assert_int_equal(ms_diffstore_tick(ds), 1);
	assert_false(ms_diffstore_is_pending_delete(ds, "a/memfile")); /* pinned */
	assert_true(ms_diffstore_is_pending_delete(ds, "b/memfile"));  /* closest unpinned */
	assert_false(ms_diffstore_is_pending_delete(ds, "c/memfile"));
	ms_diffstore_get_stats(ds, &stats);
	assert_int_equal(stats.pending_delete_bytes, bb);
	assert_int_equal(stats.evictions, 1);
	/* The pending bytes are subtracted: the same usage does not evict again. */
	assert_int_equal(ms_diffstore_tick(ds), 0);

	/* Far over: c goes, then z (0 bytes, no help), then nothing else is allowed. */
	atomic_store(&disk.used, total);
	assert_int_equal(ms_diffstore_tick(ds), 2);
	assert_true(ms_diffstore_is_pending_delete(ds, "c/memfile"));
	assert_true(ms_diffstore_is_pending_delete(ds, "z/memfile"));
	assert_false(ms_diffstore_is_pending_delete(ds, "a/memfile"));
	assert_int_equal(ms_diffstore_tick(ds), 0);

	/* Unpinned, a is fair game. */
	assert_int_equal(ms_diffstore_unpin(ds, "a/memfile"), 0);
	assert_int_equal(ms_diffstore_unpin(ds, "a/memfile"), -EINVAL);
	assert_int_equal(ms_diffstore_tick(ds), 1);
	assert_true(ms_diffstore_is_pending_delete(ds, "a/memfile"));
	assert_int_equal(ms_diffstore_pin(ds, "missing/memfile"), MS_ENOTFOUND);

	ms_source_unref(a);
	ms_source_unref(b);
	ms_source_unref(c);
	ms_source_unref(z);
	ms_diffstore_free(ds);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_pinned_survives_scheduled_delete(void **state)
{
	char *dir = ms_test_tmpdir();
	struct fake_disk disk = {.total = 1000, .used = 0};
	struct ms_diffstore *ds = store_new(dir, &disk, 30 * MSEC, 30 * MSEC, false);
	struct ms_source *src = file_source(dir, "p", 4096, 9);
	assert_int_equal(ms_diffstore_insert(ds, "p/memfile", src), 0);
	assert_int_equal(ms_diffstore_pin(ds, "p/memfile"), 0);
	ms_clock_sleep_ns(40 * MSEC);
	ms_diffstore_tick(ds); /* TTL still schedules it */
	assert_true(ms_diffstore_is_pending_delete(ds, "p/memfile"));
	ms_clock_sleep_ns(40 * MSEC);
	ms_diffstore_tick(ds); /* but the delete skips a pinned entry */
	assert_true(ms_diffstore_contains(ds, "p/memfile"));
	assert_false(ms_source_is_closed(src));
	assert_true(file_exists(dir, "p"));
	/* Explicit eviction of an unpinned entry, cancelled by get_or_create. */
	assert_int_equal(ms_diffstore_unpin(ds, "p/memfile"), 0);
	assert_int_equal(ms_diffstore_evict(ds, "p/memfile"), 0);
	assert_true(ms_diffstore_is_pending_delete(ds, "p/memfile"));
	struct create_ctx never = {.result = -EIO};
	struct ms_source *got = NULL;
	assert_int_equal(ms_diffstore_get_or_create(ds, "p/memfile", slow_create, &never, &got), 0);
	assert_int_equal(atomic_load(&never.calls), 0);
	assert_ptr_equal(got, src);
	ms_source_unref(got);
	assert_false(ms_diffstore_is_pending_delete(ds, "p/memfile"));
	assert_int_equal(ms_diffstore_evict(ds, "nope"), MS_ENOTFOUND);
	ms_source_unref(src);
	ms_diffstore_free(ds);
	ms_test_rmtree(dir);
	free(dir);
}

/* ---- holders of an evicted source, and a race against the thread ---- */

struct hammer {
	pthread_t thread;
	struct ms_diffstore *ds;
	const char *dir;
	unsigned seed;
	atomic_bool *stop;
	atomic_int *bad;
	int closed_seen;
	int reads;
};

static int hammer_create(const char *key, void *p, struct ms_source **out)
{
	struct hammer *h = p;
	if (key[0] == 'z') {
		*out = ms_source_zero_new(8192);
		return *out ? 0 : -ENOMEM;
	}
	/* A file per creation: its content is the key's first byte. */
	static atomic_uint seq;
	char name[64];
	snprintf(name, sizeof(name), "f-%c-%u", key[0], atomic_fetch_add(&seq, 1));
	char *path = NULL;
	if (asprintf(&path, "%s/%s", h->dir, name) < 0)
		return -ENOMEM;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	unsigned char buf[8192];
	memset(buf, key[0], sizeof(buf));
	int err = fd >= 0 && write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf) ? 0 : -EIO;
	if (fd >= 0)
		close(fd);
	if (!err)
		*out = ms_source_file_open(path, true, &err);
	free(path);
	return err;
}

static void *hammer_run(void *p)
{
	struct hammer *h = p;
	static const char *keys[] = {"a/memfile", "b/memfile", "c/memfile", "z/memfile"};
	uint64_t x = h->seed * 0x9E3779B97F4A7C15ULL + 1;
	while (!atomic_load(h->stop)) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		const char *key = keys[x % 4];
		struct ms_source *src = NULL;
		switch ((x >> 8) % 6) {
		case 0:
			ms_diffstore_evict(h->ds, key);
			continue;
		case 1:
			if (ms_diffstore_pin(h->ds, key) == 0) {
				ms_clock_sleep_ns(100 * 1000);
				if (ms_diffstore_unpin(h->ds, key) != 0)
					atomic_fetch_add(h->bad, 1);
			}
			continue;
		default:
			break;
		}
		int err = ms_diffstore_get_or_create(h->ds, key, hammer_create, h, &src);
		if (err) {
			atomic_fetch_add(h->bad, 1);
			continue;
		}
		/* Hold it for a while, reading: either right bytes or MS_ECLOSED. */
		for (int i = 0; i < 20; i++) {
			unsigned char buf[512];
			err = ms_source_read(src, buf, (uint64_t)i * 256, sizeof(buf));
			h->reads++;
			if (err == MS_ECLOSED) {
				h->closed_seen++;
				break;
			}
			unsigned char want = key[0] == 'z' ? 0 : (unsigned char)key[0];
			if (err || buf[0] != want || buf[511] != want)
				atomic_fetch_add(h->bad, 1);
			ms_clock_sleep_ns(50 * 1000);
		}
		ms_source_unref(src);
	}
	return NULL;
}

static void test_eviction_race(void **state)
{
	char *dir = ms_test_tmpdir();
	struct fake_disk disk = {.total = 1000, .used = 0};
	struct ms_diffstore *ds = store_new(dir, &disk, 4 * MSEC, 2 * MSEC, true);
	enum { N = 8 };
	struct hammer h[N];
	atomic_bool stop = false;
	atomic_int bad = 0;
	enum ms_log_level level = ms_log_get_level();
	ms_log_set_level(MS_LOG_WARN); /* hundreds of eviction lines otherwise */
	for (int i = 0; i < N; i++) {
		h[i] = (struct hammer){
		    .ds = ds, .dir = dir, .seed = (unsigned)i + 1, .stop = &stop, .bad = &bad};
		assert_int_equal(pthread_create(&h[i].thread, NULL, hammer_run, &h[i]), 0);
	}
	/* Flip disk pressure on and off while they run. */
	for (int round = 0; round < 40; round++) {
		atomic_store(&disk.used, round % 2 ? 990 : 100);
		ms_clock_sleep_ns(10 * MSEC);
	}
	atomic_store(&stop, true);
	int closed = 0, reads = 0;
	for (int i = 0; i < N; i++) {
		pthread_join(h[i].thread, NULL);
		closed += h[i].closed_seen;
		reads += h[i].reads;
	}
	ms_log_set_level(level);
	assert_int_equal(atomic_load(&bad), 0);
	assert_true(reads > 0);
	struct ms_diffstore_stats stats;
	ms_diffstore_get_stats(ds, &stats);
	assert_true(stats.deletes > 0);
	print_message("race: %d reads, %d saw MS_ECLOSED, %llu deletes, %llu evictions\n", reads,
		      closed, (unsigned long long)stats.deletes,
		      (unsigned long long)stats.evictions);
	ms_diffstore_free(ds);
	ms_test_rmtree(dir);
	free(dir);
}

/* replace: the drained file takes over from the memfd source; pins stay, old holders re-plan. */
static void test_replace(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir();
	struct ms_diffstore *ds = store_new(dir, NULL, 3600000 * MSEC, 3600000 * MSEC, false);
	struct ms_source *first = file_source(dir, "first", 4096, 'a');
	struct ms_source *second = file_source(dir, "second", 4096, 'b');
	assert_int_equal(ms_diffstore_replace(ds, "b/memfile", second), MS_ENOTFOUND);
	assert_int_equal(ms_diffstore_insert(ds, "b/memfile", first), 0);
	assert_int_equal(ms_diffstore_pin(ds, "b/memfile"), 0);
	struct ms_source *held;
	assert_int_equal(ms_diffstore_get(ds, "b/memfile", &held), 0);
	assert_int_equal(ms_diffstore_replace(ds, "b/memfile", second), 0);
	char c;
	assert_int_equal(ms_source_read(held, &c, 0, 1), MS_ECLOSED); /* the old one is closed */
	ms_source_unref(held);
	assert_int_equal(ms_diffstore_get(ds, "b/memfile", &held), 0);
	assert_int_equal(ms_source_read(held, &c, 0, 1), 0);
	assert_int_equal(c, 'b');
	ms_source_unref(held);
	assert_int_equal(ms_diffstore_unpin(ds, "b/memfile"), 0); /* the pin survived */
	ms_source_unref(first);
	ms_source_unref(second);
	ms_diffstore_free(ds);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_bad_config(void **state)
{
	int err = 0;
	struct ms_diffstore_config cfg = {.cache_dir = NULL};
	assert_null(ms_diffstore_new(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	cfg = (struct ms_diffstore_config){.cache_dir = "/tmp", .max_usage_percent = 101};
	assert_null(ms_diffstore_new(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	atomic_llong clock = 0; /* a test clock only without the background thread */
	cfg = (struct ms_diffstore_config){
	    .cache_dir = "/tmp", .now_fn = fake_now, .now_ctx = &clock};
	assert_null(ms_diffstore_new(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	/* The default usage function really statfs's the directory. */
	cfg = (struct ms_diffstore_config){.cache_dir = "/nonexistent/memsnap", .no_thread = true};
	struct ms_diffstore *ds = ms_diffstore_new(&cfg, &err);
	assert_non_null(ds);
	assert_int_equal(ms_diffstore_tick(ds), -ENOENT);
	struct ms_source *src = NULL;
	assert_int_equal(ms_diffstore_get_or_create(ds, "k", NULL, NULL, &src), -EINVAL);
	ms_diffstore_free(ds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_or_create_once),
	    cmocka_unit_test(test_ttl_and_delayed_delete),
	    cmocka_unit_test(test_background_thread_expires),
	    cmocka_unit_test(test_pressure_evicts_closest_to_expiry_never_pinned),
	    cmocka_unit_test(test_pinned_survives_scheduled_delete),
	    cmocka_unit_test(test_eviction_race),
	    cmocka_unit_test(test_replace),
	    cmocka_unit_test(test_bad_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
