/* test_util.c - errors, uuids, page sets, backoff, fault-safe copies. */
#include "ms_test.h"
#include "util/clock.h"
#include "util/backoff.h"
#include "util/bearer.h"
#include "util/err.h"
#include "util/faultsafe.h"
#include "util/log.h"
#include "util/pageset.h"
#include "util/uuid.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(ms_strerror(0), "success");
	assert_string_equal(ms_strerror(-ENOENT), strerror(ENOENT));
	assert_string_equal(ms_strerror(MS_ECORRUPT), "corrupt or malformed data");
	assert_string_equal(ms_strerror(MS_EBACKEND),
			    "snapshot belongs to another sandbox backend");
	for (int e = MS_ECORRUPT; e > MS_ERR_LAST; e--)
		assert_string_not_equal(ms_strerror(e), "unknown error");
	assert_string_equal(ms_strerror(MS_ERR_LAST), "unknown error");
	assert_string_equal(ms_strerror(5), "unknown error");
}

static void test_uuid(void **state)
{
	(void)state;
	ms_uuid a, b;
	ms_uuid_generate(&a);
	ms_uuid_generate(&b);
	assert_false(ms_uuid_eq(&a, &b));
	assert_false(ms_uuid_is_nil(&a));
	ms_uuid nil = MS_UUID_NIL;
	assert_true(ms_uuid_is_nil(&nil));
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(&a, text);
	assert_int_equal(strlen(text), 36);
	ms_uuid parsed;
	assert_int_equal(ms_uuid_parse(text, &parsed), 0);
	assert_true(ms_uuid_eq(&a, &parsed));
	assert_int_equal(ms_uuid_parse("00112233-4455-6677-8899-AABBCCDDEEFF", &parsed), 0);
	assert_int_equal(parsed.bytes[0], 0x00);
	assert_int_equal(parsed.bytes[15], 0xff);
	ms_uuid_format(&parsed, text);
	assert_string_equal(text, "00112233-4455-6677-8899-aabbccddeeff");
	assert_int_equal(ms_uuid_parse("not-a-uuid", &parsed), -EINVAL);
	assert_int_equal(ms_uuid_parse("00112233-4455-6677-8899-aabbccddeeffX", &parsed), -EINVAL);
	assert_int_equal(ms_uuid_parse("", &parsed), -EINVAL);
}

static void test_pageset_runs(void **state)
{
	(void)state;
	struct ms_pageset *set = ms_pageset_new();
	ms_pageset_add_range(set, 3, 7);
	ms_pageset_add(set, 9);
	ms_pageset_add_range(set, 100, 200);
	ms_pageset_remove(set, 150);
	assert_int_equal(ms_pageset_count(set), 4 + 1 + 99);
	uint64_t cursor = 0, start, len;
	uint64_t expect[][2] = {{3, 4}, {9, 1}, {100, 50}, {151, 49}};
	for (int i = 0; i < 4; i++) {
		assert_true(ms_pageset_next_run(set, &cursor, &start, &len));
		assert_int_equal(start, expect[i][0]);
		assert_int_equal(len, expect[i][1]);
	}
	assert_false(ms_pageset_next_run(set, &cursor, &start, &len));
	/* the top of the 32-bit range */
	ms_pageset_clear(set);
	ms_pageset_add_range(set, UINT32_MAX - 1, 1ULL << 32);
	cursor = 0;
	assert_true(ms_pageset_next_run(set, &cursor, &start, &len));
	assert_int_equal(start, UINT32_MAX - 1);
	assert_int_equal(len, 2);
	assert_false(ms_pageset_next_run(set, &cursor, &start, &len));

	struct ms_pageset *other = ms_pageset_new();
	ms_pageset_add_range(set, 0, 10);
	ms_pageset_add_range(other, 5, 20);
	ms_pageset_subtract(set, other);
	assert_true(ms_pageset_contains(set, 4));
	assert_false(ms_pageset_contains(set, 5));
	struct ms_pageset *copy = ms_pageset_copy(set);
	assert_true(ms_pageset_equal(set, copy));
	ms_pageset_union(copy, other);
	assert_int_equal(ms_pageset_count(copy), ms_pageset_count(set) + 15);
	ms_pageset_free(copy);
	ms_pageset_free(other);
	ms_pageset_free(set);
}

static void test_duration(void **state)
{
	(void)state;
	int64_t ns;
	assert_int_equal(ms_duration_parse("30", &ns), 0);
	assert_int_equal(ns, 30 * MS_NSEC_PER_SEC);
	assert_int_equal(ms_duration_parse("500ms", &ns), 0);
	assert_int_equal(ns, 500 * MS_NSEC_PER_MSEC);
	assert_int_equal(ms_duration_parse("1.5m", &ns), 0);
	assert_int_equal(ns, 90 * MS_NSEC_PER_SEC);
	assert_int_equal(ms_duration_parse("25h", &ns), 0);
	assert_int_equal(ns, 25 * 3600 * MS_NSEC_PER_SEC);
	assert_int_equal(ms_duration_parse("7d", &ns), 0);
	assert_int_equal(ns, 7 * 86400 * MS_NSEC_PER_SEC);
	const char *bad[] = {"", "s", "-1s", "3 h", "3w", "1e30h", "h1", "0x10"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ms_duration_parse(bad[i], &ns), -EINVAL);
}

static void test_backoff(void **state)
{
	(void)state;
	struct ms_backoff b;
	ms_backoff_init(&b, 50 * 1000000LL, 500 * 1000000LL, 4);
	int64_t delay;
	int64_t caps[] = {50, 100, 200};
	for (int i = 0; i < 3; i++) {
		assert_true(ms_backoff_next(&b, &delay));
		assert_true(delay >= caps[i] * 1000000LL / 2);
		assert_true(delay <= caps[i] * 1000000LL);
	}
	assert_false(ms_backoff_next(&b, &delay)); /* 4 attempts made */
	ms_backoff_init(&b, 50 * 1000000LL, 500 * 1000000LL, 0);
	for (int i = 0; i < 20; i++)
		assert_true(ms_backoff_next(&b, &delay));
	assert_true(delay <= 500 * 1000000LL && delay >= 250 * 1000000LL);
}

/* Reads a page (a fault past the file's end jumps out) and returns 7. */
static int touch_fn(void *ctx)
{
	const char *const *at = ctx;
	volatile char sink = 0;
	for (int i = 0; i < 4096; i += 512)
		sink += (*at)[i];
	(void)sink;
	return 7;
}

/* A mapping past the end of its file raises SIGBUS: that must be an error, not a crash. */
static void test_faultsafe_sigbus(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir();
	char path[512];
	snprintf(path, sizeof(path), "%s/f", dir);
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 8192), 0);
	char *map = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	memset(map, 0xab, 8192);
	char buf[4096];
	assert_int_equal(ms_faultsafe_copy(buf, map + 4096, 4096), 0);
	assert_int_equal((unsigned char)buf[0], 0xab);
	assert_int_equal(ms_faultsafe_copy(buf, map + 8192, 4096), MS_EFAULT_IO);
	bool flag = true;
	assert_int_equal(ms_faultsafe_is_zero(map + 8192, 4096, &flag), MS_EFAULT_IO);
	assert_int_equal(ms_faultsafe_equal(buf, map + 8192, 4096, &flag), MS_EFAULT_IO);
	/* a whole protected run: its return, or the fault; and again and again */
	struct touch {
		const char *at;
		int sum;
	} ok = {map + 4096, 0}, bad = {map + 8192, 0};
	for (int round = 0; round < 3; round++) {
		assert_int_equal(ms_faultsafe_call(touch_fn, &ok), 7);
		assert_int_equal(ms_faultsafe_call(touch_fn, &bad), MS_EFAULT_IO);
	}
	/* still works after a recovered fault */
	assert_int_equal(ms_faultsafe_equal(buf, map + 4096, 4096, &flag), 0);
	assert_true(flag);
	assert_int_equal(ms_faultsafe_is_zero(map, 4096, &flag), 0);
	assert_false(flag);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(ms_faultsafe_is_zero(buf, sizeof(buf), &flag), 0);
	assert_true(flag);
	munmap(map, 3 * 4096);
	close(fd);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_log_level(void **state)
{
	(void)state;
	enum ms_log_level level;
	assert_int_equal(ms_log_parse_level("debug", &level), 0);
	assert_int_equal(level, MS_LOG_DEBUG);
	assert_int_equal(ms_log_parse_level("loud", &level), -EINVAL);
	ms_log_set_level(MS_LOG_WARN);
	assert_int_equal(ms_log_get_level(), MS_LOG_WARN);
	ms_info("test", "not shown");
	ms_warn("test", "shown: %d", 1);
}

static void test_bearer(void **state)
{
	(void)state;
	assert_true(ms_bearer_ok("Bearer s3cret", "s3cret"));
	assert_false(ms_bearer_ok(NULL, "s3cret"));
	assert_false(ms_bearer_ok("", "s3cret"));
	assert_false(ms_bearer_ok("s3cret", "s3cret"));		/* no scheme */
	assert_false(ms_bearer_ok("Basic s3cret", "s3cret"));	/* another scheme */
	assert_false(ms_bearer_ok("Bearer s3cre", "s3cret"));	/* a prefix */
	assert_false(ms_bearer_ok("Bearer s3cretX", "s3cret")); /* a suffix */
	assert_false(ms_bearer_ok("Bearer s3creT", "s3cret"));	/* one byte off */
	assert_false(ms_bearer_ok("Bearer  s3cret", "s3cret")); /* two spaces */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_strerror),	 cmocka_unit_test(test_uuid),
	    cmocka_unit_test(test_pageset_runs), cmocka_unit_test(test_duration),
	    cmocka_unit_test(test_backoff),	 cmocka_unit_test(test_faultsafe_sigbus),
	    cmocka_unit_test(test_log_level),	 cmocka_unit_test(test_bearer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
