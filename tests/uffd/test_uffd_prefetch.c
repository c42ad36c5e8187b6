/*
 * test_uffd_prefetch.c - replaying a first-touch trace into a real session
 * (uffd/prefetch.h): prepare (a Firecracker-like child over a page source) ->
 * prefetch -> the child reads -> verify every byte against the model.
 *
 *  - a prefetched trace is installed ahead of the faults: its pages never
 *    fault, every byte is the source's;
 *  - a page the guest wrote or MADV_DONTNEEDed before the prefetch reached it
 *    keeps the write or reads zeros, also when the REMOVE comes while the
 *    prefetch's read of that page is in flight, and when it comes while the
 *    installer copies pages in on its own thread;
 *  - a stop during the prefetch ends it at once, installs nothing after, and
 *    the faults serve the rest;
 *  - a model check over a 3-layer chain in a store (the layered file): random
 *    traces, with random writes and REMOVEs before and during the prefetch.
 */
#include "ms_chain.h"
#include "ms_test.h"
#include "build/storage.h"
#include "cache/diffstore.h"
#include "storage/store.h"
#include "uffd/filesource.h"
#include "uffd/prefetch.h"
#include "uffd_test_util.h"
#include "util/clock.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define P     4096ULL
#define PAGES 512

struct rig {
	struct ms_pageserver *srv;
	struct ms_uffd_session *session;
	struct fc_child child;
	char *sock, *dir;
};

/* batch_bytes: the page server's batch block (0: a fault installs its page alone). */
static void rig_start_batched(struct rig *r, const struct ms_page_source_ops *ops, void *ctx,
			      const uint8_t *image, uint64_t pages, uint64_t batch_bytes)
{
	memset(r, 0, sizeof(*r));
	r->sock = test_socket_path(&r->dir);
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = batch_bytes};
	assert_non_null(r->srv = ms_pageserver_new(r->sock, ops, ctx, &opts, &(int){0}));
	struct fc_child_cfg cfg = {.sock_path = r->sock,
				   .size = pages * P,
				   .page_size = P,
				   .regions = 2,
				   .wp = true,
				   .source = image};
	assert_int_equal(fc_child_start(&cfg, &r->child), 0);
	assert_int_equal(ms_pageserver_next_session(r->srv, 10 * MS_NSEC_PER_SEC, &r->session), 0);
}

static void rig_start(struct rig *r, const struct ms_page_source_ops *ops, void *ctx,
		      const uint8_t *image, uint64_t pages)
{
	rig_start_batched(r, ops, ctx, image, pages, 0);
}

static void rig_stop(struct rig *r)
{
	fc_child_exit(&r->child);
	ms_uffd_session_unref(r->session);
	ms_pageserver_free(r->srv);
	free(r->sock);
	ms_test_rmtree(r->dir);
	free(r->dir);
}

static uint64_t faults(struct ms_uffd_session *s)
{
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(s);
	return atomic_load(&m->faults_read) + atomic_load(&m->faults_write);
}

/* A trace of the given pages, in the given order. */
static struct ms_uffd_trace trace_of(const uint64_t *pages, size_t n)
{
	struct ms_uffd_trace t = {.block_size = P, .count = n};
	t.indices = malloc(n * sizeof(*t.indices) + 1);
	t.access = malloc(n + 1);
	assert_non_null(t.indices);
	assert_non_null(t.access);
	memcpy(t.indices, pages, n * sizeof(*pages));
	memset(t.access, 'r', n);
	return t;
}

/* A prefetch of trace t from the test source src into r's session; fails the test on error. */
static struct ms_uffd_prefetch *prefetch_start(struct rig *r, struct test_source *src,
					       const struct ms_uffd_trace *t, unsigned workers,
					       uint64_t coalesce_bytes)
{
	struct ms_uffd_prefetch_options o = {.fetch_workers = workers,
					     .coalesce_bytes = coalesce_bytes};
	int err;
	struct ms_uffd_prefetch *pf =
	    ms_uffd_prefetch_start(r->session, &test_source_ops, src, t, &o, &err);
	if (!pf)
		fail_msg("ms_uffd_prefetch_start: %d", err);
	return pf;
}

static void test_prefetched_pages_never_fault(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct test_source src;
	test_source_init(&src, PAGES * P, P);
	struct rig r;
	rig_start(&r, &test_source_ops, &src, src.data, PAGES);
	/* runs in trace order: 300..339 (coalesced), then 10..19, then the region's edge */
	uint64_t pages[80];
	size_t n = 0;
	for (uint64_t p = 300; p < 340; p++)
		pages[n++] = p;
	for (uint64_t p = 10; p < 20; p++)
		pages[n++] = p;
	for (uint64_t p = PAGES / 2 - 5; p < PAGES / 2 + 5; p++) /* across the two regions */
		pages[n++] = p;
	struct ms_uffd_trace t = trace_of(pages, n);
	struct ms_uffd_prefetch *pf = prefetch_start(&r, &src, &t, 4, 16 * P);
	assert_int_equal(ms_uffd_prefetch_wait(pf, 10 * MS_NSEC_PER_SEC), 0);
	struct ms_uffd_prefetch_stats st;
	ms_uffd_prefetch_get_stats(pf, &st);
	assert_true(st.done);
	assert_false(st.stopped);
	assert_int_equal(st.blocks, n);
	assert_int_equal(st.runs, 3 + 1 + 1); /* 40 pages in 16-page runs, 10, 10 */
	assert_int_equal(st.pages_installed, n);
	assert_int_equal(st.pages_skipped, 0);
	assert_int_equal(faults(r.session), 0);
	/* the prefetched pages read without a fault; the rest fault; every byte is right */
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, 300 * P, 40 * P, 0, 10000), 0);
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, 10 * P, 10 * P, 0, 10000), 0);
	assert_int_equal(faults(r.session), 0);
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, 0, PAGES * P, 0, 30000), 0);
	assert_int_equal(faults(r.session), PAGES - n);
	assert_int_equal(atomic_load(&ms_uffd_session_metrics(r.session)->pages_prefetched), n);
	/* the session's own trace says which pages came by prefetch */
	struct ms_uffd_trace rec;
	assert_int_equal(ms_uffd_session_trace(r.session, &rec), 0);
	size_t p_count = 0;
	for (size_t i = 0; i < rec.count; i++)
		p_count += rec.access[i] == 'p';
	assert_int_equal(p_count, n);
	assert_int_equal(rec.count, PAGES);
	ms_uffd_trace_fini(&rec);
	ms_uffd_prefetch_free(pf);
	ms_uffd_trace_fini(&t);
	rig_stop(&r);
	test_source_fini(&src);
}

/* With 64 KiB batch blocks a fault installs its block's data pages with it, and the trace names
 * only the faulting page: the replay brings each trace page's block the same way (the pages
 * that hold data, not the zero ones), so the guest faults on none of what a fault would have
 * batched. The two trace pages are 33 and 97; every 5th page of the source is zero (35, 40, 45,
 * 100, 105, 110). Before, only 33 and 97 were installed and the neighbours faulted. */
static void test_replay_brings_batch_blocks(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct test_source src;
	test_source_init(&src, PAGES * P, P);
	src.zero_hint = true;
	struct rig r;
	rig_start_batched(&r, &test_source_ops, &src, src.data, PAGES, 16 * P);
	const uint64_t pages[2] = {97, 33};
	struct ms_uffd_trace t = trace_of(pages, 2);
	struct ms_uffd_prefetch *pf = prefetch_start(&r, &src, &t, 2, 0);
	assert_int_equal(ms_uffd_prefetch_wait(pf, 10 * MS_NSEC_PER_SEC), 0);
	struct ms_uffd_prefetch_stats st;
	ms_uffd_prefetch_get_stats(pf, &st);
	assert_true(st.done);
	assert_int_equal(st.blocks, 2);
	assert_int_equal(st.pages_planned, 26);
	assert_int_equal(st.runs, 8);  /* each block in 4 runs around its 3 zero pages */
	assert_int_equal(st.reads, 2); /* ... read in one read of the block */
	assert_int_equal(st.pages_installed, 26);
	assert_int_equal(faults(r.session), 0);
	/* every data page of both blocks reads without a fault; the 6 zero pages fault */
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, 32 * P, 16 * P, 0, 10000), 0);
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, 96 * P, 16 * P, 0, 10000), 0);
	assert_int_equal(faults(r.session), 6);
	assert_int_equal(atomic_load(&ms_uffd_session_metrics(r.session)->pages_prefetched), 26);
	ms_uffd_prefetch_free(pf);
	ms_uffd_trace_fini(&t);
	rig_stop(&r);
	test_source_fini(&src);
}

/* A write and a MADV_DONTNEED before the prefetch reaches the page, and a REMOVE while the
 * prefetch's read of a page is in flight: the write stays, the removed pages read zeros. */
static void test_write_and_remove_win(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct test_source src;
	test_source_init(&src, PAGES * P, P);
	const uint64_t written = 40, removed = 41, late = 42, plain = 43;
	src.delay_ns = 400 * MS_NSEC_PER_MSEC; /* only the read covering `late` */
	src.delay_off = (int64_t)(late * P);
	struct rig r;
	rig_start(&r, &test_source_ops, &src, src.data, PAGES);
	assert_int_equal(fc_child_cmd(&r.child, FC_WRITE, written * P, P, 0x77, 10000), 0);
	assert_true(fc_child_cmd(&r.child, FC_MADVISE, removed * P, P, 0, 10000) >= 0);
	uint64_t pages[4] = {written, removed, late, plain};
	struct ms_uffd_trace t = trace_of(pages, 4);
	struct ms_uffd_prefetch *pf = prefetch_start(&r, &src, &t, 2, P);
	ms_clock_sleep_ns(100 * MS_NSEC_PER_MSEC); /* the read of `late` is in flight now */
	assert_true(fc_child_cmd(&r.child, FC_MADVISE, late * P, P, 0, 10000) >= 0);
	assert_int_equal(ms_uffd_prefetch_wait(pf, 10 * MS_NSEC_PER_SEC), 0);
	struct ms_uffd_prefetch_stats st;
	ms_uffd_prefetch_get_stats(pf, &st);
	assert_true(st.done);
	assert_int_equal(st.pages_installed, 1); /* plain only */
	assert_int_equal(st.pages_skipped, 3);
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, written * P, P, 2 + 0x77, 10000), 0);
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, removed * P, P, 1, 10000), 0);
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, late * P, P, 1, 10000), 0);
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, plain * P, P, 0, 10000), 0);
	ms_uffd_prefetch_free(pf);
	ms_uffd_trace_fini(&t);
	rig_stop(&r);
	test_source_fini(&src);
}

/* MADV_DONTNEEDs while the installer copies page after page on its own thread: every page
 * removed during the prefetch reads zeros (a copy never lands after the zap of a REMOVE the
 * event thread read: the install lock), every other page the source's bytes. */
static void test_removes_race_installs(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct test_source src;
	test_source_init(&src, PAGES * P, P);
	unsigned seed = 99;
	for (int round = 0; round < 12; round++) {
		struct rig r;
		rig_start(&r, &test_source_ops, &src, src.data, PAGES);
		uint64_t order[PAGES];
		for (uint64_t i = 0; i < PAGES; i++)
			order[i] = i;
		for (uint64_t i = PAGES - 1; i > 0; i--) {
			uint64_t j = (uint64_t)rand_r(&seed) % (i + 1), tmp = order[i];
			order[i] = order[j];
			order[j] = tmp;
		}
		struct ms_uffd_trace t = trace_of(order, PAGES);
		bool removed[PAGES] = {false};
		struct ms_uffd_prefetch *pf =
		    prefetch_start(&r, &src, &t, 4, P); /* a copy a page */
		for (int k = 0; k < PAGES && ms_uffd_prefetch_wait(pf, 0) != 0; k++) {
			uint64_t p = (uint64_t)rand_r(&seed) % PAGES;
			assert_true(fc_child_cmd(&r.child, FC_MADVISE, p * P, P, 0, 10000) >= 0);
			removed[p] = true;
		}
		assert_int_equal(ms_uffd_prefetch_wait(pf, 10 * MS_NSEC_PER_SEC), 0);
		for (uint64_t p = 0; p < PAGES; p++) {
			long bad =
			    fc_child_cmd(&r.child, FC_READ_CHECK, p * P, P, removed[p], 10000);
			if (bad != 0)
				fail_msg("round %d page %llu (removed %d): %ld bad", round,
					 (unsigned long long)p, removed[p], bad);
		}
		ms_uffd_prefetch_free(pf);
		ms_uffd_trace_fini(&t);
		rig_stop(&r);
	}
	test_source_fini(&src);
}

/* A stop in the middle: returns at once (a read in progress at most), installs nothing
 * after it, and the faults serve every page right. */
static void test_stop_ends_prefetch(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct test_source src;
	test_source_init(&src, PAGES * P, P);
	src.delay_ns = 20 * MS_NSEC_PER_MSEC; /* every read */
	struct rig r;
	rig_start(&r, &test_source_ops, &src, src.data, PAGES);
	uint64_t pages[PAGES];
	for (uint64_t p = 0; p < PAGES; p++)
		pages[p] = (p * 7) % PAGES; /* no two neighbours: one read per page */
	struct ms_uffd_trace t = trace_of(pages, PAGES);
	struct ms_uffd_prefetch *pf = prefetch_start(&r, &src, &t, 2, P);
	ms_clock_sleep_ns(150 * MS_NSEC_PER_MSEC);
	int64_t t0 = ms_clock_now_ns();
	ms_uffd_prefetch_stop(pf);
	int64_t took = ms_clock_now_ns() - t0;
	struct ms_uffd_prefetch_stats st;
	ms_uffd_prefetch_get_stats(pf, &st);
	print_message("stopped after %llu pages in %.1f ms\n",
		      (unsigned long long)st.pages_installed, (double)took / 1e6);
	assert_true(st.stopped);
	assert_false(st.done);
	assert_true(st.pages_installed < PAGES);
	assert_true(took < 2 * MS_NSEC_PER_SEC);
	uint64_t after_stop = atomic_load(&ms_uffd_session_metrics(r.session)->pages_prefetched);
	assert_int_equal(after_stop, st.pages_installed);
	src.delay_ns = 0;
	assert_int_equal(fc_child_cmd(&r.child, FC_READ_CHECK, 0, PAGES * P, 0, 30000), 0);
	assert_int_equal(atomic_load(&ms_uffd_session_metrics(r.session)->pages_prefetched),
			 after_stop);
	ms_uffd_prefetch_free(pf);
	ms_uffd_trace_fini(&t);
	rig_stop(&r);
	test_source_fini(&src);
}

/* Random traces over a 3-layer chain in a store, served through the layered file, with
 * random writes and REMOVEs before and while the prefetch runs; every page is checked
 * against the model (source bytes, the written byte, or zeros). */
static void test_model_random_traces(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	char *dir = ms_test_tmpdir(), store_dir[512], cache[512];
	snprintf(store_dir, sizeof(store_dir), "%s/store", dir);
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	assert_int_equal(mkdir(cache, 0700), 0);
	int err;
	struct ms_store *store = ms_store_fs_new(store_dir, &err);
	assert_non_null(store);
	struct ms_test_chain chain;
	ms_test_chain_build(store, PAGES, &chain);
	uint8_t *image = ms_test_chain_image(&chain);
	unsigned seed = 1234;
	for (int round = 0; round < 4; round++) {
		struct ms_diffstore_config dcfg = {.cache_dir = cache};
		struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err); /* cold every round */
		assert_non_null(diffs);
		struct ms_build_storage bs = {.store = store,
					      .diffs = diffs,
					      .cache_dir = cache,
					      .data = MS_ARTIFACT_MEMFILE};
		struct ms_header *top;
		assert_int_equal(ms_build_storage_load_header(store,
							      &chain.ids[MS_CHAIN_LAYERS - 1],
							      MS_ARTIFACT_MEMFILE_HEADER, &top),
				 0);
		struct ms_layered *file = ms_layered_new(top, ms_build_storage_resolve, &bs);
		struct rig r;
		rig_start(&r, &ms_layered_page_source_ops, file, image, PAGES);
		/* model: 0 = the image, 1 = zeros, 2 + v = every byte v */
		uint64_t model[PAGES] = {0};
		uint64_t perm[PAGES];
		for (uint64_t p = 0; p < PAGES; p++)
			perm[p] = p;
		for (uint64_t p = PAGES - 1; p > 0; p--) {
			uint64_t k = (uint64_t)rand_r(&seed) % (p + 1), tmp = perm[p];
			perm[p] = perm[k];
			perm[k] = tmp;
		}
		size_t n = PAGES / 4 + (size_t)rand_r(&seed) % (PAGES / 2);
		/* runs of neighbours too: sort random stretches */
		for (size_t i = 0; i + 8 < n; i += 16)
			for (size_t k = 0; k < 8; k++)
				perm[i + k] = (perm[i] + k) % PAGES;
		/* drop duplicates the stretches made */
		uint8_t seen[PAGES] = {0};
		size_t m = 0;
		for (size_t i = 0; i < n; i++)
			if (!seen[perm[i]]++)
				perm[m++] = perm[i];
		struct ms_uffd_trace t = trace_of(perm, m);
		for (int k = 0; k < 12; k++) { /* before the prefetch */
			uint64_t p = (uint64_t)rand_r(&seed) % PAGES;
			if (rand_r(&seed) & 1) {
				uint64_t v = 1 + (uint64_t)rand_r(&seed) % 200;
				assert_int_equal(
				    fc_child_cmd(&r.child, FC_WRITE, p * P, P, v, 10000), 0);
				model[p] = 2 + v;
			} else {
				assert_true(
				    fc_child_cmd(&r.child, FC_MADVISE, p * P, P, 0, 10000) >= 0);
				model[p] = 1;
			}
		}
		struct ms_uffd_prefetch_options o = {.fetch_workers = 1 + (unsigned)round * 5,
						     .coalesce_bytes =
							 (1u + (unsigned)round) * 8 * P};
		struct ms_uffd_prefetch *pf = ms_uffd_prefetch_start(
		    r.session, &ms_layered_page_source_ops, file, &t, &o, &err);
		assert_non_null(pf);
		for (int k = 0; k < 12; k++) { /* while it runs */
			uint64_t p = perm[(size_t)rand_r(&seed) % m];
			if (rand_r(&seed) & 1) {
				uint64_t v = 1 + (uint64_t)rand_r(&seed) % 200;
				assert_int_equal(
				    fc_child_cmd(&r.child, FC_WRITE, p * P, P, v, 10000), 0);
				model[p] = 2 + v;
			} else {
				assert_true(
				    fc_child_cmd(&r.child, FC_MADVISE, p * P, P, 0, 10000) >= 0);
				model[p] = 1;
			}
		}
		assert_int_equal(ms_uffd_prefetch_wait(pf, 30 * MS_NSEC_PER_SEC), 0);
		uint64_t bad = 0;
		for (uint64_t p = 0; p < PAGES; p++) {
			int64_t b =
			    fc_child_cmd(&r.child, FC_READ_CHECK, p * P, P, model[p], 10000);
			if (b)
				print_message("round %d page %llu: model %llu, %lld bad\n", round,
					      (unsigned long long)p, (unsigned long long)model[p],
					      (long long)b);
			bad += b != 0;
		}
		assert_int_equal(bad, 0);
		struct ms_uffd_prefetch_stats st;
		ms_uffd_prefetch_get_stats(pf, &st);
		print_message("round %d: %zu blocks, %llu runs, %llu installed, %llu skipped\n",
			      round, m, (unsigned long long)st.runs,
			      (unsigned long long)st.pages_installed,
			      (unsigned long long)st.pages_skipped);
		assert_int_equal(st.pages_installed + st.pages_skipped, m);
		ms_uffd_prefetch_free(pf);
		ms_uffd_trace_fini(&t);
		rig_stop(&r);
		ms_layered_free(file);
		ms_diffstore_free(diffs);
	}
	free(image);
	ms_test_chain_fini(&chain);
	ms_store_free(store);
	ms_test_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prefetched_pages_never_fault),
	    cmocka_unit_test(test_replay_brings_batch_blocks),
	    cmocka_unit_test(test_write_and_remove_win),
	    cmocka_unit_test(test_removes_race_installs),
	    cmocka_unit_test(test_stop_ends_prefetch),
	    cmocka_unit_test(test_model_random_traces),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
