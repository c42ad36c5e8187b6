/*
 * test_uffd_trace.c - first-touch traces: the metadata.json codec (good
 * traces round-trip; every kind of bad trace from the store is refused with
 * its reason), and the recorder fed by a real session's fault stream (order,
 * access types, each page once).
 */
#include "ms_test.h"
#include "uffd/trace.h"
#include "uffd_test_util.h"
#include "util/clock.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define P     4096ULL
#define PAGES 256

static void test_json_round_trip(void **state)
{
	(void)state;
	uint64_t indices[4] = {7, 3, 255, 0};
	uint8_t access[4] = {'r', 'w', 'p', 'r'};
	struct ms_uffd_trace t = {
	    .block_size = P, .indices = indices, .access = access, .count = 4};
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "guest", "workset");
	assert_int_equal(ms_uffd_trace_to_json(&t, root), 0);
	char *text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	struct ms_uffd_trace back;
	char why[128];
	assert_int_equal(
	    ms_uffd_trace_parse(text, strlen(text), PAGES * P, P, &back, why, sizeof(why)), 0);
	assert_int_equal(back.count, 4);
	assert_int_equal(back.block_size, P);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(back.indices[i], indices[i]);
		assert_int_equal(back.access[i], access[i]);
	}
	ms_uffd_trace_fini(&back);
	/* no prefetch key: an empty trace, not an error */
	assert_int_equal(ms_uffd_trace_parse("{\"guest\":\"pattern\"}", 19, PAGES * P, P, &back,
					     why, sizeof(why)),
			 0);
	assert_int_equal(back.count, 0);
	ms_uffd_trace_fini(&back);
	/* a truncated copy of the good text is refused */
	size_t len = strlen(text);
	for (size_t cut = 1; cut < len; cut += 7) {
		assert_int_equal(
		    ms_uffd_trace_parse(text, cut, PAGES * P, P, &back, why, sizeof(why)),
		    MS_EPROTO);
		assert_int_equal(back.count, 0);
		assert_null(back.indices);
		assert_true(why[0] != '\0');
	}
	free(text);
}

static void test_bad_traces_refused(void **state)
{
	(void)state;
	static const struct {
		const char *json;
		const char *reason; /* a word of the refusal */
	} bad[] = {
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":[1,256],"
	     "\"access_types\":[\"r\",\"r\"]}}}",
	     "past the end"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":[3,4,3],"
	     "\"access_types\":[\"r\",\"r\",\"w\"]}}}",
	     "repeats"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":2097152,\"indices\":[0],"
	     "\"access_types\":[\"r\"]}}}",
	     "block_size"},
	    {"{\"prefetch\":{\"memory\":{\"indices\":[0],\"access_types\":[\"r\"]}}}",
	     "block_size"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":[0,1],"
	     "\"access_types\":[\"r\"]}}}",
	     "access types"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":[0],"
	     "\"access_types\":[\"x\"]}}}",
	     "access type"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":[-1],"
	     "\"access_types\":[\"r\"]}}}",
	     "not an integer"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":[1.5],"
	     "\"access_types\":[\"r\"]}}}",
	     "not an integer"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":{},"
	     "\"access_types\":[]}}}",
	     "not an array"},
	    {"{\"prefetch\":[]}", "prefetch"},
	    {"[1,2]", "not an object"},
	    {"{\"prefetch\":{\"memory\":{\"block_size\":4096,\"indices\":[0", "truncated"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ms_uffd_trace t;
		char why[160];
		int err = ms_uffd_trace_parse(bad[i].json, strlen(bad[i].json), PAGES * P, P, &t,
					      why, sizeof(why));
		print_message("%zu: %s\n", i, why);
		assert_int_equal(err, MS_EPROTO);
		assert_int_equal(t.count, 0);
		assert_null(t.indices);
		assert_non_null(strstr(why, bad[i].reason));
	}
}

/* A session (batch_bytes batch) over a child that reads pages 9, 2, 2 (again), writes 6,
 * reads 201; the trace must be want[0..n) with its access types. */
static void check_recorded(uint64_t batch, const uint64_t *want_idx, const uint8_t *want_access,
			   size_t n)
{
	struct test_source src;
	test_source_init(&src, PAGES * P, P);
	char *dir, *sock = test_socket_path(&dir);
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = batch};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &test_source_ops, &src, &opts, &(int){0});
	assert_non_null(srv);
	struct fc_child_cfg cfg = {.sock_path = sock,
				   .size = PAGES * P,
				   .page_size = P,
				   .regions = 1,
				   .wp = true,
				   .source = src.data};
	struct fc_child child;
	assert_int_equal(fc_child_start(&cfg, &child), 0);
	struct ms_uffd_session *s;
	assert_int_equal(ms_pageserver_next_session(srv, 10 * MS_NSEC_PER_SEC, &s), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 9 * P, P, 0, 10000), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 2 * P, P, 0, 10000), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 2 * P, P, 0, 10000), 0);
	assert_int_equal(fc_child_cmd(&child, FC_WRITE, 6 * P, P, 0x5a, 10000), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 201 * P, P, 0, 10000), 0);
	struct ms_uffd_trace t;
	assert_int_equal(ms_uffd_session_trace(s, &t), 0);
	assert_int_equal(t.block_size, P);
	assert_int_equal(t.count, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(t.indices[i], want_idx[i]);
		assert_int_equal(t.access[i], want_access[i]);
	}
	ms_uffd_trace_fini(&t);
	fc_child_exit(&child);
	ms_uffd_session_unref(s);
	ms_pageserver_free(srv);
	test_source_fini(&src);
	free(sock);
	ms_test_rmtree(dir);
	free(dir);
}

/* First touches in order, each once: without batching 9 r, 2 r, 6 w, 201 r (page 5 of the
 * source is all zero, so the write goes to 6). With 64 KiB blocks the fault on 9 installs 0..15
 * and only 9 was touched: 2 and 6 then raise no MISSING fault (6 only a WP one), so the trace
 * is 9 r, 201 r - the neighbours are not in it (they used to be, as reads). */
static void test_session_records_first_touches(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	const uint64_t plain_idx[4] = {9, 2, 6, 201}, batched_idx[2] = {9, 201};
	const uint8_t plain_access[4] = {'r', 'r', 'w', 'r'}, batched_access[2] = {'r', 'r'};
	check_recorded(0, plain_idx, plain_access, 4);
	check_recorded(16 * P, batched_idx, batched_access, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_json_round_trip),
	    cmocka_unit_test(test_bad_traces_refused),
	    cmocka_unit_test(test_session_records_first_touches),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
