/*
 * peer_node.c - one node of the two-process peer test (test_peer_netns.sh):
 * each role runs in its own network namespace; the nodes share only the
 * object store (a directory) and a work directory for the script's signals.
 *
 *   peer_node a WORK LISTEN       pauses a guest (compare held until the first
 *                                 peer request comes, upload held until
 *                                 WORK/release exists), serves it on LISTEN,
 *                                 records it in the registry; after the upload:
 *                                 record removed, WORK/published, exit
 *   peer_node a-dies WORK LISTEN  a build uploaded, still served by a node that
 *                                 has not noticed its upload; the process kills
 *                                 itself (SIGKILL) on its 3rd data request
 *   peer_node b WORK MODE         node B resumes the build: MODE peer (served by
 *                                 A: header from A, durable, incomplete, no
 *                                 provisional id, every byte from A), store (A
 *                                 gone: everything from the store) or dies (A
 *                                 dies mid-read: no failed read)
 *
 * A writes WORK/expect.bin (the guest memory), WORK/prov-id and WORK/build-id,
 * then WORK/ready. Runs as a cmocka test so that any check fails cleanly.
 * The link is TLS: MEMSNAP_TEST_PEER_TLS_DIR holds fleet.pem and each node's
 * certificate and key (a.pem/a.key, b.pem/b.key; scripts/peer-certs.sh).
 */
#include "ms_test.h"
#include "ms_chain.h"
#include "build/storage.h"
#include "node/peer/client.h"
#include "node/peer/registry.h"
#include "node/peer/server.h"
#include "snapshot/pause.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define P     MS_PAGE_SIZE
#define PAGES 1024
#define TOKEN "netns-peer-secret"

static const char *role, *work, *arg;

static void path_of(char *out, size_t size, const char *name)
{
	snprintf(out, size, "%s/%s", work, name);
}

static void write_file(const char *name, const void *buf, size_t len)
{
	char path[1024], tmp[1100];
	path_of(path, sizeof(path), name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, path), 0);
}

static void *read_file(const char *name, size_t *len)
{
	char path[1024];
	path_of(path, sizeof(path), name);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("%s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	void *buf = malloc(*len + 1);
	assert_int_equal(fread(buf, 1, *len, f), *len);
	((char *)buf)[*len] = '\0';
	fclose(f);
	return buf;
}

static bool exists(const char *name)
{
	char path[1024];
	path_of(path, sizeof(path), name);
	return access(path, F_OK) == 0;
}

/* This node's certificates (the fleet's CA, NAME.pem, NAME.key) from MEMSNAP_TEST_PEER_TLS_DIR. */
static void load_tls(const char *name, struct ms_peer_tls_pem *pem)
{
	const char *dir = getenv("MEMSNAP_TEST_PEER_TLS_DIR");
	if (!dir || !*dir)
		fail_msg(
		    "set-up: MEMSNAP_TEST_PEER_TLS_DIR is not set (test_peer_netns.sh sets it)");
	char why[600];
	if (ms_test_peer_tls_load(dir, name, pem, why, sizeof(why)))
		fail_msg("set-up: %s", why);
}

static struct ms_store *open_store(void)
{
	char path[1024];
	path_of(path, sizeof(path), "store");
	int err;
	struct ms_store *store = ms_store_fs_new(path, &err);
	assert_non_null(store);
	return store;
}

/* ---- node A ---- */

static struct ms_future *compare_gate;
static atomic_int data_requests;

static int a_on_request(void *ctx, const struct ms_peer_request *req)
{
	(void)ctx;
	/* the first request from B comes while the compare is held: let it run now */
	ms_future_set(compare_gate, NULL);
	if (strcmp(role, "a-dies") == 0 && req->op == MS_PEER_OP_DATA &&
	    atomic_fetch_add(&data_requests, 1) + 1 >= 3)
		kill(getpid(), SIGKILL); /* the node dies in the middle of B's read */
	return 0;
}

static void node_a(void)
{
	bool dies = strcmp(role, "a-dies") == 0;
	struct ms_store *store = open_store();
	char cache[1024];
	path_of(cache, sizeof(cache), "cache-a");
	mkdir(cache, 0700);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = cache};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_test_chain chain;
	ms_test_chain_build(store, PAGES, &chain);
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(store, &chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	struct ms_build_storage storage = {
	    .store = store, .diffs = diffs, .cache_dir = cache, .data = MS_ARTIFACT_MEMFILE};
	struct ms_layered *parent = ms_layered_new(top, ms_build_storage_resolve, &storage);
	uint8_t *expect = ms_test_chain_image(&chain);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	ms_pageset_add_range(dirty, 0, 350);
	for (uint64_t p = 100; p < 350; p++)
		memset(expect + p * P, p < 300 ? (int)(p & 0xff) | 1 : 0, P);
	int fd = ms_test_guest_memfd(expect, PAGES);
	compare_gate = ms_future_new(NULL);
	struct ms_future *upload_gate = ms_future_new(NULL);
	if (dies) {
		ms_future_set(compare_gate, NULL);
		ms_future_set(upload_gate, NULL);
	}
	struct ms_pause_config cfg = {.store = store,
				      .diffs = diffs,
				      .cache_dir = cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .compare_gate = compare_gate,
				      .upload_gate = upload_gate};
	struct ms_pause *pause;
	const char snap[] = "vcpu state";
	assert_int_equal(ms_pause_start(&cfg, parent, fd, dirty, empty, snap, sizeof(snap), &pause),
			 0);
	const ms_uuid *id = ms_pause_build_id(pause);
	char text[MS_UUID_STR_LEN];
	if (!dies) { /* the provisional id, from the live header, for B to look for */
		struct ms_header_ref *live = ms_layered_header(ms_pause_file(pause));
		ms_uuid_format(&live->header->mappings.entries[0].build_id, text);
		assert_false(ms_uuid_eq(&live->header->mappings.entries[0].build_id, id));
		ms_header_ref_unref(live);
		write_file("prov-id", text, strlen(text));
	} else {
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 60 * MS_NSEC_PER_SEC), 0);
	}
	struct ms_peer_tls_pem tls;
	load_tls("a", &tls);
	struct ms_peer_server_config scfg = {
	    .listen = arg, .token = TOKEN, .tls = &tls, .on_request = a_on_request};
	struct ms_peer_server *server = ms_peer_server_start(&scfg, &err);
	if (!server)
		fail_msg("listen on %s: %s", arg, ms_strerror(err));
	/* a-dies: served as if this node had not seen its upload finish (no future) */
	struct ms_peer_build build = {.build_id = *id,
				      .memfile = ms_pause_file(pause),
				      .diffs = diffs,
				      .published = dies ? NULL : ms_pause_published(pause),
				      .snapfile = snap,
				      .snapfile_len = sizeof(snap)};
	assert_int_equal(ms_peer_server_add(server, &build), 0);
	assert_int_equal(ms_peer_registry_put(store, id, ms_peer_server_address(server), 0,
					      ms_peer_registry_now_ms()),
			 0);
	write_file("expect.bin", expect, PAGES * P);
	ms_uuid_format(id, text);
	write_file("build-id", text, strlen(text));
	write_file("ready", "", 0);
	if (dies)
		for (;;)
			sleep(1); /* until B's 3rd data request kills this process */
	while (!exists("release"))
		ms_clock_sleep_ns(10 * MS_NSEC_PER_MSEC);
	ms_future_set(upload_gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 120 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_peer_registry_remove(store, id), 0);
	assert_int_equal(ms_peer_server_remove(server, id, true), 0);
	ms_peer_server_stop(server);
	ms_peer_tls_pem_fini(&tls);
	write_file("published", "", 0);
	ms_pause_free(pause);
	ms_future_unref(compare_gate);
	ms_future_unref(upload_gate);
	ms_layered_free(parent);
	ms_diffstore_free(diffs);
	ms_test_chain_fini(&chain);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	free(expect);
	ms_store_free(store);
}

/* ---- node B ---- */

static void node_b(void)
{
	bool want_peer = strcmp(arg, "store") != 0;
	bool dies = strcmp(arg, "dies") == 0;
	struct ms_store *store = open_store();
	char cache[1024], name[64];
	snprintf(name, sizeof(name), "cache-b-%s", arg);
	path_of(cache, sizeof(cache), name);
	mkdir(cache, 0700);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = cache};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage storage = {
	    .store = store, .diffs = diffs, .cache_dir = cache, .data = MS_ARTIFACT_MEMFILE};
	struct ms_peer_tls_pem tls;
	load_tls("b", &tls);
	struct ms_peer_resolver_config rc = {.storage = &storage,
					     .token = TOKEN,
					     .client = {.tls = &tls,
							.attempts = 3,
							.retry_initial_ns = 20 * MS_NSEC_PER_MSEC,
							.piece = 64 << 10}};
	struct ms_peer_resolver *resolver = ms_peer_resolver_new(&rc, &err);
	size_t len;
	char *id_text = read_file("build-id", &len);
	ms_uuid id;
	assert_int_equal(ms_uuid_parse(id_text, &id), 0);
	free(id_text);
	struct ms_header *h;
	bool from_peer;
	assert_int_equal(
	    ms_peer_resolver_load_header(resolver, &id, MS_PEER_FILE_MEMFILE, &h, &from_peer), 0);
	assert_int_equal(from_peer, want_peer);
	assert_true(ms_uuid_eq(&h->meta.build_id, &id));
	assert_int_equal(h->incomplete, strcmp(arg, "peer") == 0);
	if (exists("prov-id")) { /* the header that crossed never names the provisional id */
		char *prov_text = read_file("prov-id", &len);
		ms_uuid prov;
		assert_int_equal(ms_uuid_parse(prov_text, &prov), 0);
		free(prov_text);
		for (size_t i = 0; i < h->mappings.count; i++)
			assert_false(ms_uuid_eq(&h->mappings.entries[i].build_id, &prov));
		assert_false(ms_uuid_eq(&h->meta.base_build_id, &prov));
	}
	struct ms_layered *file = ms_layered_new(h, ms_peer_resolve, resolver);
	uint8_t *expect = read_file("expect.bin", &len);
	assert_int_equal(len, PAGES * P);
	ms_test_check_pages(file, expect, 0, PAGES);
	char key[MS_ARTIFACT_KEY_MAX];
	assert_int_equal(ms_build_storage_key(&storage, &id, key, sizeof(key)), 0);
	struct ms_source *src;
	assert_int_equal(ms_diffstore_get(diffs, key, &src), 0);
	assert_int_equal(ms_peer_routing_is_routing(src), want_peer);
	if (want_peer) {
		struct ms_peer_routing_stats rs;
		ms_peer_routing_get_stats(src, &rs);
		printf("B: peer reads %llu, store reads %llu, peer failures %llu\n",
		       (unsigned long long)rs.peer_reads, (unsigned long long)rs.storage_reads,
		       (unsigned long long)rs.peer_failures);
		if (dies) {
			assert_true(rs.on_storage);
			/* the read that A died in went to the store whole (A's exit status,
			 * 137 on its 3rd data request, says it died inside the read) */
			assert_true(rs.peer_failures >= 1);
		} else {
			assert_false(rs.on_storage);
			assert_true(rs.peer_reads >= 1);
			assert_int_equal(rs.storage_reads, 0);
		}
	}
	ms_source_unref(src);
	free(expect);
	ms_layered_free(file);
	ms_diffstore_free(diffs);
	ms_peer_resolver_free(resolver);
	ms_peer_tls_pem_fini(&tls);
	ms_store_free(store);
}

static void test_role(void **state)
{
	(void)state;
	if (strcmp(role, "b") == 0)
		node_b();
	else
		node_a();
}

int main(int argc, char **argv)
{
	if (argc != 4 ||
	    (strcmp(argv[1], "a") && strcmp(argv[1], "a-dies") && strcmp(argv[1], "b"))) {
		fprintf(stderr, "usage: peer_node a|a-dies WORK LISTEN | b WORK peer|store|dies\n");
		return 2;
	}
	role = argv[1];
	work = argv[2];
	arg = argv[3];
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_role)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
