/* test_future.c - set-once futures under concurrency. */
#include "ms_test.h"
#include "util/future.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static void test_set_once(void **state)
{
	(void)state;
	struct ms_future *f = ms_future_new(free);
	void *v = NULL;
	int err = 0;
	assert_false(ms_future_peek(f, &v, &err));
	assert_int_equal(ms_future_wait_timeout(f, 1000000, &v), -ETIMEDOUT);
	int *value = malloc(sizeof(int));
	*value = 42;
	assert_int_equal(ms_future_set(f, value), 0);
	int *other = malloc(sizeof(int));
	assert_int_equal(ms_future_set(f, other), -EALREADY);
	free(other);
	assert_int_equal(ms_future_fail(f, -EIO), -EALREADY);
	assert_true(ms_future_peek(f, &v, &err));
	assert_int_equal(err, 0);
	assert_int_equal(*(int *)v, 42);
	assert_int_equal(ms_future_wait(f, &v), 0);
	ms_future_unref(f); /* frees the value: ASan proves it happens once */
}

static void test_fail(void **state)
{
	(void)state;
	struct ms_future *f = ms_future_new(NULL);
	assert_int_equal(ms_future_fail(f, MS_ECHECKSUM), 0);
	void *v = (void *)1;
	assert_int_equal(ms_future_wait(f, &v), MS_ECHECKSUM);
	assert_null(v);
	assert_int_equal(ms_future_wait_timeout(f, 0, NULL), MS_ECHECKSUM);
	ms_future_unref(f);
}

struct waiter_arg {
	struct ms_future *f;
	atomic_int seen;
};

static void *waiter(void *p)
{
	struct waiter_arg *arg = p;
	void *v;
	if (ms_future_wait(arg->f, &v) == 0 && v == (void *)arg)
		atomic_fetch_add(&arg->seen, 1);
	return NULL;
}

static void *setter(void *p)
{
	struct waiter_arg *arg = p;
	if (ms_future_set(arg->f, arg) == 0)
		atomic_fetch_add(&arg->seen, 1000);
	return NULL;
}

/* 8 waiters and 4 racing setters: exactly one set wins, every waiter wakes with its value. */
static void test_concurrent(void **state)
{
	(void)state;
	for (int round = 0; round < 50; round++) {
		struct waiter_arg arg = {.f = ms_future_new(NULL)};
		atomic_init(&arg.seen, 0);
		pthread_t th[12];
		for (int i = 0; i < 8; i++)
			pthread_create(&th[i], NULL, waiter, &arg);
		for (int i = 8; i < 12; i++)
			pthread_create(&th[i], NULL, setter, &arg);
		for (int i = 0; i < 12; i++)
			pthread_join(th[i], NULL);
		assert_int_equal(atomic_load(&arg.seen), 1008);
		ms_future_unref(arg.f);
	}
}

struct polled_arg {
	struct ms_future *f;
	unsigned spins;
};

static void *late_setter(void *p)
{
	struct polled_arg *arg = p;
	for (volatile unsigned i = 0; i < arg->spins; i++)
		;
	ms_future_set(arg->f, arg);
	return NULL;
}

/*
 * A polled wait whose future settles between two polls returns the future's
 * result. With a 1 us poll, settles land in that window often: before the fix,
 * ms_pause_await answered the poll's -ETIMEDOUT for a future that had just
 * settled with 0 (under load a pause then failed "Connection timed out").
 */
static void test_polled_wait_sees_a_late_settle(void **state)
{
	(void)state;
	unsigned seed = 7;
	atomic_bool cancel = false;
	int wrong = 0;
	for (int round = 0; round < 3000; round++) {
		struct polled_arg arg = {.f = ms_future_new(NULL),
					 .spins = (unsigned)rand_r(&seed) % 20000};
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, late_setter, &arg), 0);
		void *v = NULL;
		int err = ms_future_wait_cancellable(arg.f, -1, &cancel, MS_ECANCELED, 1000, &v);
		if (err != 0 || v != &arg)
			wrong++;
		pthread_join(th, NULL);
		ms_future_unref(arg.f);
	}
	assert_int_equal(wrong, 0);
	/* a future failing with -ETIMEDOUT of its own gives that, settled or not at the poll */
	struct ms_future *f = ms_future_new(NULL);
	ms_future_fail(f, -ETIMEDOUT);
	assert_int_equal(ms_future_wait_cancellable(f, -1, &cancel, MS_ECANCELED, 1000, NULL),
			 -ETIMEDOUT);
	ms_future_unref(f);
	/* pending: the timeout, and the cancel's error once cancelled */
	f = ms_future_new(NULL);
	assert_int_equal(
	    ms_future_wait_cancellable(f, 3000000, &cancel, MS_ECANCELED, 1000000, NULL),
	    -ETIMEDOUT);
	atomic_store(&cancel, true);
	assert_int_equal(ms_future_wait_cancellable(f, -1, &cancel, MS_ECANCELED, 1000000, NULL),
			 MS_ECANCELED);
	ms_future_unref(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_once),
	    cmocka_unit_test(test_fail),
	    cmocka_unit_test(test_concurrent),
	    cmocka_unit_test(test_polled_wait_sees_a_late_settle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
