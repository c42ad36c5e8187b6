/* test_fs.c - the fs object store: semantics of store.h, atomic overwrite under readers. */
#include "ms_test.h"
#include "storage/store.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fixture {
	char *dir;
	struct ms_store *store;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	int err;
	f->store = ms_store_fs_new(f->dir, &err);
	assert_non_null(f->store);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_store_free(f->store);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void test_put_get(void **state)
{
	struct fixture *f = *state;
	const char *text = "hello, layered world";
	assert_int_equal(ms_store_put_buf(f->store, "b1/memfile", text, strlen(text), NULL), 0);
	char buf[64];
	size_t got;
	assert_int_equal(ms_store_read_range(f->store, "b1/memfile", 7, buf, 7, &got), 0);
	assert_int_equal(got, 7);
	assert_memory_equal(buf, "layered", 7);
	/* past the end: short, not an error */
	assert_int_equal(ms_store_read_range(f->store, "b1/memfile", 15, buf, 64, &got), 0);
	assert_int_equal(got, strlen(text) - 15);
	assert_int_equal(ms_store_read_range(f->store, "b1/memfile", 1000, buf, 4, &got), 0);
	assert_int_equal(got, 0);
	uint64_t size;
	assert_int_equal(ms_store_size(f->store, "b1/memfile", &size), 0);
	assert_int_equal(size, strlen(text));
	bool exists;
	assert_int_equal(ms_store_exists(f->store, "b1/memfile", &exists), 0);
	assert_true(exists);
	assert_int_equal(ms_store_exists(f->store, "b1/nothing", &exists), 0);
	assert_false(exists);
	assert_int_equal(ms_store_read_range(f->store, "nope", 0, buf, 4, &got), MS_ENOTFOUND);
	assert_int_equal(ms_store_size(f->store, "b1", &size), MS_ENOTFOUND); /* a directory */
	void *all;
	size_t len;
	assert_int_equal(ms_store_read_all(f->store, "b1/memfile", 1024, &all, &len), 0);
	assert_int_equal(len, strlen(text));
	free(all);
	assert_int_equal(ms_store_read_all(f->store, "b1/memfile", 4, &all, &len), MS_ETOOBIG);
	/* the file is where E2B's layout says */
	char path[1024];
	snprintf(path, sizeof(path), "%s/b1/memfile", f->dir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(ms_store_remove(f->store, "b1/memfile"), 0);
	assert_int_equal(ms_store_remove(f->store, "b1/memfile"), MS_ENOTFOUND);
}

static void test_bad_keys(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = {"",      "/abs", "a//b",	 "../x", "a/../b",
			     "a/./b", "a/",   ".hidden", "a/.x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ms_store_put_buf(f->store, bad[i], "x", 1, NULL), -EINVAL);
}

static void test_overwrite_shorter(void **state)
{
	struct fixture *f = *state;
	char big[10000];
	memset(big, 'A', sizeof(big));
	assert_int_equal(ms_store_put_buf(f->store, "k", big, sizeof(big), NULL), 0);
	assert_int_equal(ms_store_put_buf(f->store, "k", "short", 5, NULL), 0);
	uint64_t size;
	assert_int_equal(ms_store_size(f->store, "k", &size), 0);
	assert_int_equal(size, 5);
	/* put_file */
	char tmp[1024];
	snprintf(tmp, sizeof(tmp), "%s/../src-%d", f->dir, getpid());
	int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, big, 3000), 3000);
	assert_int_equal(ms_store_put_file(f->store, "dir/sub/file", fd, 3000, NULL), 0);
	assert_int_equal(ms_store_put_file(f->store, "dir/sub/short", fd, 5000, NULL), -EIO);
	bool exists;
	assert_int_equal(ms_store_exists(f->store, "dir/sub/short", &exists), 0);
	assert_false(exists); /* a failed put leaves nothing */
	close(fd);
	unlink(tmp);
	assert_int_equal(ms_store_size(f->store, "dir/sub/file", &size), 0);
	assert_int_equal(size, 3000);
}

struct listed {
	char keys[16][64];
	uint64_t sizes[16];
	int64_t mtimes[16];
	int count;
	int stop_after;
};

static int collect(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	struct listed *l = ctx;
	snprintf(l->keys[l->count], 64, "%s", key);
	l->mtimes[l->count] = mtime_ms;
	l->sizes[l->count++] = size;
	return l->stop_after && l->count == l->stop_after;
}

static void test_list_and_meta(void **state)
{
	struct fixture *f = *state;
	const char *keys[] = {"b2/memfile", "b1/snapfile", "b1/memfile", "b1/memfile.header", "c"};
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(ms_store_put_buf(f->store, keys[i], "12345", i + 1, NULL), 0);
	struct ms_store_meta meta = {0};
	assert_int_equal(ms_store_meta_set(&meta, "uncompressed-size", "4096"), 0);
	assert_int_equal(ms_store_put_buf(f->store, "b1/memfile", "xyz", 3, &meta), 0);
	/* a stray temp file is never an object */
	char stray[1024];
	snprintf(stray, sizeof(stray), "%s/b1/.memfile.tmp.abc", f->dir);
	close(open(stray, O_CREAT | O_WRONLY, 0600));
	struct listed l = {0};
	assert_int_equal(ms_store_list(f->store, "b1/", collect, &l), 0);
	assert_int_equal(l.count, 3);
	assert_string_equal(l.keys[0], "b1/memfile");
	assert_int_equal(l.sizes[0], 3);
	assert_string_equal(l.keys[1], "b1/memfile.header");
	assert_string_equal(l.keys[2], "b1/snapfile");
	/* the write time, from the file (within a minute of now) */
	int64_t now_ms = (int64_t)time(NULL) * 1000;
	assert_true(l.mtimes[0] > now_ms - 60000 && l.mtimes[0] < now_ms + 60000);
	memset(&l, 0, sizeof(l));
	assert_int_equal(ms_store_list(f->store, "", collect, &l), 0);
	assert_int_equal(l.count, 5);
	memset(&l, 0, sizeof(l));
	l.stop_after = 2;
	assert_int_equal(ms_store_list(f->store, "", collect, &l), 0);
	assert_int_equal(l.count, 2);
	memset(&l, 0, sizeof(l));
	assert_int_equal(ms_store_list(f->store, "b1/mem", collect, &l), 0);
	assert_int_equal(l.count, 2);
	/* an empty directory (a build whose objects were all removed) lists nothing */
	char empty[1024];
	snprintf(empty, sizeof(empty), "%s/gone", f->dir);
	assert_int_equal(mkdir(empty, 0700), 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(ms_store_list(f->store, "gone/", collect, &l), 0);
	assert_int_equal(l.count, 0);
	struct ms_store_meta got;
	assert_int_equal(ms_store_get_meta(f->store, "b1/memfile", &got), 0);
	assert_string_equal(ms_store_meta_get(&got, "uncompressed-size"), "4096");
	assert_int_equal(ms_store_get_meta(f->store, "b1/snapfile", &got), 0);
	assert_int_equal(got.count, 0);
	assert_int_equal(ms_store_get_meta(f->store, "b9/none", &got), MS_ENOTFOUND);
	assert_int_equal(ms_store_meta_set(&meta, "Bad Key", "v"), -EINVAL);
	assert_int_equal(ms_store_remove(f->store, "b1/memfile"), 0);
	char side[1024];
	snprintf(side, sizeof(side), "%s/b1/.memfile.meta", f->dir);
	assert_int_equal(access(side, F_OK), -1); /* sidecar removed with the object */
}

/* Readers racing an overwrite see the old or the new object, whole, never a mix. */
struct race {
	struct ms_store *store;
	atomic_bool stop;
	atomic_int bad, reads;
};

#define RACE_LEN (256 * 1024)

static void *race_reader(void *p)
{
	struct race *r = p;
	char *buf = malloc(RACE_LEN + 1);
	while (!atomic_load(&r->stop)) {
		size_t got = 0;
		if (ms_store_read_range(r->store, "obj", 0, buf, RACE_LEN + 1, &got) != 0)
			continue;
		atomic_fetch_add(&r->reads, 1);
		char first = buf[0];
		size_t want = first == 'L' ? RACE_LEN : RACE_LEN / 2;
		bool ok = got == want && (first == 'L' || first == 'S');
		for (size_t i = 0; ok && i < got; i++)
			ok = buf[i] == first;
		if (!ok)
			atomic_fetch_add(&r->bad, 1);
	}
	free(buf);
	return NULL;
}

static void test_atomic_overwrite_under_readers(void **state)
{
	struct fixture *f = *state;
	char *large = malloc(RACE_LEN), *small = malloc(RACE_LEN / 2);
	memset(large, 'L', RACE_LEN);
	memset(small, 'S', RACE_LEN / 2);
	assert_int_equal(ms_store_put_buf(f->store, "obj", large, RACE_LEN, NULL), 0);
	struct race r = {.store = f->store};
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, race_reader, &r);
	for (int i = 0; i < 60; i++)
		assert_int_equal(ms_store_put_buf(f->store, "obj", i % 2 ? large : small,
						  i % 2 ? RACE_LEN : RACE_LEN / 2, NULL),
				 0);
	atomic_store(&r.stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&r.bad), 0);
	assert_true(atomic_load(&r.reads) > 0);
	free(large);
	free(small);
}

/* plants a temporary file of an unfinished put, its mtime age_s seconds ago */
static void plant_tmp(struct fixture *f, const char *rel, time_t age_s)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", f->dir, rel);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	mkdir(path, 0755);
	*slash = '/';
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "partial", 7), 7);
	struct timespec t[2] = {{.tv_sec = time(NULL) - age_s}, {.tv_sec = time(NULL) - age_s}};
	assert_int_equal(futimens(fd, t), 0);
	close(fd);
}

static bool exists(struct fixture *f, const char *rel)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", f->dir, rel);
	return access(path, F_OK) == 0;
}

/* the temporary files of puts a writer died in go when old enough, objects never */
static void test_remove_incomplete(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(ms_store_put_buf(f->store, "b1/memfile", "data", 4, NULL), 0);
	plant_tmp(f, "b1/.memfile.tmp.aaaaaa", 7200);
	plant_tmp(f, "b1/.snapfile.meta.tmp.bbbbbb", 7200);
	plant_tmp(f, "b2/.memfile.tmp.cccccc", 7200);
	plant_tmp(f, "b2/.memfile.tmp.dddddd", 10); /* a put that may still run */
	plant_tmp(f, ".top.tmp.eeeeee", 7200);
	size_t n = 99;
	assert_int_equal(ms_store_remove_incomplete(f->store, "", 3600 * 1000, true, &n), 0);
	assert_int_equal(n, 4);
	assert_true(exists(f, "b1/.memfile.tmp.aaaaaa"));
	/* one build's prefix */
	assert_int_equal(ms_store_remove_incomplete(f->store, "b1/", 3600 * 1000, false, &n), 0);
	assert_int_equal(n, 2);
	assert_false(exists(f, "b1/.memfile.tmp.aaaaaa"));
	assert_false(exists(f, "b1/.snapfile.meta.tmp.bbbbbb"));
	assert_true(exists(f, "b2/.memfile.tmp.cccccc"));
	/* the rest that is old enough */
	assert_int_equal(ms_store_remove_incomplete(f->store, "", 3600 * 1000, false, &n), 0);
	assert_int_equal(n, 2);
	assert_false(exists(f, "b2/.memfile.tmp.cccccc"));
	assert_false(exists(f, ".top.tmp.eeeeee"));
	assert_true(exists(f, "b2/.memfile.tmp.dddddd"));
	/* any age: the young one too; the object stays */
	assert_int_equal(ms_store_remove_incomplete(f->store, "b2/", 0, false, &n), 0);
	assert_int_equal(n, 1);
	assert_false(exists(f, "b2/.memfile.tmp.dddddd"));
	assert_true(exists(f, "b1/memfile"));
	assert_int_equal(ms_store_remove_incomplete(f->store, "b2/", 0, false, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(ms_store_remove_incomplete(f->store, "../", 0, false, &n), -EINVAL);
}

static void test_open_uris(void **state)
{
	struct fixture *f = *state;
	int err;
	char uri[1100];
	snprintf(uri, sizeof(uri), "file://%s", f->dir);
	struct ms_store *s = ms_store_open(uri, NULL, &err);
	assert_non_null(s);
	ms_store_free(s);
	assert_null(ms_store_open("file://relative", NULL, &err));
	assert_int_equal(err, -EINVAL);
	assert_null(ms_store_open("gopher://x", NULL, &err));
	assert_int_equal(err, -EINVAL);
	assert_null(ms_store_open("", NULL, &err));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_overwrite_shorter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_list_and_meta, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_atomic_overwrite_under_readers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_uris, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remove_incomplete, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
