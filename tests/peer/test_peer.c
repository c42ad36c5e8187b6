/*
 * test_peer.c - peer transfer in one process over 127.0.0.1: node A pauses a
 * guest through the pause pipeline (the compare and the upload held by gates)
 * and serves the build with its peer server; node B (its own diff store and
 * cache dir, the same object store) reads it through the peer resolver.
 *
 *  - every status and every refusal of the server, with its HTTP code;
 *  - the header A serves is the durable one: never the provisional build id,
 *    marked incomplete while the upload is held; pending -> 503 not_available;
 *  - B reads all memory from A, then A's upload lands: use_storage moves B to
 *    the store for good, B's header is reloaded from the store, no more peer
 *    requests;
 *  - A's server stops in the middle of B's read, while the upload is still
 *    held: B's read succeeds, from the store, once the upload is released;
 *  - a peer miss reads the store; a static peer list finds the peer; a dead
 *    peer in the registry sends B straight to the store.
 *  - B checks A's data against A's checksum table once A's drain is done: a
 *    byte flipped in A's diff file fails B's read with MS_ECHECKSUM (counted),
 *    intact chunks read exactly, reads before the drain are unverified.
 *  - over TLS, data answers (from the connection's reused buffer) are exact,
 *    whatever their lengths, before and after A's drain;
 *  - the client against a fake peer (raw HTTP on 127.0.0.1): pieces received in
 *    place and the partial first and last pieces read exactly; an answer longer
 *    or shorter than asked is MS_EPROTO and writes nothing past the range; a
 *    refusal's JSON never lands in the caller's buffer.
 */
#include "ms_test.h"
#include "ms_chain.h"
#include "build/storage.h"
#include "header/serialize.h"
#include "node/peer/client.h"
#include "node/peer/registry.h"
#include "node/peer/server.h"
#include "snapshot/pause.h"
#include "storage/checksums.h"
#include "util/clock.h"
#include "util/err.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define P     MS_PAGE_SIZE
#define PAGES 1024
#define TOKEN "peer-secret"

struct node_b {
	char cache[600];
	struct ms_diffstore *diffs;
	struct ms_build_storage storage;
	struct ms_peer_resolver *resolver;
	struct ms_layered *file;
	atomic_int swaps; /* on_storage calls that swapped the header in */
};

struct fixture {
	char *dir;
	char cache[512];
	struct ms_store *store;
	struct ms_diffstore *diffs;
	struct ms_build_storage parent_storage;
	struct ms_layered *parent;
	struct ms_test_chain chain;
	uint8_t *expect;
	struct ms_pageset *dirty, *empty;
	struct ms_future *compare_gate, *upload_gate, *drain_gate;
	struct ms_pause *pause;
	struct ms_peer_server *server;
	unsigned damage_checksums; /* serve_a: tables A serves damaged */
	struct node_b b;
};

static const char snapfile[] = "vcpu and device state";
static const char metadata[] = "{\"kernel\":\"test\"}";

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	char path[600];
	snprintf(path, sizeof(path), "%s/store", f->dir);
	int err;
	f->store = ms_store_fs_new(path, &err);
	snprintf(f->cache, sizeof(f->cache), "%s/cache-a", f->dir);
	assert_int_equal(mkdir(f->cache, 0700), 0);
	struct ms_diffstore_config dcfg = {.cache_dir = f->cache};
	f->diffs = ms_diffstore_new(&dcfg, &err);
	ms_test_chain_build(f->store, PAGES, &f->chain);
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(f->store, &f->chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	f->parent_storage = (struct ms_build_storage){.store = f->store,
						      .diffs = f->diffs,
						      .cache_dir = f->cache,
						      .data = MS_ARTIFACT_MEMFILE};
	f->parent = ms_layered_new(top, ms_build_storage_resolve, &f->parent_storage);
	/* the guest ran: 0..99 rewritten equal, 100..299 changed, 300..349 zeroed */
	f->expect = ms_test_chain_image(&f->chain);
	f->dirty = ms_pageset_new();
	f->empty = ms_pageset_new();
	ms_pageset_add_range(f->dirty, 0, 350);
	for (uint64_t p = 100; p < 350; p++)
		memset(f->expect + p * P, p < 300 ? (int)(p & 0xff) | 1 : 0, P);
	f->compare_gate = ms_future_new(NULL);
	f->upload_gate = ms_future_new(NULL);
	f->drain_gate = ms_future_new(NULL);
	*state = f;
	return 0;
}

static void node_b_fini(struct node_b *b)
{
	ms_layered_free(b->file);
	ms_peer_resolver_free(b->resolver);
	ms_diffstore_free(b->diffs);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_peer_server_stop(f->server);
	/* nobody holds the gates any more: a pause still held finishes its pipeline */
	ms_future_set(f->compare_gate, NULL);
	ms_future_set(f->upload_gate, NULL);
	ms_future_set(f->drain_gate, NULL);
	node_b_fini(&f->b);
	if (f->pause)
		ms_pause_free(f->pause);
	ms_future_unref(f->compare_gate);
	ms_future_unref(f->upload_gate);
	ms_future_unref(f->drain_gate);
	ms_layered_free(f->parent);
	ms_diffstore_free(f->diffs);
	ms_store_free(f->store);
	ms_test_chain_fini(&f->chain);
	free(f->expect);
	ms_pageset_free(f->dirty);
	ms_pageset_free(f->empty);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

/* A pauses its guest: in-flight serving on, the compare, the upload (and the drain) held. */
static void pause_a_gated(struct fixture *f, struct ms_future *drain_gate)
{
	int fd = ms_test_guest_memfd(f->expect, PAGES);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .compare_gate = f->compare_gate,
				      .drain_gate = drain_gate,
				      .upload_gate = f->upload_gate};
	assert_int_equal(ms_pause_start(&cfg, f->parent, fd, f->dirty, f->empty, snapfile,
					sizeof(snapfile), &f->pause),
			 0);
}

static void pause_a(struct fixture *f)
{
	pause_a_gated(f, NULL);
}

static struct ms_peer_server *serve_a_with(struct fixture *f, int64_t header_wait_ns,
					   int (*hook)(void *, const struct ms_peer_request *),
					   void *hook_ctx, const struct ms_peer_tls_pem *tls)
{
	struct ms_peer_server_config cfg = {.listen = "127.0.0.1:0",
					    .token = TOKEN,
					    .tls = tls,
					    .header_wait_ns = header_wait_ns,
					    .on_request = hook,
					    .on_request_ctx = hook_ctx,
					    .test_damage_checksums = f->damage_checksums};
	int err;
	struct ms_peer_server *server = ms_peer_server_start(&cfg, &err);
	assert_non_null(server);
	struct ms_peer_build build = {.build_id = *ms_pause_build_id(f->pause),
				      .memfile = ms_pause_file(f->pause),
				      .diffs = f->diffs,
				      .published = ms_pause_published(f->pause),
				      .checksums = ms_pause_data_checksums(f->pause),
				      .snapfile = snapfile,
				      .snapfile_len = sizeof(snapfile),
				      .metadata = metadata,
				      .metadata_len = strlen(metadata)};
	assert_int_equal(ms_peer_server_add(server, &build), 0);
	assert_int_equal(ms_peer_server_add(server, &build), -EEXIST);
	return server;
}

static struct ms_peer_server *serve_a(struct fixture *f, int64_t header_wait_ns,
				      int (*hook)(void *, const struct ms_peer_request *),
				      void *hook_ctx)
{
	return serve_a_with(f, header_wait_ns, hook, hook_ctx, NULL);
}

/* A records where the build is as its pause starts (the registry). */
static void a_records(struct fixture *f)
{
	assert_int_equal(ms_peer_registry_put(f->store, ms_pause_build_id(f->pause),
					      ms_peer_server_address(f->server), 0,
					      ms_peer_registry_now_ms()),
			 0);
}

/* on_storage: B swaps in the header the store has now (e2b reloads it the same way). */
static void b_on_storage(void *ctx, const ms_uuid *build_id, struct ms_header *header)
{
	struct node_b *b = ctx;
	struct ms_header_ref *live = ms_layered_header(b->file);
	bool ours = ms_uuid_eq(&live->header->meta.build_id, build_id);
	ms_header_ref_unref(live);
	if (ours && ms_layered_swap(b->file, header) == 0) {
		atomic_fetch_add(&b->swaps, 1);
		return;
	}
	ms_header_free(header);
}

/* Node B: its own cache dir and diff store, the shared store, the peer resolver. */
static void node_b_init(struct fixture *f, const char *const *static_peers, size_t count,
			uint32_t piece)
{
	struct node_b *b = &f->b;
	snprintf(b->cache, sizeof(b->cache), "%s/cache-b", f->dir);
	mkdir(b->cache, 0700);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = b->cache};
	b->diffs = ms_diffstore_new(&dcfg, &err);
	b->storage = (struct ms_build_storage){.store = f->store,
					       .diffs = b->diffs,
					       .cache_dir = b->cache,
					       .data = MS_ARTIFACT_MEMFILE};
	struct ms_peer_resolver_config rc = {
	    .storage = &b->storage,
	    .token = TOKEN,
	    .static_peers = static_peers,
	    .static_peer_count = count,
	    .client = {.attempts = 3, .retry_initial_ns = 10 * MS_NSEC_PER_MSEC, .piece = piece},
	    .on_storage = b_on_storage,
	    .ctx = b,
	    /* the routing sources' peer chunks: one request each; the tests that size
	     * them count the requests, so no read-ahead there */
	    .chunk_size = piece,
	    .read_size = piece,
	    .readahead = piece ? MS_CHUNK_READAHEAD_OFF : 0};
	b->resolver = ms_peer_resolver_new(&rc, &err);
	assert_non_null(b->resolver);
}

/* B opens the build for a resume: its header (from the peer when one has it). */
static void node_b_open(struct fixture *f, bool want_from_peer)
{
	struct ms_header *h;
	bool from_peer;
	assert_int_equal(ms_peer_resolver_load_header(f->b.resolver, ms_pause_build_id(f->pause),
						      MS_PEER_FILE_MEMFILE, &h, &from_peer),
			 0);
	assert_int_equal(from_peer, want_from_peer);
	assert_true(ms_uuid_eq(&h->meta.build_id, ms_pause_build_id(f->pause)));
	f->b.file = ms_layered_new(h, ms_peer_resolve, f->b.resolver);
	assert_non_null(f->b.file);
}

static void check_all(struct ms_layered *file, const uint8_t *expect)
{
	ms_test_check_pages(file, expect, 0, PAGES);
}

/* B's routing source for the new build (one reference), or NULL when it is another kind. */
static struct ms_source *b_source(struct fixture *f)
{
	char key[MS_ARTIFACT_KEY_MAX];
	assert_int_equal(
	    ms_build_storage_key(&f->b.storage, ms_pause_build_id(f->pause), key, sizeof(key)), 0);
	struct ms_source *src;
	assert_int_equal(ms_diffstore_get(f->b.diffs, key, &src), 0);
	if (!ms_peer_routing_is_routing(src)) {
		ms_source_unref(src);
		return NULL;
	}
	return src;
}

/* ---- raw HTTP: what a client that is not ours may send ---- */

struct raw_answer {
	long http;
	char status[32];
	size_t len;
};

static size_t raw_body(char *data, size_t size, size_t n, void *ctx)
{
	((struct raw_answer *)ctx)->len += size * n;
	return size * n;
}

static size_t raw_header(char *data, size_t size, size_t n, void *ctx)
{
	struct raw_answer *a = ctx;
	size_t len = size * n;
	const char name[] = MS_PEER_STATUS_HDR ": ";
	if (len > strlen(name) && strncasecmp(data, name, strlen(name)) == 0) {
		size_t v = len - strlen(name);
		while (v &&
		       (data[strlen(name) + v - 1] == '\r' || data[strlen(name) + v - 1] == '\n'))
			v--;
		snprintf(a->status, sizeof(a->status), "%.*s", (int)v, data + strlen(name));
	}
	return len;
}

static struct raw_answer raw(struct ms_peer_server *s, const char *method, const char *path,
			     const char *token)
{
	struct raw_answer a = {0};
	char url[1024], auth[128];
	snprintf(url, sizeof(url), "http://%s%s", ms_peer_server_address(s), path);
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(NULL, auth);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, raw_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, raw_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &a);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	assert_int_equal(curl_easy_perform(h), CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.http);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return a;
}

static void expect_raw(struct ms_peer_server *s, const char *method, const char *path,
		       const char *token, long http, const char *status, size_t len)
{
	struct raw_answer a = raw(s, method, path, token);
	if (a.http != http || strcmp(a.status, status) != 0)
		fail_msg("%s %s: %ld %s, not %ld %s", method, path, a.http, a.status, http, status);
	if (len != (size_t)-1 && a.len != len)
		fail_msg("%s %s: %zu bytes, not %zu", method, path, a.len, len);
}

/* ---- tests ---- */

static void test_statuses_and_bad_input(void **state)
{
	struct fixture *f = *state;
	pause_a(f);
	ms_future_set(f->compare_gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_COMPARED, 60 * MS_NSEC_PER_SEC), 0);
	f->server = serve_a(f, 0, NULL, NULL);
	char id[MS_UUID_STR_LEN], base[128], path[512];
	ms_uuid_format(ms_pause_build_id(f->pause), id);
	snprintf(base, sizeof(base), "/peer/v1/builds/%s", id);
	uint64_t data_size = 200 * P; /* the pages kept by the compare */

	/* available */
	expect_raw(f->server, "GET", base, TOKEN, 200, "available", (size_t)-1);
	snprintf(path, sizeof(path), "%s/memfile.header", base);
	expect_raw(f->server, "GET", path, TOKEN, 200, "available", (size_t)-1);
	snprintf(path, sizeof(path), "%s/memfile?offset=4096&length=8192", base);
	expect_raw(f->server, "GET", path, TOKEN, 200, "available", 8192);
	snprintf(path, sizeof(path), "%s/memfile?offset=%llu&length=4096", base,
		 (unsigned long long)(data_size - P));
	expect_raw(f->server, "GET", path, TOKEN, 200, "available", 4096);
	snprintf(path, sizeof(path), "%s/snapfile", base);
	expect_raw(f->server, "GET", path, TOKEN, 200, "available", sizeof(snapfile));
	snprintf(path, sizeof(path), "%s/metadata.json", base);
	expect_raw(f->server, "GET", path, TOKEN, 200, "available", strlen(metadata));
	/* not held here */
	snprintf(path, sizeof(path), "%s/rootfs.ext4.header", base);
	expect_raw(f->server, "GET", path, TOKEN, 404, "not_available", (size_t)-1);
	expect_raw(f->server, "GET", "/peer/v1/builds/6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162", TOKEN,
		   404, "not_available", (size_t)-1);
	expect_raw(
	    f->server, "GET",
	    "/peer/v1/builds/6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162/memfile?offset=0&length=4096",
	    TOKEN, 404, "not_available", (size_t)-1);
	/* tokens */
	expect_raw(f->server, "GET", base, NULL, 401, "not_available", (size_t)-1);
	expect_raw(f->server, "GET", base, "peer-secreT", 401, "not_available", (size_t)-1);
	expect_raw(f->server, "GET", base, "peer-secret-and-more", 401, "not_available",
		   (size_t)-1);
	expect_raw(f->server, "GET", base, "", 401, "not_available", (size_t)-1);
	/* ranges: unaligned, empty, negative, over the cap, past the end, bad last piece */
	static const char *const bad_ranges[] = {
	    "offset=1&length=4096",
	    "offset=0&length=0",
	    "offset=0&length=-4096",
	    "offset=-4096&length=4096",
	    "offset=0&length=16781312",
	    "offset=0&length=4095",
	    "offset=0",
	};
	for (size_t i = 0; i < sizeof(bad_ranges) / sizeof(bad_ranges[0]); i++) {
		snprintf(path, sizeof(path), "%s/memfile?%s", base, bad_ranges[i]);
		expect_raw(f->server, "GET", path, TOKEN, 400, "not_available", (size_t)-1);
	}
	snprintf(path, sizeof(path), "%s/memfile?offset=%llu&length=4096", base,
		 (unsigned long long)data_size);
	expect_raw(f->server, "GET", path, TOKEN, 400, "not_available", (size_t)-1);
	snprintf(path, sizeof(path), "%s/memfile?offset=%llu&length=8192", base,
		 (unsigned long long)(data_size - P));
	expect_raw(f->server, "GET", path, TOKEN, 400, "not_available", (size_t)-1);
	snprintf(path, sizeof(path), "%s/memfile?offset=0&length=16777216", base);
	expect_raw(f->server, "GET", path, TOKEN, 400, "not_available", (size_t)-1);
	/* methods, paths */
	expect_raw(f->server, "POST", base, TOKEN, 405, "not_available", (size_t)-1);
	expect_raw(f->server, "GET", "/peer/v1/builds/nope", TOKEN, 400, "not_available",
		   (size_t)-1);
	expect_raw(f->server, "GET", "/v1/sandboxes", TOKEN, 404, "not_available", (size_t)-1);
	struct ms_peer_server_stats st;
	ms_peer_server_get_stats(f->server, &st);
	assert_int_equal(st.unauthorized, 4);
	assert_int_equal(st.bad_requests, 12);
	assert_int_equal(st.available, 6);
	assert_int_equal(st.data_bytes, 8192 + 4096);
	/* plain HTTP: both data answers went out from a zero-copy view of the source */
	assert_int_equal(st.data_zero_copy, 2);

	/* the bytes are the build's packed data: the kept pages 100..299 in order */
	struct ms_peer_client_config cc = {.address = ms_peer_server_address(f->server),
					   .token = TOKEN};
	int err;
	struct ms_peer_client *client = ms_peer_client_new(&cc, &err);
	uint64_t size;
	enum ms_peer_status status;
	assert_int_equal(ms_peer_client_status(client, ms_pause_build_id(f->pause),
					       MS_PEER_FILE_MEMFILE, &status, &size),
			 0);
	assert_int_equal(status, MS_PEER_AVAILABLE);
	assert_int_equal(size, data_size);
	struct ms_source *peer =
	    ms_peer_source_new(client, ms_pause_build_id(f->pause), MS_PEER_FILE_MEMFILE, size);
	uint8_t *got = malloc(size);
	assert_int_equal(ms_source_read(peer, got, 0, size), 0);
	assert_memory_equal(got, f->expect + 100 * P, size);
	/* unaligned reads are widened to blocks and cut back */
	assert_int_equal(ms_source_read(peer, got, 5000, 3 * P + 17), 0);
	assert_memory_equal(got, f->expect + 100 * P + 5000, 3 * P + 17);
	free(got);
	struct ms_header *h;
	assert_int_equal(ms_peer_client_header(client, ms_pause_build_id(f->pause),
					       MS_PEER_FILE_MEMFILE, &status, &h),
			 0);
	assert_int_equal(status, MS_PEER_AVAILABLE);
	assert_true(h->incomplete); /* the upload is held */
	ms_header_free(h);

	/* uploaded: use_storage for everything */
	ms_future_set(f->upload_gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_PUBLISHED, 60 * MS_NSEC_PER_SEC), 0);
	expect_raw(f->server, "GET", base, TOKEN, 410, "use_storage", (size_t)-1);
	snprintf(path, sizeof(path), "%s/memfile?offset=0&length=4096", base);
	expect_raw(f->server, "GET", path, TOKEN, 410, "use_storage", (size_t)-1);
	uint8_t page[P];
	assert_int_equal(ms_source_read(peer, page, 0, P), MS_ENOTFOUND);
	assert_int_equal(ms_peer_source_status(peer), MS_PEER_USE_STORAGE);
	/* removed after its upload: still use_storage (a tombstone), not "unknown" */
	assert_int_equal(ms_peer_server_remove(f->server, ms_pause_build_id(f->pause), true), 0);
	expect_raw(f->server, "GET", base, TOKEN, 410, "use_storage", (size_t)-1);
	assert_int_equal(ms_peer_server_remove(f->server, ms_pause_build_id(f->pause), true),
			 MS_ENOTFOUND);
	/* registered again, then removed without an upload: unknown */
	struct ms_peer_build again = {.build_id = *ms_pause_build_id(f->pause),
				      .memfile = ms_pause_file(f->pause),
				      .diffs = f->diffs,
				      .published = ms_pause_published(f->pause)};
	assert_int_equal(ms_peer_server_add(f->server, &again), 0);
	expect_raw(f->server, "GET", base, TOKEN, 410, "use_storage", (size_t)-1); /* published */
	assert_int_equal(ms_peer_server_remove(f->server, ms_pause_build_id(f->pause), false), 0);
	expect_raw(f->server, "GET", base, TOKEN, 404, "not_available", (size_t)-1);
	ms_source_unref(peer);
	ms_peer_client_unref(client);

	/* a client of a server that is not there: a transport error after its retries */
	struct ms_peer_client_config dead = {.address = "127.0.0.1:1",
					     .token = TOKEN,
					     .attempts = 2,
					     .retry_initial_ns = MS_NSEC_PER_MSEC};
	client = ms_peer_client_new(&dead, &err);
	assert_int_equal(ms_peer_client_status(client, ms_pause_build_id(f->pause),
					       MS_PEER_FILE_MEMFILE, &status, &size),
			 -ECONNREFUSED);
	ms_peer_client_unref(client);
	struct ms_peer_server_config bad = {.listen = "127.0.0.1:0", .token = ""};
	assert_null(ms_peer_server_start(&bad, &err));
	assert_int_equal(err, -EINVAL);
	bad = (struct ms_peer_server_config){.listen = "localhost", .token = TOKEN};
	assert_null(ms_peer_server_start(&bad, &err));
	assert_int_equal(err, -EINVAL);
}

struct header_fetch {
	struct fixture *f;
	int err;
	enum ms_peer_status status;
	struct ms_header *header;
};

static void *fetch_header(void *arg)
{
	struct header_fetch *hf = arg;
	struct ms_peer_client_config cc = {.address = ms_peer_server_address(hf->f->server),
					   .token = TOKEN};
	int err;
	struct ms_peer_client *client = ms_peer_client_new(&cc, &err);
	hf->err = ms_peer_client_header(client, ms_pause_build_id(hf->f->pause),
					MS_PEER_FILE_MEMFILE, &hf->status, &hf->header);
	ms_peer_client_unref(client);
	return NULL;
}

static void test_header_never_provisional(void **state)
{
	struct fixture *f = *state;
	pause_a(f);
	f->server = serve_a(f, 0, NULL, NULL);
	/* the live header is the provisional one: collect the ids only it names */
	struct ms_header_ref *live = ms_layered_header(ms_pause_file(f->pause));
	ms_uuid prov[8];
	size_t nprov = 0;
	for (size_t i = 0; i < live->header->mappings.count; i++) {
		const ms_uuid *id = &live->header->mappings.entries[i].build_id;
		bool known = ms_uuid_is_nil(id);
		for (int l = 0; l < MS_CHAIN_LAYERS; l++)
			known = known || ms_uuid_eq(id, &f->chain.ids[l]);
		for (size_t k = 0; k < nprov; k++)
			known = known || ms_uuid_eq(id, &prov[k]);
		if (!known && nprov < 8)
			prov[nprov++] = *id;
	}
	ms_header_ref_unref(live);
	assert_int_equal(nprov, 1);
	assert_false(ms_uuid_eq(&prov[0], ms_pause_build_id(f->pause)));

	/* a server that waits 100 ms for the durable header: 503 not_available (the gate is shut)
	 */
	struct ms_peer_server_config short_cfg = {
	    .listen = "127.0.0.1:0", .token = TOKEN, .header_wait_ns = 100 * MS_NSEC_PER_MSEC};
	int err;
	struct ms_peer_server *impatient = ms_peer_server_start(&short_cfg, &err);
	struct ms_peer_build build = {.build_id = *ms_pause_build_id(f->pause),
				      .memfile = ms_pause_file(f->pause),
				      .diffs = f->diffs,
				      .published = ms_pause_published(f->pause)};
	assert_int_equal(ms_peer_server_add(impatient, &build), 0);
	char path[256], id[MS_UUID_STR_LEN];
	ms_uuid_format(ms_pause_build_id(f->pause), id);
	snprintf(path, sizeof(path), "/peer/v1/builds/%s/memfile.header", id);
	expect_raw(impatient, "GET", path, TOKEN, 503, "not_available", (size_t)-1);
	snprintf(path, sizeof(path), "/peer/v1/builds/%s/memfile?offset=0&length=4096", id);
	expect_raw(impatient, "GET", path, TOKEN, 503, "not_available", (size_t)-1);
	assert_int_equal(ms_peer_server_remove(impatient, ms_pause_build_id(f->pause), false), 0);
	ms_peer_server_stop(impatient);

	/* the patient server: a request in flight while the compare is held gets the durable one */
	struct header_fetch hf = {.f = f};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, fetch_header, &hf), 0);
	struct ms_peer_server_stats st;
	do {
		ms_clock_sleep_ns(MS_NSEC_PER_MSEC);
		ms_peer_server_get_stats(f->server, &st);
	} while (st.requests == 0);
	ms_future_set(f->compare_gate, NULL);
	pthread_join(t, NULL);
	assert_int_equal(hf.err, 0);
	assert_int_equal(hf.status, MS_PEER_AVAILABLE);
	struct ms_header *h = hf.header;
	assert_true(ms_uuid_eq(&h->meta.build_id, ms_pause_build_id(f->pause)));
	assert_true(h->incomplete);
	for (size_t i = 0; i < h->mappings.count; i++)
		assert_false(ms_uuid_eq(&h->mappings.entries[i].build_id, &prov[0]));
	assert_false(ms_uuid_eq(&h->meta.base_build_id, &prov[0]));
	for (size_t i = 0; i < h->build_count; i++)
		assert_false(ms_uuid_eq(&h->builds[i].build_id, &prov[0]));
	assert_int_equal(ms_mappings_bytes_of(&h->mappings, ms_pause_build_id(f->pause)), 200 * P);
	ms_header_free(h);
}

static void test_routing_peer_then_storage(void **state)
{
	struct fixture *f = *state;
	pause_a(f);
	f->server = serve_a(f, 0, NULL, NULL);
	/* A records where the build is as its pause starts (the registry, no static list) */
	a_records(f);
	ms_future_set(f->compare_gate, NULL);
	node_b_init(f, NULL, 0, 64 << 10);
	node_b_open(f, true);
	struct ms_header_ref *bh = ms_layered_header(f->b.file);
	assert_true(bh->header->incomplete);
	ms_header_ref_unref(bh);
	/*
	 * cross-node resume while the upload is held: the first 200 pages (the new
	 * build's pages 100..199 come from A, in 64 KiB chunks that B caches)
	 */
	ms_test_check_pages(f->b.file, f->expect, 0, 200);
	void *blob;
	size_t blob_len;
	bool from_peer;
	assert_int_equal(ms_peer_resolver_load_blob(f->b.resolver, ms_pause_build_id(f->pause),
						    MS_PEER_OP_SNAPFILE, 1 << 20, &blob, &blob_len,
						    &from_peer),
			 0);
	assert_true(from_peer);
	assert_int_equal(blob_len, sizeof(snapfile));
	assert_memory_equal(blob, snapfile, sizeof(snapfile));
	free(blob);
	struct ms_source *src = b_source(f);
	assert_non_null(src);
	struct ms_peer_routing_stats rs;
	ms_peer_routing_get_stats(src, &rs);
	assert_true(rs.peer_reads > 0);
	assert_int_equal(rs.storage_reads, 0);
	assert_false(rs.on_storage);
	struct ms_peer_server_stats st;
	ms_peer_server_get_stats(f->server, &st);
	/* 100 pages asked, whole 64 KiB chunks fetched, nothing twice */
	assert_true(st.data_bytes >= 100 * P && st.data_bytes <= 112 * P);
	ms_test_check_pages(f->b.file, f->expect, 0, 200);
	uint64_t cached_bytes = st.data_bytes;
	ms_peer_server_get_stats(f->server, &st);
	assert_int_equal(st.data_bytes, cached_bytes); /* read again: B's cache */
	/* nothing of the new build is in the store yet */
	struct ms_header *none;
	assert_int_equal(ms_build_storage_load_header(f->store, ms_pause_build_id(f->pause),
						      MS_ARTIFACT_MEMFILE_HEADER, &none),
			 MS_ENOTFOUND);

	/* the upload lands; A deletes its record */
	ms_future_set(f->upload_gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_PUBLISHED, 60 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_peer_registry_remove(f->store, ms_pause_build_id(f->pause)), 0);
	assert_int_equal(ms_peer_resolver_load_blob(f->b.resolver, ms_pause_build_id(f->pause),
						    MS_PEER_OP_SNAPFILE, 1 << 20, &blob, &blob_len,
						    &from_peer),
			 0);
	assert_false(from_peer); /* the store's copy now */
	assert_int_equal(blob_len, sizeof(snapfile));
	assert_memory_equal(blob, snapfile, sizeof(snapfile));
	free(blob);
	/* B reads on: its cache, then use_storage for the rest, then the store, for good;
	 * its header reloaded */
	check_all(f->b.file, f->expect);
	ms_peer_routing_get_stats(src, &rs);
	assert_true(rs.on_storage);
	assert_true(rs.moved_by_use_storage);
	assert_true(rs.storage_reads > 0);
	assert_int_equal(rs.peer_failures, 0);
	assert_int_equal(atomic_load(&f->b.swaps), 1);
	bh = ms_layered_header(f->b.file);
	assert_false(bh->header->incomplete);
	assert_non_null(ms_header_build(bh->header, ms_pause_build_id(f->pause)));
	ms_header_ref_unref(bh);
	ms_peer_server_get_stats(f->server, &st);
	uint64_t requests = st.requests;
	check_all(f->b.file, f->expect);
	ms_peer_server_get_stats(f->server, &st);
	assert_int_equal(st.requests, requests); /* nobody asks the peer any more */
	ms_source_unref(src);
}

/* The peer dies on its 3rd data request: the server stops, then A's upload goes on. */
struct killer {
	struct fixture *f;
	atomic_int data_requests;
	atomic_bool triggered;
	pthread_t thread;
};

static void *kill_a(void *arg)
{
	struct killer *k = arg;
	ms_peer_server_stop(k->f->server);
	k->f->server = NULL;
	ms_future_set(k->f->upload_gate, NULL); /* the store gets the build only now */
	return NULL;
}

static int on_request_kill(void *ctx, const struct ms_peer_request *req)
{
	struct killer *k = ctx;
	if (req->op != MS_PEER_OP_DATA)
		return 0;
	if (atomic_load(&k->triggered) || atomic_fetch_add(&k->data_requests, 1) + 1 >= 3) {
		if (!atomic_exchange(&k->triggered, true))
			pthread_create(&k->thread, NULL, kill_a, k);
		return -1; /* the connection drops without an answer */
	}
	return 0;
}

static void test_peer_dies_mid_read(void **state)
{
	struct fixture *f = *state;
	pause_a(f);
	struct killer k = {.f = f};
	f->server = serve_a(f, 0, on_request_kill, &k);
	a_records(f);
	ms_future_set(f->compare_gate, NULL);
	node_b_init(f, NULL, 0, 64 << 10); /* 200 pages in 13 requests of 64 KiB */
	node_b_open(f, true);
	/* one read of all memory: A dies during it; not one failed read */
	check_all(f->b.file, f->expect);
	assert_true(atomic_load(&k.triggered));
	pthread_join(k.thread, NULL);
	assert_null(f->server);
	struct ms_source *src = b_source(f);
	assert_non_null(src);
	struct ms_peer_routing_stats rs;
	ms_peer_routing_get_stats(src, &rs);
	assert_true(rs.on_storage);
	assert_false(rs.moved_by_use_storage);
	assert_true(rs.peer_failures >= 1);
	assert_true(rs.storage_reads >= 1);
	assert_int_equal(atomic_load(&f->b.swaps), 1);
	ms_source_unref(src);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_PUBLISHED, 60 * MS_NSEC_PER_SEC), 0);
	check_all(f->b.file, f->expect);
}

/*
 * B checks A's data against the table A built after its drain: before the drain
 * the table is not there (503 not_available) and B's reads of the memfd stay
 * unverified but exact; after it, a byte flipped in A's diff file (the upload
 * held) fails B's read with MS_ECHECKSUM, counted, without a move to the store
 * (which does not have the build) - and intact chunks still read exactly.
 */
static void test_peer_data_checked(void **state)
{
	struct fixture *f = *state;
	pause_a_gated(f, f->drain_gate);
	f->server = serve_a(f, 0, NULL, NULL);
	a_records(f);
	ms_future_set(f->compare_gate, NULL);
	char id[MS_UUID_STR_LEN], path[256];
	ms_uuid_format(ms_pause_build_id(f->pause), id);
	snprintf(path, sizeof(path), "/peer/v1/builds/%s/checksums", id);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_COMPARED, 60 * MS_NSEC_PER_SEC), 0);
	expect_raw(f->server, "GET", path, TOKEN, 503, "not_available", (size_t)-1);
	node_b_init(f, NULL, 0, 64 << 10);
	node_b_open(f, true);
	/* the drain is held: pages 100..149 of the new build from A's memfd, unverified */
	ms_test_check_pages(f->b.file, f->expect, 100, 50);

	ms_future_set(f->drain_gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_DRAINED, 60 * MS_NSEC_PER_SEC), 0);
	expect_raw(f->server, "GET", path, TOKEN, 200, "available", (size_t)-1);
	/* the packed space: the kept pages 100..299 in order; flip one byte of page 250 */
	char file[1024];
	snprintf(file, sizeof(file), "%s/%s.memfile", f->cache, id);
	int fd = open(file, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	off_t at = (off_t)(250 - 100) * P + 123;
	uint8_t byte;
	assert_int_equal(pread(fd, &byte, 1, at), 1);
	assert_int_equal(byte, f->expect[250 * P + 123]);
	byte ^= 0x40;
	assert_int_equal(pwrite(fd, &byte, 1, at), 1);
	close(fd);
	/* B asked for the table while the drain was held: it asks again after this */
	ms_clock_sleep_ns(2 * MS_PEER_SUMS_RETRY_NS);

	uint64_t failures = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	uint8_t *page = malloc(P);
	assert_int_equal(ms_layered_read(f->b.file, page, 250 * (uint64_t)P, P), MS_ECHECKSUM);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), failures + 1);
	/* intact chunks of the same build read exactly, checked */
	ms_test_check_pages(f->b.file, f->expect, 150, 90);
	ms_test_check_pages(f->b.file, f->expect, 260, 40);
	assert_int_equal(ms_layered_read(f->b.file, page, 250 * (uint64_t)P, P), MS_ECHECKSUM);
	free(page);
	struct ms_source *src = b_source(f);
	assert_non_null(src);
	struct ms_peer_routing_stats rs;
	ms_peer_routing_get_stats(src, &rs);
	assert_false(rs.on_storage); /* not a dead peer, and the store has no build */
	assert_int_equal(rs.waits, 0);
	assert_int_equal(rs.storage_reads, 0);
	ms_source_unref(src);
}

/*
 * A's checksum table reaches B damaged, twice (the server's test hook): B's read
 * fails with MS_ECHECKSUM, counted once as a damaged table, and the table is not
 * kept - the next read asks A again, gets it intact and reads exactly. Before,
 * the damaged answer was cached and every later read of the build failed.
 */
static void test_damaged_peer_table_not_kept(void **state)
{
	struct fixture *f = *state;
	f->damage_checksums = 2; /* the first fetch and its one retry */
	pause_a(f);
	f->server = serve_a(f, 0, NULL, NULL);
	a_records(f);
	ms_future_set(f->compare_gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_DRAINED, 60 * MS_NSEC_PER_SEC), 0);
	node_b_init(f, NULL, 0, 64 << 10);
	node_b_open(f, true);
	uint64_t tables = ms_integrity_failures(MS_INTEGRITY_CHECKSUMS);
	uint64_t data = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	uint8_t *page = malloc(P);
	assert_int_equal(ms_layered_read(f->b.file, page, 250 * (uint64_t)P, P), MS_ECHECKSUM);
	free(page);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_CHECKSUMS), tables + 1);
	/* asked again: intact now, every page of the build exact and checked */
	ms_test_check_pages(f->b.file, f->expect, 100, 200);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_CHECKSUMS), tables + 1);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), data);
	struct ms_source *src = b_source(f);
	assert_non_null(src);
	struct ms_peer_routing_stats rs;
	ms_peer_routing_get_stats(src, &rs);
	assert_false(rs.on_storage);
	assert_int_equal(rs.storage_reads, 0);
	ms_source_unref(src);
}

static void test_static_list_miss_and_dead_record(void **state)
{
	struct fixture *f = *state;
	pause_a(f);
	ms_future_set(f->compare_gate, NULL);
	f->server = serve_a(f, 0, NULL, NULL);
	/* no record: the static list finds A (a dead peer listed first is passed over) */
	const char *const peers[] = {"127.0.0.1:1", ms_peer_server_address(f->server)};
	node_b_init(f, peers, 2, 0);
	node_b_open(f, true);
	check_all(f->b.file, f->expect);
	struct ms_source *src = b_source(f);
	assert_non_null(src);
	ms_source_unref(src);

	/* a miss: A does not hold the chain's top build, which is in the store */
	const ms_uuid *top = &f->chain.ids[MS_CHAIN_LAYERS - 1];
	struct ms_peer_client_config cc = {.address = ms_peer_server_address(f->server),
					   .token = TOKEN};
	int err;
	struct ms_peer_client *client = ms_peer_client_new(&cc, &err);
	struct ms_header *top_header;
	assert_int_equal(
	    ms_build_storage_load_header(f->store, top, MS_ARTIFACT_MEMFILE_HEADER, &top_header),
	    0);
	const struct ms_build_data *entry = ms_header_build(top_header, top);
	assert_non_null(entry);
	struct ms_peer_routing_config rc = {.client = client,
					    .storage = &f->b.storage,
					    .build_id = *top,
					    .size = (uint64_t)entry->size};
	struct ms_source *routing = ms_peer_routing_new(&rc, &err);
	assert_non_null(routing);
	/* expected: the store's own bytes of the build, read through a plain store source */
	struct ms_source *direct;
	assert_int_equal(ms_build_storage_open(&f->b.storage, top, top_header, &direct), 0);
	size_t len = (size_t)entry->size;
	uint8_t *want = malloc(len), *got = malloc(len);
	assert_int_equal(ms_source_read(direct, want, 0, len), 0);
	assert_int_equal(ms_source_read(routing, got, 0, len), 0);
	assert_memory_equal(got, want, len);
	struct ms_peer_routing_stats rs;
	ms_peer_routing_get_stats(routing, &rs);
	assert_true(rs.misses >= 1);
	assert_false(rs.on_storage); /* a miss is not a move */
	assert_int_equal(rs.peer_reads, 0);
	assert_int_equal(rs.storage_reads, 1);
	free(want);
	free(got);
	ms_source_unref(direct);
	ms_source_unref(routing);
	ms_header_free(top_header);

	/* a build nobody has: a clean error once the wait is over, not a hang */
	ms_uuid nobody;
	ms_uuid_generate(&nobody);
	rc = (struct ms_peer_routing_config){.client = client,
					     .storage = &f->b.storage,
					     .build_id = nobody,
					     .size = 16 * P,
					     .storage_wait_ns = 100 * MS_NSEC_PER_MSEC};
	routing = ms_peer_routing_new(&rc, &err);
	uint8_t page[P];
	assert_int_equal(ms_source_read(routing, page, 0, P), MS_ENOTFOUND);
	ms_source_unref(routing);
	ms_peer_client_unref(client);

	/* a record naming a dead node: B goes straight to the store (a chunked source) */
	ms_future_set(f->upload_gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_PUBLISHED, 60 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_peer_registry_put(f->store, ms_pause_build_id(f->pause), "127.0.0.1:1",
					      0, ms_peer_registry_now_ms()),
			 0);
	node_b_fini(&f->b);
	memset(&f->b, 0, sizeof(f->b));
	node_b_init(f, NULL, 0, 0);
	node_b_open(f, false);
	check_all(f->b.file, f->expect);
	assert_null(b_source(f));
}

static void load_pem(const char *dir, const char *name, struct ms_peer_tls_pem *pem)
{
	char why[300];
	if (ms_test_peer_tls_load(dir, name, pem, why, sizeof(why)))
		fail_msg("%s", why);
}

/*
 * TLS data answers come from the connection's reused buffer (server.c,
 * ms_peer_abuf): answers of growing and shrinking lengths on one connection
 * carry exactly the build's bytes, while A's drain is held (its memfd) and
 * after it (its diff file), and all of them share that one connection.
 */
static void test_tls_answers_exact(void **state)
{
	struct fixture *f = *state;
	const char *root = getenv("MEMSNAP_SOURCE_ROOT");
	assert_non_null(root);
	char tls_dir[600], cmd[2048];
	snprintf(tls_dir, sizeof(tls_dir), "%s/tls", f->dir);
	snprintf(cmd, sizeof(cmd), "sh %s/scripts/peer-certs.sh %s fleet a:127.0.0.1 b:127.0.0.1",
		 root, tls_dir);
	if (system(cmd) != 0)
		fail_msg("scripts/peer-certs.sh failed (is openssl installed?)");
	struct ms_peer_tls_pem a_pem = {0}, b_pem = {0};
	load_pem(tls_dir, "a", &a_pem);
	load_pem(tls_dir, "b", &b_pem);
	pause_a_gated(f, f->drain_gate);
	ms_future_set(f->compare_gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_COMPARED, 60 * MS_NSEC_PER_SEC), 0);
	f->server = serve_a_with(f, 0, NULL, NULL, &a_pem);
	struct ms_peer_client_config cfg = {.address = ms_peer_server_address(f->server),
					    .token = TOKEN,
					    .tls = &b_pem,
					    .attempts = 1,
					    .piece = 64 * P};
	int err;
	struct ms_peer_client *c = ms_peer_client_new(&cfg, &err);
	assert_non_null(c);
	/* the packed space: the kept pages 100..299 in order */
	const uint64_t data_size = 200 * P, offs[] = {0, 3 * P, 10 * P, 0, 150 * P, 7 * P};
	const size_t lens[] = {P, 5 * P, 64 * P, 2 * P, 50 * P, 3 * P};
	uint8_t *buf = malloc(64 * P);
	for (int drained = 0; drained < 2; drained++) {
		if (drained) {
			ms_future_set(f->drain_gate, NULL);
			assert_int_equal(
			    ms_pause_wait(f->pause, MS_PAUSE_DRAINED, 60 * MS_NSEC_PER_SEC), 0);
		}
		for (size_t t = 0; t < sizeof(lens) / sizeof(lens[0]); t++) {
			enum ms_peer_status st;
			memset(buf, 0xa5, 64 * P);
			assert_int_equal(ms_peer_client_read(c, ms_pause_build_id(f->pause),
							     MS_PEER_FILE_MEMFILE, data_size, buf,
							     offs[t], lens[t], &st),
					 0);
			assert_int_equal(st, MS_PEER_AVAILABLE);
			assert_memory_equal(buf, f->expect + 100 * P + offs[t], lens[t]);
		}
	}
	free(buf);
	struct ms_peer_server_stats st;
	ms_peer_server_get_stats(f->server, &st);
	assert_int_equal(st.connections, 1);
	assert_int_equal(st.data_zero_copy, 0); /* TLS: never a view */
	ms_peer_client_unref(c);
	ms_peer_tls_pem_fini(&a_pem);
	ms_peer_tls_pem_fini(&b_pem);
}

/* ---- the client against a fake peer ---- */

enum fake_mode { FAKE_EXACT, FAKE_LONGER, FAKE_SHORTER, FAKE_REFUSE };

struct fake_peer {
	int fd;
	unsigned port;
	enum fake_mode mode;
	pthread_t thread;
	atomic_uint requests;
};

static uint8_t fake_byte(uint64_t pos)
{
	return (uint8_t)(pos * 7 + pos / 4096);
}

/* One connection: each request answered (keep-alive) until the client closes. */
static void fake_serve(struct fake_peer *p, int c)
{
	char req[2048];
	size_t have = 0;
	for (;;) {
		char *end;
		while (!(end = memmem(req, have, "\r\n\r\n", 4))) {
			ssize_t n =
			    have < sizeof(req) ? read(c, req + have, sizeof(req) - have) : -1;
			if (n <= 0)
				return;
			have += (size_t)n;
		}
		size_t used = (size_t)(end + 4 - req);
		unsigned long long off = 0, len = 0;
		const char *q = memmem(req, used, "?offset=", 8);
		assert_non_null(q);
		assert_int_equal(sscanf(q, "?offset=%llu&length=%llu", &off, &len), 2);
		atomic_fetch_add(&p->requests, 1);
		char head[256];
		if (p->mode == FAKE_REFUSE) {
			static const char body[] =
			    "{\"status\":\"not_available\",\"error\":\"no\"}";
			int n =
			    snprintf(head, sizeof(head),
				     "HTTP/1.1 404 Not Found\r\nX-Memsnap-Peer: not_available\r\n"
				     "Content-Length: %zu\r\n\r\n%s",
				     strlen(body), body);
			assert_int_equal(write(c, head, (size_t)n), n);
		} else {
			size_t send_len = (size_t)len + (p->mode == FAKE_LONGER ? 4096 : 0) -
					  (p->mode == FAKE_SHORTER ? 1 : 0);
			uint8_t *body = malloc(send_len);
			for (size_t i = 0; i < send_len; i++)
				body[i] = fake_byte(off + i);
			int n = snprintf(head, sizeof(head),
					 "HTTP/1.1 200 OK\r\nX-Memsnap-Peer: available\r\n"
					 "X-Memsnap-Data-Size: %u\r\nContent-Length: %zu\r\n\r\n",
					 (unsigned)(PAGES * P), send_len);
			assert_int_equal(write(c, head, (size_t)n), n);
			size_t sent = 0;
			while (sent < send_len) {
				ssize_t w = write(c, body + sent, send_len - sent);
				if (w <= 0)
					break; /* the client gave up on a wrong answer */
				sent += (size_t)w;
			}
			free(body);
		}
		memmove(req, req + used, have - used);
		have -= used;
	}
}

static void *fake_run(void *arg)
{
	struct fake_peer *p = arg;
	int c;
	while ((c = accept(p->fd, NULL, NULL)) >= 0) {
		fake_serve(p, c);
		close(c);
	}
	return NULL;
}

static void fake_start(struct fake_peer *p, enum fake_mode mode)
{
	*p = (struct fake_peer){.mode = mode};
	p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	assert_int_equal(bind(p->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(p->fd, 8), 0);
	assert_int_equal(getsockname(p->fd, (struct sockaddr *)&a, &alen), 0);
	p->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&p->thread, NULL, fake_run, p), 0);
}

static void fake_stop(struct fake_peer *p)
{
	shutdown(p->fd, SHUT_RDWR); /* accept returns */
	pthread_join(p->thread, NULL);
	close(p->fd);
}

static struct ms_peer_client *fake_client(struct fake_peer *p, uint32_t piece)
{
	char address[64];
	snprintf(address, sizeof(address), "127.0.0.1:%u", p->port);
	struct ms_peer_client_config cfg = {
	    .address = address, .token = TOKEN, .attempts = 1, .piece = piece};
	int err;
	struct ms_peer_client *c = ms_peer_client_new(&cfg, &err);
	assert_non_null(c);
	return c;
}

#define CANARY 0x5a

static void test_client_reads_in_place(void **state)
{
	(void)state;
	struct fake_peer p;
	fake_start(&p, FAKE_EXACT);
	struct ms_peer_client *c = fake_client(&p, 2 * P);
	ms_uuid id;
	ms_uuid_generate(&id);
	/* aligned: every piece in place; unaligned: a partial first and last piece */
	const uint64_t offs[] = {4 * P, 4 * P + 100, 0};
	const size_t lens[] = {6 * P, 5 * P + 17, 1};
	for (int t = 0; t < 3; t++) {
		size_t len = lens[t];
		uint8_t *buf = malloc(len + 2 * P);
		memset(buf, CANARY, len + 2 * P);
		enum ms_peer_status st;
		assert_int_equal(ms_peer_client_read(c, &id, MS_PEER_FILE_MEMFILE, PAGES * P,
						     buf + P, offs[t], len, &st),
				 0);
		assert_int_equal(st, MS_PEER_AVAILABLE);
		for (size_t i = 0; i < len; i++)
			if (buf[P + i] != fake_byte(offs[t] + i))
				fail_msg("read %d: byte %zu is %u, want %u", t, i, buf[P + i],
					 fake_byte(offs[t] + i));
		for (size_t i = 0; i < P; i++) /* nothing before or after the range */
			assert_true(buf[i] == CANARY && buf[P + len + i] == CANARY);
		free(buf);
	}
	ms_peer_client_unref(c);
	fake_stop(&p);
}

static void test_client_wrong_answers(void **state)
{
	(void)state;
	const enum fake_mode modes[] = {FAKE_LONGER, FAKE_SHORTER, FAKE_REFUSE};
	for (int m = 0; m < 3; m++) {
		struct fake_peer p;
		fake_start(&p, modes[m]);
		struct ms_peer_client *c = fake_client(&p, 4 * P);
		ms_uuid id;
		ms_uuid_generate(&id);
		size_t len = 4 * P;
		uint8_t *buf = malloc(len + 2 * P);
		memset(buf, CANARY, len + 2 * P);
		enum ms_peer_status st = MS_PEER_AVAILABLE;
		int err = ms_peer_client_read(c, &id, MS_PEER_FILE_MEMFILE, PAGES * P, buf + P,
					      8 * P, len, &st);
		if (modes[m] == FAKE_REFUSE) {
			assert_int_equal(err, 0);
			assert_int_equal(st, MS_PEER_NOT_AVAILABLE);
			for (size_t i = 0; i < len + 2 * P; i++) /* the JSON went elsewhere */
				assert_int_equal(buf[i], CANARY);
		} else {
			assert_int_equal(err, MS_EPROTO);
			for (size_t i = 0; i < P; i++)
				assert_true(buf[i] == CANARY && buf[P + len + i] == CANARY);
		}
		assert_int_equal(atomic_load(&p.requests), 1); /* a wrong answer is not retried */
		free(buf);
		ms_peer_client_unref(c);
		fake_stop(&p);
	}
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_statuses_and_bad_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_header_never_provisional, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_routing_peer_then_storage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peer_dies_mid_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_static_list_miss_and_dead_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peer_data_checked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_peer_table_not_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_answers_exact, setup, teardown),
	    cmocka_unit_test(test_client_reads_in_place),
	    cmocka_unit_test(test_client_wrong_answers),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
