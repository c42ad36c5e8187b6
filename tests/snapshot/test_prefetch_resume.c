/*
 * test_prefetch_resume.c - prefetch at a real guest's cold resume (uffd/prefetch.h), on
 * one backend (argv[1]: proc or kvm), through the whole pipeline into a store:
 *
 *  - a 3-layer chain: pattern FILL (every data page) -> pause -> lazy resume, VERIFY ->
 *    pause -> lazy resume, VERIFY -> pause. A cold resume of the third build (a fresh
 *    chunk cache over the store) replays the trace the resume before it recorded; once
 *    the prefetch is done, the guest's VERIFY reads every data page (the code, mailbox
 *    and stack come from the upper layers) and finds the model's bytes, with almost no
 *    fault left;
 *  - a pause during the prefetch (its reads held at a gate so that it is still running):
 *    the guest rewrites every page (FILL, a new epoch) while the prefetch goes on
 *    installing the old bytes, the prefetch is stopped as the daemon stops it (before
 *    the sandbox pauses), and the build holds the new epoch on every data page, read
 *    cold from the store and verified by a guest resumed from it.
 */
#include "ms_test.h"
#include "build/storage.h"
#include "sandbox/guest.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "uffd/filesource.h"
#include "uffd/pageserver.h"
#include "uffd/prefetch.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define P     4096
#define MEM   (2u << 20)
#define PAGES (MEM / P)
#define SEED  0x5eed
#define SEC   1000000000LL

static const struct ms_sandbox_ops *ops;

struct rig {
	char *dir;
	char sock[512], cache[512];
	struct ms_store *store;
	struct ms_diffstore *diffs;
	struct ms_build_storage bs;
	struct ms_layered *template;
	struct ms_pageset *none;
};

static void rig_init(struct rig *r)
{
	memset(r, 0, sizeof(*r));
	r->dir = ms_test_tmpdir();
	char path[600];
	snprintf(path, sizeof(path), "%s/store", r->dir);
	int err;
	assert_non_null(r->store = ms_store_fs_new(path, &err));
	snprintf(r->cache, sizeof(r->cache), "%s/node", r->dir);
	snprintf(r->sock, sizeof(r->sock), "%s/uffd.sock", r->dir);
	assert_int_equal(mkdir(r->cache, 0700), 0);
	struct ms_diffstore_config dcfg = {.cache_dir = r->cache};
	assert_non_null(r->diffs = ms_diffstore_new(&dcfg, &err));
	r->bs = (struct ms_build_storage){.store = r->store,
					  .diffs = r->diffs,
					  .cache_dir = r->cache,
					  .data = MS_ARTIFACT_MEMFILE};
	ms_uuid id;
	ms_uuid_generate(&id);
	r->template = ms_layered_new(ms_header_new_base(&id, MS_HEADER_V4, P, MEM, false),
				     ms_build_storage_resolve, &r->bs);
	assert_non_null(r->template);
	r->none = ms_pageset_new();
}

static void rig_fini(struct rig *r)
{
	ms_layered_free(r->template);
	ms_diffstore_free(r->diffs);
	ms_store_free(r->store);
	ms_pageset_free(r->none);
	ms_test_rmtree(r->dir);
	free(r->dir);
}

static uint64_t *box(struct ms_sandbox *p)
{
	return (uint64_t *)ms_sandbox_ram(p);
}

/* Runs a pattern command to its report; the guest's result0 (VERIFY: pages that differ). */
static uint64_t command_args(struct ms_sandbox *p, uint64_t cmd, uint64_t a0, uint64_t a1)
{
	box(p)[0] = cmd;
	box(p)[1] = a0;
	box(p)[2] = a1;
	assert_int_equal(ms_sandbox_run(p), 0);
	assert_int_equal(ms_sandbox_wait_report(p, 30 * SEC), 0);
	return box(p)[MS_GUEST_RESULT0 / 8];
}

static uint64_t command(struct ms_sandbox *p, uint64_t cmd, uint64_t epoch)
{
	return command_args(p, cmd, SEED, epoch);
}

/* Pauses p (destroyed) into a build over parent, published to the store. */
static struct ms_pause *pause_into(struct rig *r, struct ms_sandbox *p, struct ms_layered *parent,
				   struct ms_sandbox_paused *paused)
{
	box(p)[0] = 0; /* after the next resume: report first */
	assert_int_equal(ms_sandbox_pause(p, paused), 0);
	ms_sandbox_destroy(p);
	struct ms_pause_config cfg = {.store = r->store, .diffs = r->diffs, .cache_dir = r->cache};
	struct ms_pause *pause;
	int memfd = paused->memfd;
	paused->memfd = -1;
	assert_int_equal(ms_pause_start(&cfg, parent, memfd, paused->written, r->none,
					paused->snapfile, paused->snapfile_len, &pause),
			 0);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 60 * SEC), 0);
	return pause;
}

/* A lazy resume of paused's snapfile served by srv (already listening on r->sock). */
static struct ms_sandbox *resume(struct rig *r, const struct ms_sandbox_paused *paused)
{
	struct ms_sandbox_spec spec = {.mem_size = MEM,
				       .memory = MS_SANDBOX_LAZY,
				       .lazy_socket = r->sock,
				       .snapfile = paused->snapfile,
				       .snapfile_len = paused->snapfile_len};
	struct ms_sandbox *p;
	assert_int_equal(ms_sandbox_create(ops, &spec, &p), 0);
	assert_int_equal(ms_sandbox_run(p), 0);
	assert_int_equal(ms_sandbox_wait_report(p, 30 * SEC), 0);
	return p;
}

/* A cold view of build id: its header from the store, a fresh diff store and chunk cache. */
struct cold {
	char cache[600];
	struct ms_diffstore *diffs;
	struct ms_build_storage bs;
	struct ms_layered *file;
};

static void cold_open(struct rig *r, const ms_uuid *id, const char *name, struct cold *c)
{
	snprintf(c->cache, sizeof(c->cache), "%s/%s", r->dir, name);
	assert_int_equal(mkdir(c->cache, 0700), 0);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = c->cache};
	assert_non_null(c->diffs = ms_diffstore_new(&dcfg, &err));
	c->bs = (struct ms_build_storage){.store = r->store,
					  .diffs = c->diffs,
					  .cache_dir = c->cache,
					  .data = MS_ARTIFACT_MEMFILE};
	struct ms_header *h;
	assert_int_equal(ms_build_storage_load_header(r->store, id, MS_ARTIFACT_MEMFILE_HEADER, &h),
			 0);
	assert_false(h->incomplete);
	assert_non_null(c->file = ms_layered_new(h, ms_build_storage_resolve, &c->bs));
}

static void cold_close(struct cold *c)
{
	ms_layered_free(c->file);
	ms_diffstore_free(c->diffs);
	ms_test_rmtree(c->cache);
}

/* The prefetch a page server starts with the handshake; reads through ops/ctx. */
struct starter {
	const struct ms_page_source_ops *ops;
	void *ctx;
	const struct ms_uffd_trace *trace;
	struct ms_uffd_prefetch_options options;
	struct ms_uffd_prefetch *pf;
};

static void start_prefetch(void *arg, struct ms_uffd_session *s)
{
	struct starter *st = arg;
	int err;
	st->pf = ms_uffd_prefetch_start(s, st->ops, st->ctx, st->trace, &st->options, &err);
	if (!st->pf)
		print_error("ms_uffd_prefetch_start: %s\n", ms_strerror(err));
}

static struct ms_pageserver *server(struct rig *r, struct ms_layered *file, struct starter *st)
{
	struct ms_pageserver_options opts = {.workers = 2,
					     .batch_bytes = 65536,
					     .on_session_start = st ? start_prefetch : NULL,
					     .start_arg = st};
	struct ms_pageserver *srv =
	    ms_pageserver_new(r->sock, &ms_layered_page_source_ops, file, &opts, &(int){0});
	assert_non_null(srv);
	return srv;
}

#define DATA_PAGES (PAGES - MS_GUEST_DATA_FIRST_PAGE - MS_GUEST_STACK_PAGES)

/*
 * The 3-layer chain, pattern(SEED, epoch 1) in the end: build 1 FILLs every data page, build 2
 * ZEROes the first half of them (nil), build 3 FILLs again, which changes only that half (the
 * other half is equal to its parent and stays build 1's). *trace is what build 3's resume
 * touched first: every data page (the FILL).
 */
static struct ms_pause *chain(struct rig *r, struct ms_pause **pauses,
			      struct ms_sandbox_paused *paused, struct ms_uffd_trace *trace)
{
	struct ms_sandbox_spec spec = {
	    .guest = MS_GUEST_PATTERN, .mem_size = MEM, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *p;
	assert_int_equal(ms_sandbox_create(ops, &spec, &p), 0);
	command(p, MS_PATTERN_FILL, 1);
	pauses[0] = pause_into(r, p, r->template, &paused[0]);
	for (int l = 1; l < 3; l++) {
		struct ms_pageserver *srv = server(r, ms_pause_file(pauses[l - 1]), NULL);
		p = resume(r, &paused[l - 1]);
		if (l == 1) {
			command_args(p, MS_PATTERN_ZERO, 0, DATA_PAGES / 2);
			assert_int_equal(command(p, MS_PATTERN_VERIFY, 1), DATA_PAGES / 2);
		} else {
			command(p, MS_PATTERN_FILL, 1);
		}
		struct ms_uffd_session *s;
		assert_int_equal(ms_pageserver_next_session(srv, 0, &s), 0);
		if (l == 2)
			assert_int_equal(ms_uffd_session_trace(s, trace), 0);
		pauses[l] = pause_into(r, p, ms_pause_file(pauses[l - 1]), &paused[l]);
		ms_uffd_session_unref(s);
		ms_pageserver_free(srv);
	}
	/* the third build's data comes from build 1 and build 3 */
	struct ms_header *h;
	assert_int_equal(ms_build_storage_load_header(r->store, ms_pause_build_id(pauses[2]),
						      MS_ARTIFACT_MEMFILE_HEADER, &h),
			 0);
	bool from[3] = {false, false, false};
	for (int l = 0; l < 3; l++)
		for (size_t m = 0; m < h->mappings.count; m++)
			from[l] |= !ms_uuid_cmp(&h->mappings.entries[m].build_id,
						ms_pause_build_id(pauses[l]));
	ms_header_free(h);
	assert_true(from[0]);
	assert_true(from[2]);
	return pauses[2];
}

static void chain_free(struct ms_pause **pauses, struct ms_sandbox_paused *paused, int n)
{
	for (int l = n - 1; l >= 0; l--) {
		ms_pause_free(pauses[l]);
		ms_sandbox_paused_fini(&paused[l]);
	}
}

static void test_prefetched_chain_reads_the_model(void **state)
{
	(void)state;
	struct rig r;
	rig_init(&r);
	struct ms_pause *pauses[3];
	struct ms_sandbox_paused paused[3];
	struct ms_uffd_trace trace;
	struct ms_pause *top = chain(&r, pauses, paused, &trace);
	assert_true(trace.count >= DATA_PAGES / 16); /* FILL faulted on its blocks */
	struct cold c;
	cold_open(&r, ms_pause_build_id(top), "cold", &c);
	struct starter st = {.ops = &ms_layered_page_source_ops, .ctx = c.file, .trace = &trace};
	struct ms_pageserver *srv = server(&r, c.file, &st);
	struct ms_sandbox *p = resume(&r, &paused[2]);
	/* the page server hands the session out after its on_session_start returned */
	struct ms_uffd_session *s;
	assert_int_equal(ms_pageserver_next_session(srv, 10 * SEC, &s), 0);
	assert_non_null(st.pf);
	assert_int_equal(ms_uffd_prefetch_wait(st.pf, 60 * SEC), 0);
	struct ms_uffd_prefetch_stats ps;
	ms_uffd_prefetch_get_stats(st.pf, &ps);
	assert_true(ps.done);
	assert_int_equal(ps.read_errors, 0);
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(s);
	uint64_t faults_before = atomic_load(&m->faults_read) + atomic_load(&m->faults_write);
	/* every data page, read by the guest, is the model's */
	assert_int_equal(command(p, MS_PATTERN_VERIFY, 1), 0);
	uint64_t faults = atomic_load(&m->faults_read) + atomic_load(&m->faults_write);
	print_message("%s: trace %zu pages, %llu planned, %llu prefetched, %llu faults during the "
		      "verify\n",
		      ops->name, trace.count, (unsigned long long)ps.pages_planned,
		      (unsigned long long)atomic_load(&m->pages_prefetched),
		      (unsigned long long)(faults - faults_before));
	assert_true(atomic_load(&m->pages_prefetched) >= DATA_PAGES * 3 / 4);
	assert_true(faults - faults_before < DATA_PAGES / 16); /* the reads were prefetched */
	ms_uffd_session_unref(s);
	ms_sandbox_destroy(p);
	ms_uffd_prefetch_free(st.pf);
	ms_pageserver_free(srv);
	cold_close(&c);
	ms_uffd_trace_fini(&trace);
	chain_free(pauses, paused, 3);
	rig_fini(&r);
}

/* A page source whose reads after the first `allowed` wait at a gate: the prefetch stays
 * in the middle of its trace until the test opens the gate, and from then on every read fails
 * (what was not read is left to the faults). No sleeps: the test waits for the gate to be hit. */
struct slow {
	struct ms_layered *file;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned allowed, reads;
	bool waiting; /* a read waits at the gate */
	bool open;
};

static int slow_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	struct slow *sl = ctx;
	pthread_mutex_lock(&sl->lock);
	bool pass = sl->reads++ < sl->allowed;
	if (!pass) {
		sl->waiting = true;
		pthread_cond_broadcast(&sl->cond);
		while (!sl->open)
			pthread_cond_wait(&sl->cond, &sl->lock);
	}
	pthread_mutex_unlock(&sl->lock);
	return pass ? ms_layered_page_source_ops.read(sl->file, dst, off, len) : -ECANCELED;
}

static void slow_classify(void *ctx, uint64_t off, uint64_t page_size, size_t npages,
			  uint8_t *kinds)
{
	struct slow *sl = ctx;
	ms_layered_page_source_ops.classify(sl->file, off, page_size, npages, kinds);
}

static uint64_t slow_size(void *ctx)
{
	struct slow *sl = ctx;
	return ms_layered_page_source_ops.size(sl->file);
}

static const struct ms_page_source_ops slow_ops = {
    .read = slow_read, .classify = slow_classify, .size = slow_size};

static void test_pause_during_prefetch(void **state)
{
	(void)state;
	struct rig r;
	rig_init(&r);
	struct ms_pause *pauses[4];
	struct ms_sandbox_paused paused[4];
	struct ms_uffd_trace trace;
	struct ms_pause *top = chain(&r, pauses, paused, &trace);
	struct cold c;
	cold_open(&r, ms_pause_build_id(top), "cold", &c);
	/* one page a read, one worker: 8 reads, then the gate */
	struct slow sl = {.file = c.file, .allowed = 8};
	pthread_mutex_init(&sl.lock, NULL);
	pthread_cond_init(&sl.cond, NULL);
	struct starter st = {.ops = &slow_ops,
			     .ctx = &sl,
			     .trace = &trace,
			     .options = {.fetch_workers = 1, .coalesce_bytes = P}};
	struct ms_pageserver *srv = server(&r, c.file, &st);
	struct ms_sandbox *p = resume(&r, &paused[2]);
	struct ms_uffd_session *s; /* handed out after on_session_start returned */
	assert_int_equal(ms_pageserver_next_session(srv, 10 * SEC, &s), 0);
	assert_non_null(st.pf);
	pthread_mutex_lock(&sl.lock);
	while (!sl.waiting)
		pthread_cond_wait(&sl.cond, &sl.lock);
	pthread_mutex_unlock(&sl.lock);
	/* the guest rewrites every page while the prefetch is in the middle of its trace */
	command(p, MS_PATTERN_FILL, 2);
	/* the daemon's order: the prefetch ends, then the sandbox pauses */
	pthread_mutex_lock(&sl.lock);
	sl.open = true;
	pthread_cond_broadcast(&sl.cond);
	pthread_mutex_unlock(&sl.lock);
	ms_uffd_prefetch_stop(st.pf);
	struct ms_uffd_prefetch_stats ps;
	ms_uffd_prefetch_get_stats(st.pf, &ps);
	assert_true(ps.stopped || ps.done);
	assert_true(ps.pages_installed <= 8);
	assert_true(ps.pages_installed < ps.pages_planned);
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(s);
	uint64_t prefetched = atomic_load(&m->pages_prefetched);
	pauses[3] = pause_into(&r, p, c.file, &paused[3]);
	assert_int_equal(atomic_load(&m->pages_prefetched), prefetched); /* none after the stop */
	ms_uffd_session_unref(s);
	ms_uffd_prefetch_free(st.pf);
	pthread_cond_destroy(&sl.cond);
	pthread_mutex_destroy(&sl.lock);
	ms_pageserver_free(srv);
	/* the build, cold from the store: epoch 2 on every data page */
	struct cold after;
	cold_open(&r, ms_pause_build_id(pauses[3]), "after", &after);
	uint8_t *mem = malloc(MEM);
	assert_non_null(mem);
	assert_int_equal(ms_layered_read(after.file, mem, 0, MEM), 0);
	for (uint64_t pg = MS_GUEST_DATA_FIRST_PAGE; pg < PAGES - MS_GUEST_STACK_PAGES; pg++)
		for (uint64_t w = 0; w < P / 8; w++) {
			uint64_t got;
			memcpy(&got, mem + pg * P + w * 8, 8);
			if (got != ms_guest_pattern_word(SEED, 2, pg, w))
				fail_msg("page %llu word %llu: not epoch 2", (unsigned long long)pg,
					 (unsigned long long)w);
		}
	free(mem);
	/* and a guest resumed from it verifies epoch 2 */
	srv = server(&r, after.file, NULL);
	p = resume(&r, &paused[3]);
	assert_int_equal(command(p, MS_PATTERN_VERIFY, 2), 0);
	ms_sandbox_destroy(p);
	ms_pageserver_free(srv);
	cold_close(&after);
	cold_close(&c);
	ms_uffd_trace_fini(&trace);
	chain_free(pauses, paused, 4);
	rig_fini(&r);
}

int main(int argc, char **argv)
{
	ops = ms_test_backend(argc > 1 ? argv[1] : NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prefetched_chain_reads_the_model),
	    cmocka_unit_test(test_pause_during_prefetch),
	};
	return cmocka_run_group_tests_name(ops->name, tests, NULL, NULL);
}
