/* test_future.c - set-once futures under concurrency. */
#include "ms_test.h"
#include "util/future.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_once),
		cmocka_unit_test(test_fail),
		cmocka_unit_test(test_concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
