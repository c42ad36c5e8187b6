/*
 * test_log.c - the log line formats: text and JSON lines with an RFC 3339 UTC
 * millisecond timestamp, fields, JSON escaping of hostile messages, and an
 * over-long message cut so that its JSON line still parses.
 */
#include "ms_test.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs fn with stderr sent to a temp file; returns what it wrote (malloc'd). */
static char *ms_capture(void (*fn)(void))
{
	char path[] = "/tmp/ms-test-log.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	fn();
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	off_t len = lseek(fd, 0, SEEK_END);
	char *text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(pread(fd, text, (size_t)len, 0), len);
	close(fd);
	return text;
}

static bool ms_is_timestamp(const char *s)
{
	regex_t re;
	assert_int_equal(
	    regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z",
		    REG_EXTENDED | REG_NOSUB),
	    0);
	bool match = regexec(&re, s, 0, NULL, 0) == 0;
	regfree(&re);
	return match;
}

static void ms_log_text_lines(void)
{
	ms_log_set_format(MS_LOG_TEXT);
	ms_info("node", "sandbox %s", "paused");
	ms_info_ids("node", "sb-1", "build-2", "with ids");
	ms_info_ids("node", NULL, "build-3", "build only");
}

static void test_log_text(void **state)
{
	(void)state;
	ms_log_set_level(MS_LOG_INFO);
	char *text = ms_capture(ms_log_text_lines);
	const char *want[] = {" memsnap[node] INFO sandbox paused",
			      " memsnap[node] INFO with ids sandbox_id=sb-1 build_id=build-2",
			      " memsnap[node] INFO build only build_id=build-3"};
	char *save = NULL, *line = strtok_r(text, "\n", &save);
	for (int i = 0; i < 3; i++, line = strtok_r(NULL, "\n", &save)) {
		assert_non_null(line);
		assert_true(ms_is_timestamp(line));
		assert_string_equal(line + 24, want[i]);
	}
	assert_null(line);
	free(text);
}

static void ms_log_json_lines(void)
{
	ms_log_set_format(MS_LOG_JSON);
	ms_warn("mod\"x", "quote \" backslash \\ newline \n tab \t bell \a end");
	ms_info_ids("node", "s\"1", NULL, "ids");
	char big[5000];
	memset(big, '"', sizeof(big) - 1); /* each escapes to two bytes: the line is cut */
	big[sizeof(big) - 1] = '\0';
	ms_info_ids("node", "sb", "bd", "%s", big);
	ms_debug("node", "not at info");
	ms_log_set_format(MS_LOG_TEXT);
}

static void test_log_json(void **state)
{
	(void)state;
	ms_log_set_level(MS_LOG_INFO);
	char *text = ms_capture(ms_log_json_lines);
	char *save = NULL;
	int n = 0;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cJSON *o = cJSON_Parse(line);
		assert_non_null(o);
		const char *ts = cJSON_GetStringValue(cJSON_GetObjectItem(o, "ts"));
		assert_non_null(ts);
		assert_true(ms_is_timestamp(ts));
		assert_int_equal(strlen(ts), 24);
		const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(o, "msg"));
		const char *level = cJSON_GetStringValue(cJSON_GetObjectItem(o, "level"));
		const char *module = cJSON_GetStringValue(cJSON_GetObjectItem(o, "module"));
		cJSON *sandbox = cJSON_GetObjectItem(o, "sandbox_id");
		cJSON *build = cJSON_GetObjectItem(o, "build_id");
		if (n == 0) {
			assert_string_equal(level, "warn");
			assert_string_equal(module, "mod\"x");
			assert_string_equal(msg,
					    "quote \" backslash \\ newline \n tab \t bell \a end");
			assert_null(sandbox);
		} else if (n == 1) {
			assert_string_equal(msg, "ids");
			assert_string_equal(cJSON_GetStringValue(sandbox), "s\"1");
			assert_null(build); /* a NULL value leaves its field out */
		} else {
			assert_int_equal(n, 2);
			assert_true(strlen(msg) > 100 && strspn(msg, "\"") == strlen(msg));
			assert_string_equal(cJSON_GetStringValue(sandbox), "sb");
			assert_string_equal(cJSON_GetStringValue(build), "bd");
		}
		cJSON_Delete(o);
		n++;
	}
	assert_int_equal(n, 3);
	free(text);
}

static void test_log_parse_format(void **state)
{
	(void)state;
	enum ms_log_format f;
	assert_int_equal(ms_log_parse_format("json", &f), 0);
	assert_int_equal(f, MS_LOG_JSON);
	assert_int_equal(ms_log_parse_format("text", &f), 0);
	assert_int_equal(f, MS_LOG_TEXT);
	assert_int_equal(ms_log_parse_format("xml", &f), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_log_text),
	    cmocka_unit_test(test_log_json),
	    cmocka_unit_test(test_log_parse_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
