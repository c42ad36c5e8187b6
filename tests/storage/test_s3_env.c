/*
 * test_s3_env.c - ms_s3_env_read/apply (storage/s3.h): which environment names give an s3
 * store's settings, in which order, through a lookup table instead of the process
 * environment; and that the config's own settings win.
 */
#include "ms_test.h"

#include "storage/s3.h"

#include <string.h>

static const char *const *table; /* name, value, name, value, ..., NULL */

static const char *lookup(const char *name)
{
	for (const char *const *p = table; *p; p += 2)
		if (strcmp(p[0], name) == 0)
			return p[1];
	return NULL;
}

static void test_precedence(void **state)
{
	struct ms_s3_env env;
	static const char *const all[] = {"MEMSNAP_S3_ENDPOINT",
					  "http://127.0.0.1:1",
					  "AWS_ENDPOINT_URL",
					  "http://127.0.0.1:2",
					  "AWS_REGION",
					  "eu-west-1",
					  "AWS_ACCESS_KEY_ID",
					  "AK1",
					  "AWS_SECRET_ACCESS_KEY",
					  "SK1",
					  "MEMSNAP_S3_ACCESS_KEY",
					  "AK2",
					  "MEMSNAP_S3_SECRET_KEY",
					  "SK2",
					  "HOME",
					  "/home/u",
					  "AWS_PROFILE",
					  "p",
					  NULL};
	table = all;
	ms_s3_env_read(&env, lookup);
	assert_string_equal(env.endpoint, "http://127.0.0.1:1");
	assert_string_equal(env.region, "eu-west-1");
	assert_string_equal(env.access_key, "AK1");
	assert_string_equal(env.secret_key, "SK1");
	assert_string_equal(env.credentials_file, "/home/u/.aws/credentials");
	assert_string_equal(env.profile, "p");

	/* Half an AWS pair does not count; an empty value is unset. */
	static const char *const half[] = {"MEMSNAP_S3_ENDPOINT",
					   "",
					   "AWS_ENDPOINT_URL",
					   "http://127.0.0.1:2",
					   "AWS_ACCESS_KEY_ID",
					   "AK1",
					   "MEMSNAP_S3_ACCESS_KEY",
					   "AK2",
					   "MEMSNAP_S3_SECRET_KEY",
					   "SK2",
					   "AWS_SHARED_CREDENTIALS_FILE",
					   "/etc/creds",
					   "HOME",
					   "/home/u",
					   NULL};
	table = half;
	ms_s3_env_read(&env, lookup);
	assert_string_equal(env.endpoint, "http://127.0.0.1:2");
	assert_string_equal(env.region, "");
	assert_string_equal(env.access_key, "AK2");
	assert_string_equal(env.secret_key, "SK2");
	assert_string_equal(env.credentials_file, "/etc/creds");
	assert_string_equal(env.profile, "");

	static const char *const none[] = {NULL};
	table = none;
	ms_s3_env_read(&env, lookup);
	assert_string_equal(env.endpoint, "");
	assert_string_equal(env.access_key, "");
	assert_string_equal(env.credentials_file, "");
}

static void test_apply(void **state)
{
	struct ms_s3_env env;
	static const char *const all[] = {"MEMSNAP_S3_ENDPOINT",
					  "http://127.0.0.1:1",
					  "MEMSNAP_S3_ACCESS_KEY",
					  "AK2",
					  "MEMSNAP_S3_SECRET_KEY",
					  "SK2",
					  NULL};
	table = all;
	ms_s3_env_read(&env, lookup);
	/* The config's own settings win, but a half key pair gives way to a whole one. */
	struct ms_s3_config config = {.endpoint = "http://127.0.0.1:9", .access_key = "MINE"};
	ms_s3_env_apply(&env, &config);
	assert_string_equal(config.endpoint, "http://127.0.0.1:9");
	assert_string_equal(config.access_key, "AK2");
	assert_string_equal(config.secret_key, "SK2");
	assert_null(config.region);
	assert_null(config.credentials_file);

	struct ms_s3_config whole = {.access_key = "A", .secret_key = "S"};
	ms_s3_env_apply(&env, &whole);
	assert_string_equal(whole.access_key, "A");
	assert_string_equal(whole.secret_key, "S");

	struct ms_s3_config empty = {0};
	ms_s3_env_apply(&env, &empty);
	assert_string_equal(empty.endpoint, "http://127.0.0.1:1");
	assert_string_equal(empty.access_key, "AK2");
	assert_string_equal(empty.secret_key, "SK2");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_precedence),
	    cmocka_unit_test(test_apply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
