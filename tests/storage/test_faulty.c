/* test_faulty.c - fault injection: each action, and failed puts never leave partial objects. */
#include "ms_test.h"
#include "storage/faulty.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <string.h>

struct fixture {
	char *dir;
	struct ms_store *fs, *faulty;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	int err;
	f->fs = ms_store_fs_new(f->dir, &err);
	f->faulty = ms_store_faulty_new(f->fs);
	assert_non_null(f->faulty);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_store_free(f->faulty);
	ms_store_free(f->fs);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void test_actions(void **state)
{
	struct fixture *f = *state;
	char buf[16];
	size_t got;
	assert_int_equal(ms_store_put_buf(f->faulty, "a", "0123456789", 10, NULL), 0);
	/* fail the 2nd read from now */
	ms_store_faulty_inject(f->faulty, MS_FAULTY_READ, 2, MS_FAULTY_FAIL, -ETIMEDOUT, 0);
	assert_int_equal(ms_store_read_range(f->faulty, "a", 0, buf, 10, &got), 0);
	assert_int_equal(ms_store_read_range(f->faulty, "a", 0, buf, 10, &got), -ETIMEDOUT);
	assert_int_equal(ms_store_read_range(f->faulty, "a", 0, buf, 10, &got), 0);
	/* truncated read */
	ms_store_faulty_inject(f->faulty, MS_FAULTY_READ, 1, MS_FAULTY_TRUNCATE, 0, 0);
	assert_int_equal(ms_store_read_range(f->faulty, "a", 0, buf, 10, &got), 0);
	assert_int_equal(got, 5);
	/* delay */
	ms_store_faulty_inject(f->faulty, MS_FAULTY_SIZE, 1, MS_FAULTY_DELAY, 0, 50000000);
	int64_t t0 = ms_clock_now_ns();
	uint64_t size;
	assert_int_equal(ms_store_size(f->faulty, "a", &size), 0);
	assert_true(ms_clock_now_ns() - t0 >= 50000000);
	/* any: the next call of whatever kind */
	ms_store_faulty_inject(f->faulty, MS_FAULTY_ANY, 1, MS_FAULTY_FAIL, MS_EREMOTE, 0);
	assert_int_equal(ms_store_remove(f->faulty, "a"), MS_EREMOTE);
	assert_int_equal(ms_store_remove(f->faulty, "a"), 0);
	assert_int_equal(ms_store_faulty_calls(f->faulty, MS_FAULTY_REMOVE), 2);
	assert_int_equal(ms_store_faulty_calls(f->faulty, MS_FAULTY_READ), 4);
	ms_store_faulty_clear(f->faulty);
}

/* A repeating rule fires on every n-th call of its kind, for good, and only on that kind. */
static void test_every(void **state)
{
	struct fixture *f = *state;
	char buf[16];
	size_t got;
	assert_int_equal(ms_store_put_buf(f->faulty, "a", "0123456789", 10, NULL), 0);
	ms_store_faulty_inject_every(f->faulty, MS_FAULTY_PUT, 3, MS_FAULTY_FAIL, -ETIMEDOUT, 0);
	int failed[9];
	for (int i = 0; i < 9; i++) {
		failed[i] = ms_store_put_buf(f->faulty, "b", "x", 1, NULL);
		/* reads between the puts count as reads, not puts */
		assert_int_equal(ms_store_read_range(f->faulty, "a", 0, buf, 10, &got), 0);
	}
	for (int i = 0; i < 9; i++)
		assert_int_equal(failed[i], (i + 1) % 3 == 0 ? -ETIMEDOUT : 0);
	/* every 1: each call sleeps first (the daemon's test_store_delay) */
	ms_store_faulty_inject_every(f->faulty, MS_FAULTY_PUT, 1, MS_FAULTY_DELAY, 0, 20000000);
	int64_t t0 = ms_clock_now_ns();
	for (int i = 0; i < 3; i++)
		assert_int_equal(ms_store_put_buf(f->faulty, "b", "x", 1, NULL), 0);
	assert_true(ms_clock_now_ns() - t0 >= 60000000);
	/* clear ends a repeating rule */
	ms_store_faulty_inject_every(f->faulty, MS_FAULTY_PUT, 1, MS_FAULTY_FAIL, -EIO, 0);
	assert_int_equal(ms_store_put_buf(f->faulty, "b", "x", 1, NULL), -EIO);
	ms_store_faulty_clear(f->faulty);
	assert_int_equal(ms_store_put_buf(f->faulty, "b", "x", 1, NULL), 0);
}

/* A keyed rule sees only the calls whose key contains its substring, and counts only those. */
static void test_match(void **state)
{
	struct fixture *f = *state;
	ms_store_faulty_match(f->faulty, "/snapfile");
	ms_store_faulty_inject(f->faulty, MS_FAULTY_PUT, 2, MS_FAULTY_FAIL, -EIO, 0);
	assert_int_equal(ms_store_put_buf(f->faulty, "b1/memfile", "x", 1, NULL), 0);
	assert_int_equal(ms_store_put_buf(f->faulty, "b1/snapfile", "x", 1, NULL), 0);
	assert_int_equal(ms_store_put_buf(f->faulty, "b1/memfile.header", "x", 1, NULL), 0);
	assert_int_equal(ms_store_put_buf(f->faulty, "b2/snapfile", "x", 1, NULL), -EIO);
	assert_int_equal(ms_store_put_buf(f->faulty, "b3/snapfile", "x", 1, NULL), 0);
	/* a repeating keyed rule: each matching remove */
	ms_store_faulty_match(f->faulty, "peers/");
	ms_store_faulty_inject_every(f->faulty, MS_FAULTY_REMOVE, 1, MS_FAULTY_FAIL, -EIO, 0);
	assert_int_equal(ms_store_remove(f->faulty, "b1/memfile"), 0);
	assert_int_equal(ms_store_remove(f->faulty, "peers/b1"), -EIO);
	assert_int_equal(ms_store_remove(f->faulty, "peers/b2"), -EIO);
	ms_store_faulty_clear(f->faulty);
	assert_int_equal(ms_store_put_buf(f->faulty, "peers/b1", "x", 1, NULL), 0);
	assert_int_equal(ms_store_remove(f->faulty, "peers/b1"), 0);
}

/*
 * A sequence of puts that replaces a set of objects; fail each put in turn (by
 * failing and by truncating): afterwards every object is whole, old or new.
 */
static void test_failed_put_leaves_nothing_partial(void **state)
{
	struct fixture *f = *state;
	const char *keys[] = {"b/memfile", "b/memfile.header", "b/snapfile", "c/memfile"};
	char old_data[4][4000], new_data[4][6000];
	for (int k = 0; k < 4; k++) {
		memset(old_data[k], 'a' + k, sizeof(old_data[k]));
		memset(new_data[k], 'A' + k, sizeof(new_data[k]));
	}
	enum ms_faulty_action actions[] = {MS_FAULTY_FAIL, MS_FAULTY_TRUNCATE};
	for (int a = 0; a < 2; a++) {
		for (unsigned nth = 1; nth <= 4; nth++) {
			for (int k = 0; k < 3; k++) /* c/memfile starts absent */
				assert_int_equal(ms_store_put_buf(f->fs, keys[k], old_data[k],
								  sizeof(old_data[k]), NULL),
						 0);
			ms_store_remove(f->fs, "c/memfile");
			ms_store_faulty_inject(f->faulty, MS_FAULTY_PUT, nth, actions[a], -EIO, 0);
			for (int k = 0; k < 4; k++) {
				int err = ms_store_put_buf(f->faulty, keys[k], new_data[k],
							   sizeof(new_data[k]), NULL);
				assert_int_equal(err, (unsigned)k + 1 == nth ? -EIO : 0);
			}
			for (int k = 0; k < 4; k++) {
				char buf[8000];
				size_t got = 0;
				int err =
				    ms_store_read_range(f->fs, keys[k], 0, buf, sizeof(buf), &got);
				bool failed = (unsigned)k + 1 == nth;
				if (failed && k == 3) {
					assert_int_equal(err, MS_ENOTFOUND); /* nothing appeared */
					continue;
				}
				assert_int_equal(err, 0);
				const char *want = failed ? old_data[k] : new_data[k];
				size_t want_len =
				    failed ? sizeof(old_data[k]) : sizeof(new_data[k]);
				assert_int_equal(got, want_len);
				assert_memory_equal(buf, want, want_len);
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_actions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_every, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_match, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_put_leaves_nothing_partial, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
