/*
 * test_escape.c - nothing provisional escapes: a guest resumed from a build
 * whose dedup is stalled, then paused again before the swap, produces a child
 * whose parent is the durable (deduped) header - the child's pause waits for
 * it - and whose uploaded header names no provisional build id; the child's
 * upload waits for the parent's.
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
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEM (1u << 20)
#define SEC 1000000000LL

/* the backend under test (argv[1]: proc or kvm) */
static const struct ms_sandbox_ops *ops;

struct child_pause {
	struct ms_pause_config cfg;
	struct ms_layered *parent;
	struct ms_sandbox_paused paused;
	struct ms_pageset *none;
	struct ms_pause *pause;
	int err;
};

static void *child_pause_main(void *arg)
{
	struct child_pause *c = arg;
	c->err = ms_pause_start(&c->cfg, c->parent, c->paused.memfd, c->paused.written, c->none,
				c->paused.snapfile, c->paused.snapfile_len, &c->pause);
	return NULL;
}

static void test_nothing_provisional_escapes(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir(), path[512], cache[512], sock[512];
	snprintf(path, sizeof(path), "%s/store", dir);
	snprintf(cache, sizeof(cache), "%s/node", dir);
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	assert_int_equal(mkdir(cache, 0700), 0);
	int err;
	struct ms_store *store = ms_store_fs_new(path, &err);
	struct ms_diffstore_config dcfg = {.cache_dir = cache};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage bs = {
	    .store = store, .diffs = diffs, .cache_dir = cache, .data = MS_ARTIFACT_MEMFILE};
	ms_uuid template_id;
	ms_uuid_generate(&template_id);
	struct ms_layered *template =
	    ms_layered_new(ms_header_new_base(&template_id, MS_HEADER_V4, 4096, MEM, false),
			   ms_build_storage_resolve, &bs);
	struct ms_pageset *none = ms_pageset_new();
	/* pause A with its compare stalled */
	struct ms_sandbox_spec pcfg = {
	    .guest = MS_GUEST_MUTATOR, .mem_size = MEM, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *p;
	assert_int_equal(ms_sandbox_create(ops, &pcfg, &p), 0);
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[0] = 1, box[1] = 77, box[2] = 20;
	assert_int_equal(ms_sandbox_run(p), 0);
	assert_int_equal(ms_sandbox_wait_report(p, 10 * SEC), 0);
	box[0] = 0;
	struct ms_sandbox_paused a_paused;
	assert_int_equal(ms_sandbox_pause(p, &a_paused), 0);
	ms_sandbox_destroy(p);
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = store,
				      .diffs = diffs,
				      .cache_dir = cache,
				      .inflight = true,
				      .compare_gate = gate};
	struct ms_pause *a;
	assert_int_equal(ms_pause_start(&cfg, template, a_paused.memfd, a_paused.written, none,
					a_paused.snapfile, a_paused.snapfile_len, &a),
			 0);
	/* resume in the window (served from A's memfd, provisional header), run, pause again */
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 4096};
	struct ms_pageserver *srv = ms_pageserver_new(sock, &ms_layered_page_source_ops,
						      ms_pause_file(a), &opts, &(int){0});
	struct ms_sandbox_spec r = {.mem_size = MEM,
				    .memory = MS_SANDBOX_LAZY,
				    .lazy_socket = sock,
				    .snapfile = a_paused.snapfile,
				    .snapfile_len = a_paused.snapfile_len};
	assert_int_equal(ms_sandbox_create(ops, &r, &p), 0);
	assert_int_equal(ms_sandbox_run(p), 0);
	assert_int_equal(ms_sandbox_wait_report(p, 10 * SEC), 0);
	box = (uint64_t *)ms_sandbox_ram(p);
	box[0] = 1, box[1] = 78, box[2] = 20;
	assert_int_equal(ms_sandbox_run(p), 0);
	assert_int_equal(ms_sandbox_wait_report(p, 10 * SEC), 0);
	box[0] = 0;
	struct child_pause c = {.parent = ms_pause_file(a), .none = none};
	assert_int_equal(ms_sandbox_pause(p, &c.paused), 0);
	ms_sandbox_destroy(p);
	ms_pageserver_free(srv);
	assert_int_equal(ms_pause_wait(a, MS_PAUSE_COMPARED, 0), -ETIMEDOUT); /* still stalled */
	c.cfg = (struct ms_pause_config){.store = store,
					 .diffs = diffs,
					 .cache_dir = cache,
					 .inflight = true,
					 .parent_published = ms_pause_published(a)};
	pthread_t th;
	pthread_create(&th, NULL, child_pause_main, &c);
	usleep(100000);
	assert_null(c.pause); /* B waits for A's durable header: it never takes the provisional */
	ms_future_set(gate, NULL);
	pthread_join(th, NULL);
	assert_int_equal(c.err, 0);
	assert_int_equal(ms_pause_wait(c.pause, MS_PAUSE_PUBLISHED, 30 * SEC), 0);
	assert_int_equal(ms_pause_wait(a, MS_PAUSE_PUBLISHED, 0), 0); /* A's upload came first */
	/* B's uploaded header names only the template (nil), A and B */
	struct ms_header *up;
	assert_int_equal(ms_build_storage_load_header(store, ms_pause_build_id(c.pause),
						      MS_ARTIFACT_MEMFILE_HEADER, &up),
			 0);
	for (size_t i = 0; i < up->mappings.count; i++) {
		const ms_uuid *id = &up->mappings.entries[i].build_id;
		assert_true(ms_uuid_is_nil(id) || ms_uuid_eq(id, ms_pause_build_id(a)) ||
			    ms_uuid_eq(id, ms_pause_build_id(c.pause)));
	}
	for (size_t i = 0; i < up->build_count; i++) {
		const ms_uuid *id = &up->builds[i].build_id;
		assert_true(ms_uuid_eq(id, ms_pause_build_id(a)) ||
			    ms_uuid_eq(id, ms_pause_build_id(c.pause)));
	}
	assert_true(ms_mappings_bytes_of(&up->mappings, ms_pause_build_id(a)) > 0);
	ms_header_free(up);
	ms_pause_free(c.pause);
	ms_pause_free(a);
	ms_pageset_free(c.paused.written);
	free(c.paused.snapfile);
	ms_pageset_free(a_paused.written);
	free(a_paused.snapfile);
	ms_future_unref(gate);
	ms_pageset_free(none);
	ms_layered_free(template);
	ms_diffstore_free(diffs);
	ms_store_free(store);
	ms_test_rmtree(dir);
	free(dir);
}

int main(int argc, char **argv)
{
	ops = ms_test_backend(argc > 1 ? argv[1] : NULL);
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_nothing_provisional_escapes)};
	return cmocka_run_group_tests_name(ops->name, tests, NULL, NULL);
}
