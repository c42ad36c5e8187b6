/*
 * test_peer_proto.c - the pure parts of peer/: the request parser (every
 * route, every refusal with its status), the URI builder round trip, and the
 * registry's records in a store (written, found, expired, malformed, removed).
 */
#include "ms_test.h"
#include "node/peer/proto.h"
#include "node/peer/registry.h"
#include "util/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define ID   "6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162"
#define BASE "/peer/v1/builds/" ID

static void expect_refused(const char *method, const char *uri, unsigned want_status)
{
	struct ms_peer_request req;
	unsigned status = 0;
	const char *why = NULL;
	if (ms_peer_request_parse(method, uri, &req, &status, &why) == 0)
		fail_msg("%s %s parsed", method, uri);
	if (status != want_status)
		fail_msg("%s %s: %u, not %u (%s)", method, uri, status, want_status, why);
	assert_non_null(why);
}

static struct ms_peer_request expect_parsed(const char *method, const char *uri)
{
	struct ms_peer_request req;
	unsigned status = 0;
	const char *why = "";
	if (ms_peer_request_parse(method, uri, &req, &status, &why) != 0)
		fail_msg("%s %s refused: %u %s", method, uri, status, why);
	return req;
}

static void test_routes(void **state)
{
	(void)state;
	ms_uuid id;
	assert_int_equal(ms_uuid_parse(ID, &id), 0);
	struct ms_peer_request r = expect_parsed("GET", BASE);
	assert_int_equal(r.op, MS_PEER_OP_STATUS);
	assert_true(ms_uuid_eq(&r.build_id, &id));
	r = expect_parsed("GET", BASE "/memfile.header");
	assert_int_equal(r.op, MS_PEER_OP_HEADER);
	assert_int_equal(r.file, MS_PEER_FILE_MEMFILE);
	r = expect_parsed("HEAD", BASE "/rootfs.ext4.header");
	assert_int_equal(r.op, MS_PEER_OP_HEADER);
	assert_int_equal(r.file, MS_PEER_FILE_ROOTFS);
	assert_true(r.head);
	r = expect_parsed("GET", BASE "/memfile?offset=8192&length=4096");
	assert_int_equal(r.op, MS_PEER_OP_DATA);
	assert_int_equal(r.offset, 8192);
	assert_int_equal(r.length, 4096);
	r = expect_parsed("GET", BASE "/rootfs.ext4?length=16777216&offset=0");
	assert_int_equal(r.file, MS_PEER_FILE_ROOTFS);
	assert_int_equal(r.length, MS_PEER_RANGE_MAX);
	/* a last piece may end off the block grid (the server checks it is the end) */
	r = expect_parsed("GET", BASE "/memfile?offset=4096&length=100");
	assert_int_equal(r.length, 100);
	assert_int_equal(expect_parsed("GET", BASE "/snapfile").op, MS_PEER_OP_SNAPFILE);
	assert_int_equal(expect_parsed("GET", BASE "/metadata.json").op, MS_PEER_OP_METADATA);
	assert_int_equal(expect_parsed("GET", BASE "/checksums").op, MS_PEER_OP_CHECKSUMS);
	/* upper-case ids are accepted (uuid.h) */
	r = expect_parsed("GET", "/peer/v1/builds/6F1C2C7E-4B1E-4C4E-9C1E-1D2E3F405162");
	assert_true(ms_uuid_eq(&r.build_id, &id));
}

static void test_refusals(void **state)
{
	(void)state;
	expect_refused("POST", BASE, 405);
	expect_refused("DELETE", BASE "/memfile.header", 405);
	expect_refused("get", BASE, 405);
	expect_refused("GET", "/", 404);
	expect_refused("GET", "/peer/v1/builds/", 400);
	expect_refused("GET", "/peer/v2/builds/" ID, 404);
	expect_refused("GET", BASE "/memfile.zstd", 404);
	expect_refused("GET", BASE "/", 404);
	expect_refused("GET", BASE "x", 404);
	expect_refused("GET", BASE "/../" ID, 404);
	expect_refused("GET", "/peer/v1/builds/not-a-uuid-at-all-but-36-chars-long!!", 400);
	expect_refused("GET", "/peer/v1/builds/00000000-0000-0000-0000-000000000000", 400);
	expect_refused("GET", "/peer/v1/builds/6f1c2c7e", 400);
	expect_refused("GET", BASE "/snapfile?x=1", 400);
	expect_refused("GET", BASE "?offset=0&length=4096", 400);
	/* ranges */
	expect_refused("GET", BASE "/memfile", 400);
	expect_refused("GET", BASE "/memfile?offset=0", 400);
	expect_refused("GET", BASE "/memfile?length=4096", 400);
	expect_refused("GET", BASE "/memfile?offset=1&length=4096", 400);
	expect_refused("GET", BASE "/memfile?offset=0&length=0", 400);
	expect_refused("GET", BASE "/memfile?offset=0&length=-4096", 400);
	expect_refused("GET", BASE "/memfile?offset=-4096&length=4096", 400);
	expect_refused("GET", BASE "/memfile?offset=+4096&length=4096", 400);
	expect_refused("GET", BASE "/memfile?offset=0&length=16781312", 400); /* cap + 4 KiB */
	expect_refused("GET", BASE "/memfile?offset=0&length=99999999999999999999", 400);
	expect_refused("GET", BASE "/memfile?offset=0&length=999999999999999999999", 400);
	expect_refused("GET", BASE "/memfile?offset=18446744073709547520&length=8192", 400);
	expect_refused("GET", BASE "/memfile?offset=0&length=4096&offset=0", 400);
	expect_refused("GET", BASE "/memfile?offset=0&length=4096&x=1", 400);
	expect_refused("GET", BASE "/memfile?offset=0&length=4096&", 400);
	expect_refused("GET", BASE "/memfile?offset&length=4096", 400);
	expect_refused("GET", BASE "/memfile?offset=0x0&length=4096", 400);
	expect_refused("GET", BASE "/memfile?offset=%30&length=4096", 400);
	expect_refused("GET", BASE "/memfile?offset=&length=4096", 400);
	/* too long */
	char longer[MS_PEER_URI_MAX + 64];
	snprintf(longer, sizeof(longer), BASE "/memfile?offset=0&length=4096");
	memset(longer + strlen(longer), '0', sizeof(longer) - strlen(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	expect_refused("GET", longer, 400);
	struct ms_peer_request req;
	unsigned status;
	const char *why;
	assert_int_not_equal(ms_peer_request_parse(NULL, BASE, &req, &status, &why), 0);
	assert_int_not_equal(ms_peer_request_parse("GET", NULL, &req, &status, &why), 0);
}

static void test_uri_round_trip(void **state)
{
	(void)state;
	struct ms_peer_request in = {.op = MS_PEER_OP_DATA,
				     .file = MS_PEER_FILE_ROOTFS,
				     .offset = 1ull << 40,
				     .length = 8192};
	ms_uuid_generate(&in.build_id);
	for (int op = MS_PEER_OP_STATUS; op <= MS_PEER_OP_CHECKSUMS; op++) {
		in.op = (enum ms_peer_op)op;
		char uri[MS_PEER_URI_MAX];
		assert_int_equal(ms_peer_request_uri(&in, uri, sizeof(uri)), 0);
		struct ms_peer_request out = expect_parsed("GET", uri);
		assert_int_equal(out.op, in.op);
		assert_true(ms_uuid_eq(&out.build_id, &in.build_id));
		if (op == MS_PEER_OP_HEADER || op == MS_PEER_OP_DATA)
			assert_int_equal(out.file, in.file);
		if (op == MS_PEER_OP_DATA) {
			assert_int_equal(out.offset, in.offset);
			assert_int_equal(out.length, in.length);
		}
	}
	char tiny[8];
	assert_int_equal(ms_peer_request_uri(&in, tiny, sizeof(tiny)), -ENAMETOOLONG);
	enum ms_peer_status st;
	for (int s = MS_PEER_AVAILABLE; s <= MS_PEER_USE_STORAGE; s++) {
		assert_int_equal(ms_peer_status_parse(ms_peer_status_name(s), &st), 0);
		assert_int_equal(st, s);
	}
	assert_int_equal(ms_peer_status_parse("Available", &st), -EINVAL);
	assert_int_equal(ms_peer_status_parse(NULL, &st), -EINVAL);
}

static void test_registry(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir();
	int err;
	struct ms_store *store = ms_store_fs_new(dir, &err);
	assert_non_null(store);
	ms_uuid id, other;
	ms_uuid_generate(&id);
	ms_uuid_generate(&other);
	int64_t now = 1700000000000LL;
	struct ms_peer_record rec;
	assert_int_equal(ms_peer_registry_lookup(store, &id, now, &rec), MS_ENOTFOUND);
	assert_int_equal(ms_peer_registry_put(store, &id, "127.0.0.1:4567", 60000, now), 0);
	assert_int_equal(ms_peer_registry_lookup(store, &id, now + 59999, &rec), 0);
	assert_string_equal(rec.address, "127.0.0.1:4567");
	assert_true(ms_uuid_eq(&rec.build_id, &id));
	assert_int_equal(rec.expires_at_ms, now + 60000);
	assert_int_equal(rec.written_at_ms, now);
	/* expired: ignored */
	assert_int_equal(ms_peer_registry_lookup(store, &id, now + 60000, &rec), MS_ENOTFOUND);
	/* rewritten: replaced */
	assert_int_equal(ms_peer_registry_put(store, &id, "127.0.0.2:1", 0, now + 60000), 0);
	assert_int_equal(ms_peer_registry_lookup(store, &id, now + 60001, &rec), 0);
	assert_string_equal(rec.address, "127.0.0.2:1");
	assert_int_equal(rec.expires_at_ms, now + 60000 + MS_PEER_TTL_DEFAULT_MS);
	/* bad addresses are not written */
	assert_int_equal(ms_peer_registry_put(store, &other, "", 1, now), -EINVAL);
	assert_int_equal(ms_peer_registry_put(store, &other, "127.0.0.1", 1, now), -EINVAL);
	assert_int_equal(ms_peer_registry_put(store, &other, "a b:1", 1, now), -EINVAL);
	assert_int_equal(ms_peer_registry_put(store, &other, "h:99999", 1, now), -EINVAL);
	assert_int_equal(ms_peer_registry_put(store, &MS_UUID_NIL, "h:1", 1, now), -EINVAL);
	/* a record under another build's key, and malformed ones, are ignored */
	char key[MS_STORE_KEY_MAX], id_text[MS_UUID_STR_LEN], body[512];
	assert_int_equal(ms_peer_registry_key(&other, key, sizeof(key)), 0);
	ms_uuid_format(&id, id_text);
	snprintf(body, sizeof(body),
		 "{\"build_id\":\"%s\",\"address\":\"h:1\",\"written_at_ms\":1,"
		 "\"expires_at_ms\":99999999999999}",
		 id_text);
	assert_int_equal(ms_store_put_buf(store, key, body, strlen(body), NULL), 0);
	assert_int_equal(ms_peer_registry_lookup(store, &other, now, &rec), MS_ENOTFOUND);
	static const char *const bad[] = {
	    "",
	    "{",
	    "[]",
	    "{\"address\":\"h:1\",\"written_at_ms\":1,\"expires_at_ms\":2}",
	    "{\"build_id\":\"x\",\"address\":\"h:1\",\"written_at_ms\":1,\"expires_at_ms\":2}",
	    "{\"build_id\":\"6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162\",\"address\":7,"
	    "\"written_at_ms\":1,\"expires_at_ms\":2}",
	    "{\"build_id\":\"6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162\",\"address\":\"h:1\","
	    "\"written_at_ms\":1,\"expires_at_ms\":-2}",
	    "{\"build_id\":\"6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162\",\"address\":\"h:1\","
	    "\"written_at_ms\":1,\"expires_at_ms\":1.5}",
	    "{\"build_id\":\"6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162\",\"address\":\"h:1\","
	    "\"written_at_ms\":1,\"expires_at_ms\":1e300}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ms_peer_record_parse(bad[i], strlen(bad[i]), &rec), MS_ECORRUPT);
	char big[MS_PEER_RECORD_MAX + 2];
	memset(big, ' ', sizeof(big));
	assert_int_equal(ms_peer_record_parse(big, sizeof(big), &rec), MS_ECORRUPT);
	/* removed; removing again is fine */
	assert_int_equal(ms_peer_registry_remove(store, &id), 0);
	assert_int_equal(ms_peer_registry_lookup(store, &id, now, &rec), MS_ENOTFOUND);
	assert_int_equal(ms_peer_registry_remove(store, &id), 0);
	ms_store_free(store);
	ms_test_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_routes),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_uri_round_trip),
	    cmocka_unit_test(test_registry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
