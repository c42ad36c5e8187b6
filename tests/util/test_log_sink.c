/*
 * test_log_sink.c - the log sink (util/log.h): lines at or above the level reach the sink with
 * their module and message, from many threads, none after the sink is removed; the level
 * needs no environment.
 */
#include "ms_test.h"

#include "util/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

struct seen {
	atomic_int lines;
	atomic_int bad;
	char last[128];
	enum ms_log_level last_level;
};

static void sink(void *ctx, enum ms_log_level level, const char *module, const char *message)
{
	struct seen *s = ctx;
	if (strcmp(module, "test") != 0 || strchr(message, '\n'))
		atomic_fetch_add(&s->bad, 1);
	snprintf(s->last, sizeof(s->last), "%s", message);
	s->last_level = level;
	atomic_fetch_add(&s->lines, 1);
}

static void test_sink_and_level(void **state)
{
	assert_int_equal(ms_log_get_level(), MS_LOG_INFO); /* the default, whatever the env */
	struct seen s = {0};
	ms_log_set_sink(sink, &s);
	ms_info("test", "hello %d", 42);
	assert_int_equal(atomic_load(&s.lines), 1);
	assert_string_equal(s.last, "hello 42");
	assert_int_equal(s.last_level, MS_LOG_INFO);
	ms_debug("test", "below the level");
	assert_int_equal(atomic_load(&s.lines), 1);
	ms_log_set_level(MS_LOG_DEBUG);
	ms_debug("test", "now seen");
	assert_int_equal(atomic_load(&s.lines), 2);
	assert_string_equal(s.last, "now seen");
	ms_log_set_level(MS_LOG_INFO);
	ms_log_set_sink(NULL, NULL);
	ms_warn("test", "to stderr, not the sink");
	assert_int_equal(atomic_load(&s.lines), 2);
	assert_int_equal(atomic_load(&s.bad), 0);
}

static struct seen threaded;

static void *writer(void *arg)
{
	for (int i = 0; i < 1000; i++)
		ms_info("test", "line %d", i);
	return arg;
}

static void threaded_sink(void *ctx, enum ms_log_level level, const char *module,
			  const char *message)
{
	struct seen *s = ctx;
	if (strcmp(module, "test") != 0 || strncmp(message, "line ", 5) != 0)
		atomic_fetch_add(&s->bad, 1);
	atomic_fetch_add(&s->lines, 1);
}

static void test_sink_threads(void **state)
{
	ms_log_set_sink(threaded_sink, &threaded);
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer, NULL), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	ms_log_set_sink(NULL, NULL);
	assert_int_equal(atomic_load(&threaded.lines), 4000);
	assert_int_equal(atomic_load(&threaded.bad), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sink_and_level),
	    cmocka_unit_test(test_sink_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
