/*
 * test_api.c - the daemon's pure parts: the API parser/router (every route,
 * every method, every field rule), the config file parser, and the metrics
 * exposition's shape.
 */
#include "ms_test.h"
#include "node/api.h"
#include "node/config.h"
#include "node/metrics.h"

#include <errno.h>
#include <string.h>

#define ID "6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162"

static int parse(const char *method, const char *path, const char *body, struct ms_api_request *req,
		 struct ms_api_error *err)
{
	return ms_api_parse(method, path, body, body ? strlen(body) : 0, req, err);
}

/* The status a request gets (200 when it parses). */
static unsigned status_of(const char *method, const char *path, const char *body)
{
	struct ms_api_request req;
	struct ms_api_error err;
	return parse(method, path, body, &req, &err) ? err.status : 200;
}

static void test_routes(void **state)
{
	(void)state;
	static const struct {
		const char *method, *path;
		enum ms_api_op op;
	} routes[] = {
	    {"POST", "/v1/sandboxes", MS_API_SANDBOX_CREATE},
	    {"GET", "/v1/sandboxes", MS_API_SANDBOX_LIST},
	    {"GET", "/v1/sandboxes/", MS_API_SANDBOX_LIST},
	    {"GET", "/v1/sandboxes?all=1", MS_API_SANDBOX_LIST},
	    {"GET", "/v1/sandboxes/" ID, MS_API_SANDBOX_GET},
	    {"DELETE", "/v1/sandboxes/" ID, MS_API_SANDBOX_DELETE},
	    {"POST", "/v1/sandboxes/" ID "/pause", MS_API_SANDBOX_PAUSE},
	    {"POST", "/v1/sandboxes/" ID "/resume", MS_API_SANDBOX_RESUME},
	    {"GET", "/v1/builds", MS_API_BUILD_LIST},
	    {"GET", "/v1/builds/" ID, MS_API_BUILD_GET},
	    {"DELETE", "/v1/builds/" ID, MS_API_BUILD_DELETE},
	    {"GET", "/v1/builds/" ID "/scheduling-metadata", MS_API_BUILD_METADATA},
	    {"GET", "/metrics", MS_API_METRICS},
	    {"GET", "/healthz", MS_API_HEALTHZ},
	};
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		struct ms_api_request req;
		struct ms_api_error err;
		const char *body =
		    routes[i].op == MS_API_SANDBOX_CREATE ? "{\"guest\":\"pattern\"}" : NULL;
		if (parse(routes[i].method, routes[i].path, body, &req, &err))
			fail_msg("%s %s: %u %s", routes[i].method, routes[i].path, err.status,
				 err.message);
		assert_int_equal(req.op, routes[i].op);
		if (strstr(routes[i].path, ID)) {
			char text[MS_UUID_STR_LEN];
			ms_uuid_format(&req.id, text);
			assert_string_equal(text, ID);
		}
	}
	/* unknown paths: 404; known paths, other methods: 405 */
	assert_int_equal(status_of("GET", "/", NULL), 404);
	assert_int_equal(status_of("GET", "/v1", NULL), 404);
	assert_int_equal(status_of("GET", "/v1//sandboxes", NULL), 404);
	assert_int_equal(status_of("GET", "/v1/sandboxes/" ID "/pause/x", NULL), 404);
	assert_int_equal(status_of("GET", "/v1/buildsx", NULL), 404);
	assert_int_equal(status_of("GET", "/v1/builds/" ID "/other", NULL), 404);
	assert_int_equal(status_of("GET", "/metricsx", NULL), 404);
	assert_int_equal(status_of("PUT", "/v1/sandboxes", NULL), 405);
	assert_int_equal(status_of("GET", "/v1/sandboxes/" ID "/pause", NULL), 405);
	assert_int_equal(status_of("POST", "/v1/sandboxes/" ID, NULL), 405);
	assert_int_equal(status_of("POST", "/v1/builds/" ID, NULL), 405);
	assert_int_equal(status_of("POST", "/healthz", NULL), 405);
	/* a 405 says which methods the path takes (the Allow header); others say none */
	struct ms_api_request req;
	struct ms_api_error err;
	assert_int_equal(parse("PUT", "/v1/sandboxes/" ID, NULL, &req, &err), -1);
	assert_string_equal(err.allow, "GET, DELETE");
	assert_int_equal(parse("GET", "/v1/sandboxes/" ID "/resume", NULL, &req, &err), -1);
	assert_string_equal(err.allow, "POST");
	assert_int_equal(parse("DELETE", "/v1/sandboxes", NULL, &req, &err), -1);
	assert_string_equal(err.allow, "POST, GET");
	assert_int_equal(parse("GET", "/v1/sandboxes/abc", NULL, &req, &err), -1);
	assert_int_equal(err.status, 400);
	assert_string_equal(err.allow, "");
	assert_int_equal(status_of("GET", "relative", NULL), 400);
	assert_int_equal(status_of("GET", "", NULL), 400);
	/* ids */
	assert_int_equal(status_of("GET", "/v1/sandboxes/abc", NULL), 400);
	assert_int_equal(status_of("GET", "/v1/sandboxes/" ID "0", NULL), 400);
	assert_int_equal(
	    status_of("GET", "/v1/sandboxes/00000000-0000-0000-0000-000000000000", NULL), 400);
	assert_int_equal(
	    status_of("GET", "/v1/sandboxes/6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f40516g", NULL), 400);
}

static void test_bodies(void **state)
{
	(void)state;
	struct ms_api_request req;
	struct ms_api_error err;
	/* a pause may name its new build; nothing else in its body */
	assert_int_equal(
	    parse("POST", "/v1/sandboxes/" ID "/pause", "{\"build_id\":\"" ID "\"}", &req, &err),
	    0);
	assert_true(req.named_build && !req.from_build);
	assert_int_equal(parse("POST", "/v1/sandboxes/" ID "/pause", "{}", &req, &err), 0);
	assert_false(req.named_build);
	assert_int_equal(status_of("POST", "/v1/sandboxes/" ID "/pause", "{\"build_id\":\"x\"}"),
			 400);
	assert_int_equal(status_of("POST", "/v1/sandboxes/" ID "/pause", "{\"guest\":\"pattern\"}"),
			 400);
	assert_int_equal(status_of("DELETE", "/v1/builds/" ID, "{}"), 400); /* no body */
	assert_int_equal(
	    parse("POST", "/v1/sandboxes",
		  "{\"guest\":\"mutator\",\"mem_mib\":8,\"exec\":{\"command\":\"fill\","
		  "\"arg0\":9007199254740992,\"arg1\":3}}",
		  &req, &err),
	    0);
	assert_int_equal(req.guest, MS_GUEST_MUTATOR);
	assert_int_equal(req.mem_size, 8u << 20);
	assert_false(req.from_build);
	assert_true(req.exec.set);
	assert_int_equal(req.exec.command, MS_PATTERN_FILL);
	assert_int_equal(req.exec.arg0, 9007199254740992ULL);
	assert_int_equal(req.exec.arg1, 3);
	assert_int_equal(parse("POST", "/v1/sandboxes", "{\"build_id\":\"" ID "\"}", &req, &err),
			 0);
	assert_true(req.from_build);
	assert_int_equal(parse("POST", "/v1/sandboxes", "{\"guest\":\"pattern\"}", &req, &err), 0);
	assert_int_equal(req.mem_size, 64u << 20); /* the default */
	assert_false(req.exec.set);
	assert_int_equal(parse("POST", "/v1/sandboxes/" ID "/resume", "  {}\n", &req, &err), 0);
	assert_int_equal(
	    parse("POST", "/v1/sandboxes/" ID "/resume", "{\"exec\":{\"command\":7}}", &req, &err),
	    0);
	assert_int_equal(req.exec.command, 7);
	assert_int_equal(parse("POST", "/v1/sandboxes/" ID "/pause", "{}", &req, &err), 0);
	static const char *const bad[] = {
	    "",
	    "{",
	    "null",
	    "[]",
	    "{\"guest\":\"pattern\"} {}",
	    "{\"guest\":1}",
	    "{\"guest\":\"windows\"}",
	    "{}",
	    "{\"mem_mib\":8}",
	    "{\"guest\":\"pattern\",\"build_id\":\"" ID "\"}",
	    "{\"build_id\":\"" ID "\",\"mem_mib\":8}",
	    "{\"build_id\":\"00000000-0000-0000-0000-000000000000\"}",
	    "{\"guest\":\"pattern\",\"mem_mib\":65537}",
	    "{\"guest\":\"pattern\",\"mem_mib\":-1}",
	    "{\"guest\":\"pattern\",\"mem_mib\":1e300}",
	    "{\"guest\":\"pattern\",\"mem_mib\":true}",
	    "{\"guest\":\"pattern\",\"extra\":1}",
	    "{\"guest\":\"pattern\",\"exec\":1}",
	    "{\"guest\":\"pattern\",\"exec\":{}}",
	    "{\"guest\":\"pattern\",\"exec\":{\"command\":\"fill\",\"arg2\":1}}",
	    "{\"guest\":\"pattern\",\"exec\":{\"command\":\"fill\",\"arg0\":9007199254740993.5}}",
	    "{\"guest\":\"pattern\",\"exec\":{\"command\":\"fill\",\"arg0\":\"1\"}}",
	    "{\"guest\":\"pattern\",\"exec\":{\"command\":-3}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (!parse("POST", "/v1/sandboxes", bad[i], &req, &err))
			fail_msg("accepted: %s", bad[i]);
		assert_int_equal(err.status, 400);
		assert_string_equal(err.code, "bad_request");
		assert_true(err.message[0] != '\0');
	}
	/* bodies where none belongs, and fields of another op */
	assert_int_equal(status_of("GET", "/v1/sandboxes", "{}"), 400);
	assert_int_equal(status_of("DELETE", "/v1/sandboxes/" ID, "{}"), 400);
	assert_int_equal(
	    status_of("POST", "/v1/sandboxes/" ID "/pause", "{\"exec\":{\"command\":1}}"), 400);
	assert_int_equal(
	    status_of("POST", "/v1/sandboxes/" ID "/resume", "{\"guest\":\"pattern\"}"), 400);
	/* a body with a NUL inside is not JSON */
	assert_int_equal(
	    ms_api_parse("POST", "/v1/sandboxes", "{\"guest\":\"pattern\"}\0x", 22, &req, &err),
	    -1);
	/* over the cap */
	static char big[MS_API_BODY_MAX + 2];
	memset(big, ' ', sizeof(big) - 1);
	assert_int_equal(ms_api_parse("POST", "/v1/sandboxes", big, sizeof(big) - 1, &req, &err),
			 -1);
	assert_int_equal(err.status, 413);
	/* errors render as {error, message} */
	ms_api_error_set(&err, 404, "not_found", "no \"sandbox\" %d", 7);
	char *json = ms_api_error_json(&err);
	assert_string_equal(json, "{\"error\":\"not_found\",\"message\":\"no \\\"sandbox\\\" 7\"}");
	free(json);
}

static void test_config(void **state)
{
	(void)state;
	struct ms_node_config cfg;
	char why[256];
	ms_node_config_defaults(&cfg);
	assert_true(cfg.inflight_serve && cfg.dedup && cfg.dedup_best_effort);
	assert_int_equal(cfg.template_ttl_ns, 25LL * 3600 * 1000000000LL);
	assert_int_equal(cfg.cache_ttl_ns, 25LL * 3600 * 1000000000LL);
	assert_int_equal(cfg.cache_delete_delay_ns, 60LL * 1000000000LL);
	assert_int_equal(cfg.grace_ns, 30LL * 1000000000LL);
	assert_int_equal(cfg.compress, MS_COMPRESS_NONE);
	assert_string_equal(cfg.socket, "/run/memsnap/memsnapd.sock");
	assert_int_equal(
	    ms_node_config_parse_text(&cfg,
				      "# comment\n\n  store = file:///x # trailing\n"
				      "inflight_serve=off\r\ncompress = zstd\n"
				      "template_ttl = 90m\ngrace = 1500ms\n"
				      "cache_ttl = 3s\ncache_delete_delay = 250ms\n"
				      "max_sandboxes = 3\nstore = file:///y#not-a-comment\n",
				      "t.conf", why, sizeof(why)),
	    0);
	assert_string_equal(cfg.store, "file:///y#not-a-comment");
	assert_false(cfg.inflight_serve);
	assert_int_equal(cfg.compress, MS_COMPRESS_ZSTD);
	assert_int_equal(cfg.template_ttl_ns, 90LL * 60 * 1000000000LL);
	assert_int_equal(cfg.cache_ttl_ns, 3LL * 1000000000LL);
	assert_int_equal(cfg.cache_delete_delay_ns, 250LL * 1000000LL);
	assert_int_equal(cfg.grace_ns, 1500LL * 1000000LL);
	assert_int_equal(cfg.max_sandboxes, 3);
	static const struct {
		const char *text, *reason;
	} bad[] = {
	    {"nonsense\n", "t.conf:1: expected 'key = value'"},
	    {"\n\nfrob = 1\n", "t.conf:3: unknown option 'frob'"},
	    {"= 1\n", "t.conf:1: empty key"},
	    {"dedup = maybe\n", "t.conf:1: dedup: 'maybe' is not on or off"},
	    {"grace = -1s\n", "t.conf:1: grace: '-1s' is not a duration"},
	    {"grace = 5 days\n", "t.conf:1: grace: '5 days' is not a duration"},
	    {"max_sandboxes = 1x\n", "t.conf:1: max_sandboxes: '1x' is not a count"},
	    {"max_sandboxes = 1K\n", "t.conf:1: max_sandboxes: '1K' is not a count"},
	    {"max_sandboxes = 1000001\n", "t.conf:1: max_sandboxes: '1000001' is not a count"},
	    {"store_quota_bytes = 5X\n", "t.conf:1: store_quota_bytes: '5X' is not a size"},
	    {"store_quota_bytes = 16777216T\n",
	     "t.conf:1: store_quota_bytes: '16777216T' is not a size"},
	    {"compress = gzip\n", "t.conf:1: compress: 'gzip' is not none, zstd or lz4"},
	    {"grace_ns = 1\n", "t.conf:1: unknown option 'grace_ns'"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    ms_node_config_parse_text(&cfg, bad[i].text, "t.conf", why, sizeof(why)),
		    -EINVAL);
		if (strncmp(why, bad[i].reason, strlen(bad[i].reason)))
			fail_msg("'%s': reason '%s', wanted '%s'", bad[i].text, why, bad[i].reason);
	}
	assert_int_equal(ms_node_config_set(&cfg, "store_quota_bytes", "2T", why, sizeof(why)), 0);
	assert_int_equal(cfg.store_quota_bytes, 2ULL << 40);
	assert_int_equal(ms_node_config_set(&cfg, "max_sandboxes", "1000000", why, sizeof(why)), 0);
	assert_int_equal(cfg.max_sandboxes, 1000000);
	char long_value[MS_NODE_PATH_MAX + 10];
	memset(long_value, 'a', sizeof(long_value) - 1);
	long_value[sizeof(long_value) - 1] = '\0';
	assert_int_equal(ms_node_config_set(&cfg, "store", long_value, why, sizeof(why)), -EINVAL);
}

static void test_metrics_shape(void **state)
{
	(void)state;
	struct ms_metrics m;
	ms_metrics_init(&m);
	ms_histogram_observe(&m.create[MS_START_WARM], 0.003);
	ms_histogram_observe(&m.create[MS_START_WARM], 100);
	struct ms_metrics_live live = {.sandboxes_running = 2};
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	assert_int_equal(ms_metrics_render(&m, &live, out), 0);
	fclose(out);
	/* cumulative buckets, +Inf, sum and count */
	assert_non_null(strstr(text, "memsnap_sandbox_create_duration_seconds_bucket{start_type="
				     "\"warm\",le=\"0.0025\"} 0\n"));
	assert_non_null(strstr(text, "memsnap_sandbox_create_duration_seconds_bucket{start_type="
				     "\"warm\",le=\"0.005\"} 1\n"));
	assert_non_null(strstr(
	    text,
	    "memsnap_sandbox_create_duration_seconds_bucket{start_type=\"warm\",le=\"30\"} 1\n"));
	assert_non_null(strstr(
	    text,
	    "memsnap_sandbox_create_duration_seconds_bucket{start_type=\"warm\",le=\"+Inf\"} 2\n"));
	assert_non_null(
	    strstr(text, "memsnap_sandbox_create_duration_seconds_count{start_type=\"warm\"} 2\n"));
	assert_non_null(strstr(text, "memsnap_sandboxes{state=\"running\"} 2\n"));
	/* one HELP and one TYPE per family */
	const char *p = text;
	unsigned helps = 0, types = 0;
	while ((p = strstr(p, "# HELP memsnap_sandbox_create_duration_seconds "))) {
		helps++;
		p++;
	}
	p = text;
	while ((p = strstr(p, "# TYPE memsnap_sandbox_create_duration_seconds histogram"))) {
		types++;
		p++;
	}
	assert_int_equal(helps, 1);
	assert_int_equal(types, 1);
	free(text);
	ms_metrics_fini(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_routes),
	    cmocka_unit_test(test_bodies),
	    cmocka_unit_test(test_config),
	    cmocka_unit_test(test_metrics_shape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
