/*
 * test_chain.c - dedup exactness over a chain of 20 pauses of a real guest:
 * mutator runs an epoch (some epochs rewrite pages with identical content),
 * is paused, its snapshot goes through the whole pipeline over the previous
 * one, and it is resumed lazily from the new build through the page server.
 * After every pause: the uploaded diff holds exactly the written pages whose
 * content changed, and the layer read cold from the store equals the guest's
 * memory at the pause, bit for bit.
 */
#include "ms_test.h"
#include "build/storage.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "uffd/filesource.h"
#include "uffd/pageserver.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define P      4096
#define MEM    (2u << 20)
#define PAGES  (MEM / P)
#define LAYERS 20
#define SEC    1000000000LL

/* the backend under test (argv[1]: proc or kvm) */
static const struct ms_sandbox_ops *ops;

static void command(struct ms_sandbox *p, uint64_t cmd, uint64_t a0, uint64_t a1)
{
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[0] = cmd;
	box[1] = a0;
	box[2] = a1;
	assert_int_equal(ms_sandbox_run(p), 0);
	assert_int_equal(ms_sandbox_wait_report(p, 10 * SEC), 0);
}

/* mutator's epoch on the model: the same xorshift; a page written holds page ^ seed. */
static void mutator_model(uint8_t *mem, uint64_t seed, uint64_t writes)
{
	uint64_t data_pages = PAGES - MS_GUEST_DATA_FIRST_PAGE - MS_GUEST_STACK_PAGES, x = seed;
	for (uint64_t i = 0; i < writes; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t page = MS_GUEST_DATA_FIRST_PAGE + x % data_pages, value = page ^ seed;
		for (uint64_t w = 0; w < P / 8; w++)
			memcpy(mem + page * P + w * 8, &value, 8);
	}
}

static void read_cold(struct ms_store *store, const char *dir, const ms_uuid *id, uint8_t *out)
{
	char cache[512];
	snprintf(cache, sizeof(cache), "%s/cold", dir);
	ms_test_rmtree(cache);
	assert_int_equal(mkdir(cache, 0700), 0);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = cache, .no_thread = true};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage bs = {
	    .store = store, .diffs = diffs, .cache_dir = cache, .data = MS_ARTIFACT_MEMFILE};
	struct ms_header *h;
	assert_int_equal(ms_build_storage_load_header(store, id, MS_ARTIFACT_MEMFILE_HEADER, &h),
			 0);
	assert_false(h->incomplete);
	struct ms_layered *file = ms_layered_new(h, ms_build_storage_resolve, &bs);
	assert_int_equal(ms_layered_read(file, out, 0, MEM), 0);
	ms_layered_free(file);
	ms_diffstore_free(diffs);
}

static void test_chain_of_pauses(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir(), path[512];
	snprintf(path, sizeof(path), "%s/store", dir);
	int err;
	struct ms_store *store = ms_store_fs_new(path, &err);
	char cache[512], sock[512];
	snprintf(cache, sizeof(cache), "%s/node", dir);
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	assert_int_equal(mkdir(cache, 0700), 0);
	struct ms_diffstore_config dcfg = {.cache_dir = cache};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage bs = {
	    .store = store, .diffs = diffs, .cache_dir = cache, .data = MS_ARTIFACT_MEMFILE};
	ms_uuid template_id;
	ms_uuid_generate(&template_id);
	struct ms_layered *template =
	    ms_layered_new(ms_header_new_base(&template_id, MS_HEADER_V4, P, MEM, false),
			   ms_build_storage_resolve, &bs);
	struct ms_pause *pauses[LAYERS] = {0};
	uint8_t *prev = calloc(1, MEM), *now = malloc(MEM), *cold = malloc(MEM);
	struct ms_pageset *none = ms_pageset_new();
	struct ms_sandbox_spec pcfg = {
	    .guest = MS_GUEST_MUTATOR, .mem_size = MEM, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *p;
	assert_int_equal(ms_sandbox_create(ops, &pcfg, &p), 0);
	struct ms_pageserver *srv = NULL;
	uint64_t seed = 0x1234, total_kept = 0, total_equal = 0;
	for (int l = 0; l < LAYERS; l++) {
		/* every third epoch repeats the previous one: same pages, same bytes */
		if (l % 3 != 2)
			seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		command(p, 1, seed, 30);
		((uint64_t *)ms_sandbox_ram(p))[0] = 0; /* after the resume: report first */
		struct ms_sandbox_paused paused;
		assert_int_equal(ms_sandbox_pause(p, &paused), 0);
		/*
		 * The guest's memory now: its data pages from the host's model of mutator
		 * (independent of what the tracker says), the other written pages (stack) as
		 * the host sees them, the rest as before. (Reading a page a lazy restore never
		 * installed would make the host fault a zero page into the guest's memfd.)
		 */
		memcpy(now, prev, MEM);
		uint64_t wc = 0, ws, wl;
		while (ms_pageset_next_run(paused.written, &wc, &ws, &wl))
			for (uint64_t pg = ws; pg < ws + wl; pg++)
				if (pg < MS_GUEST_DATA_FIRST_PAGE ||
				    pg >= PAGES - MS_GUEST_STACK_PAGES)
					memcpy(now + pg * P, ms_sandbox_ram(p) + pg * P, P);
		/* the data pages from the host's own model of mutator, not from the guest */
		mutator_model(now, seed, 30);
		ms_sandbox_destroy(p);
		if (srv)
			ms_pageserver_free(srv); /* the previous resume's server */
		srv = NULL;
		/* expected: the written pages whose bytes changed; zero ones become nil */
		uint64_t want_kept = 0, want_equal = 0;
		uint64_t cursor = 0, start, len;
		static const uint8_t zero[P];
		while (ms_pageset_next_run(paused.written, &cursor, &start, &len))
			for (uint64_t pg = start; pg < start + len; pg++) {
				if (memcmp(now + pg * P, zero, P) == 0)
					continue;
				if (memcmp(now + pg * P, prev + pg * P, P) == 0)
					want_equal++;
				else
					want_kept++;
			}
		struct ms_pause_config cfg = {
		    .store = store, .diffs = diffs, .cache_dir = cache, .inflight = true};
		struct ms_layered *parent = l ? ms_pause_file(pauses[l - 1]) : template;
		assert_int_equal(ms_pause_start(&cfg, parent, paused.memfd, paused.written, none,
						paused.snapfile, paused.snapfile_len, &pauses[l]),
				 0);
		assert_int_equal(ms_pause_wait(pauses[l], MS_PAUSE_PUBLISHED, 30 * SEC), 0);
		uint64_t dirty, equal, zeros, kept;
		ms_pause_counts(pauses[l], &dirty, &equal, &zeros, &kept);
		if (kept != want_kept || equal != want_equal)
			fail_msg("layer %d: kept %llu equal %llu, expected %llu and %llu", l,
				 (unsigned long long)kept, (unsigned long long)equal,
				 (unsigned long long)want_kept, (unsigned long long)want_equal);
		total_kept += kept;
		total_equal += equal;
		/* the stored diff is exactly the kept pages */
		char key[MS_ARTIFACT_KEY_MAX];
		uint64_t size;
		ms_artifact_key(key, sizeof(key), ms_pause_build_id(pauses[l]), MS_ARTIFACT_MEMFILE,
				MS_COMPRESS_NONE);
		assert_int_equal(ms_store_size(store, key, &size), 0);
		assert_int_equal(size, kept * P);
		/* the layer, cold from the store, is the guest's memory at the pause */
		read_cold(store, dir, ms_pause_build_id(pauses[l]), cold);
		for (uint64_t pg = 0; pg < PAGES; pg++)
			if (memcmp(cold + pg * P, now + pg * P, P) != 0)
				fail_msg("layer %d: page %llu differs", l, (unsigned long long)pg);
		memcpy(prev, now, MEM);
		/* resume lazily from the new build, warm on this node */
		struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 4096};
		srv = ms_pageserver_new(sock, &ms_layered_page_source_ops, ms_pause_file(pauses[l]),
					&opts, &(int){0});
		assert_non_null(srv);
		struct ms_sandbox_spec r = {.mem_size = MEM,
					    .memory = MS_SANDBOX_LAZY,
					    .lazy_socket = sock,
					    .snapfile = paused.snapfile,
					    .snapfile_len = paused.snapfile_len};
		assert_int_equal(ms_sandbox_create(ops, &r, &p), 0);
		assert_int_equal(ms_sandbox_run(p), 0);
		assert_int_equal(ms_sandbox_wait_report(p, 10 * SEC), 0);
		ms_pageset_free(paused.written);
		free(paused.snapfile);
	}
	print_message("%d layers: %llu pages kept, %llu dropped as equal to the parent\n", LAYERS,
		      (unsigned long long)total_kept, (unsigned long long)total_equal);
	assert_true(total_equal > 0); /* the repeated epochs were found */
	ms_sandbox_destroy(p);
	ms_pageserver_free(srv);
	for (int l = LAYERS - 1; l >= 0; l--)
		ms_pause_free(pauses[l]);
	ms_layered_free(template);
	ms_diffstore_free(diffs);
	ms_store_free(store);
	ms_pageset_free(none);
	free(prev);
	free(now);
	free(cold);
	ms_test_rmtree(dir);
	free(dir);
}

int main(int argc, char **argv)
{
	ops = ms_test_backend(argc > 1 ? argv[1] : NULL);
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_chain_of_pauses)};
	return cmocka_run_group_tests_name(ops->name, tests, NULL, NULL);
}
