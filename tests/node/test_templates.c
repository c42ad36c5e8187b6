/*
 * test_templates.c - the template cache (node/templates.c) without HTTP: a
 * miss of an unknown build, warm and cold hits, concurrent misses sharing
 * one fetch, the pipeline's figures, and the janitor's TTL (which never
 * evicts a pause whose pipeline still runs). Backend: argv[1] (proc, kvm).
 */
#include "ms_test.h"
#include "node_fixture.h"
#include "util/clock.h"
#include "util/err.h"

#include <string.h>
#include <unistd.h>

/* A published build of a pattern guest filled with (seed, 1), paused on node. */
static ms_uuid published_build(struct ms_node *node, uint64_t seed)
{
	struct ms_node_sandbox *sb = nf_sandbox_new(node);
	nf_start_filled(sb, seed, 1);
	ms_uuid build = nf_pause(sb);
	nf_sandbox_free(sb);
	assert_int_equal(nf_wait_done(node, &build), 0);
	return build;
}

static void test_unknown_build(void **state)
{
	struct ms_node *node = nf_node_new(*state, NULL);
	ms_uuid id;
	ms_uuid_generate(&id);
	struct ms_template *t = NULL;
	enum ms_start_type type;
	assert_int_equal(ms_template_get(node, &id, &t, &type), MS_ENOTFOUND);
	assert_null(t);
	assert_int_equal(type, MS_START_COLD);
	/* the failed fetch took its entry out: the next miss fetches again */
	assert_null(nf_cached(node, &id));
	assert_int_equal(ms_template_get(node, &id, &t, &type), MS_ENOTFOUND);
	assert_int_equal(atomic_load(&node->metrics.template_misses), 2);
	nf_node_free(node);
}

static void test_warm_and_cold(void **state)
{
	struct node_fixture *f = *state;
	struct ms_node *a = nf_node_new(f, NULL);
	ms_uuid build = published_build(a, 7);
	/* paused here: warm, the pause's own template */
	struct ms_template *t;
	enum ms_start_type type;
	assert_int_equal(ms_template_get(a, &build, &t, &type), 0);
	assert_int_equal(type, MS_START_WARM);
	assert_non_null(t->pause);
	assert_true(ms_uuid_eq(&t->id, &build));
	ms_template_unref(t);
	/* another node on the same store: cold from the store, then warm */
	struct ms_node *b = nf_node_new(f, NULL);
	assert_int_equal(ms_template_get(b, &build, &t, &type), 0);
	assert_int_equal(type, MS_START_COLD);
	assert_null(t->pause);
	assert_false(t->from_peer);
	assert_int_equal(t->mem_size, NF_MEM);
	assert_true(t->snapfile_len > 0);
	struct ms_template *again;
	assert_int_equal(ms_template_get(b, &build, &again, &type), 0);
	assert_int_equal(type, MS_START_WARM);
	assert_ptr_equal(again, t);
	ms_template_unref(again);
	ms_template_unref(t);
	assert_int_equal(atomic_load(&b->metrics.template_misses), 1);
	assert_int_equal(atomic_load(&b->metrics.template_hits), 1);
	/* and what it serves is the guest's memory */
	struct ms_node_sandbox *sb = nf_sandbox_new(b);
	nf_resume_verify(sb, &build, 7, 1);
	nf_sandbox_free(sb);
	nf_node_free(b);
	nf_node_free(a);
}

struct getter {
	struct ms_node *node;
	ms_uuid id;
	struct ms_template *t;
	int err;
};

static void *get_main(void *arg)
{
	struct getter *g = arg;
	enum ms_start_type type;
	g->err = ms_template_get(g->node, &g->id, &g->t, &type);
	return NULL;
}

static void test_concurrent_misses_share_one_fetch(void **state)
{
	struct node_fixture *f = *state;
	struct ms_node *a = nf_node_new(f, NULL);
	ms_uuid build = published_build(a, 11);
	nf_node_free(a);
	struct ms_node *b = nf_node_new(f, NULL);
	enum { N = 8 };
	struct getter g[N];
	pthread_t threads[N];
	for (int i = 0; i < N; i++) {
		g[i] = (struct getter){.node = b, .id = build};
		assert_int_equal(pthread_create(&threads[i], NULL, get_main, &g[i]), 0);
	}
	for (int i = 0; i < N; i++)
		pthread_join(threads[i], NULL);
	for (int i = 0; i < N; i++) {
		assert_int_equal(g[i].err, 0);
		assert_ptr_equal(g[i].t, g[0].t);
	}
	/* one entry, and each miss or hit went to it: misses + hits == N, one fetch */
	uint64_t misses = atomic_load(&b->metrics.template_misses);
	uint64_t hits = atomic_load(&b->metrics.template_hits);
	assert_int_equal(misses, 1);
	assert_true(hits <= N - 1);
	pthread_mutex_lock(&b->lock);
	assert_int_equal(b->ntemplates, 1);
	pthread_mutex_unlock(&b->lock);
	for (int i = 0; i < N; i++)
		ms_template_unref(g[i].t);
	nf_node_free(b);
}

static void test_pause_figures(void **state)
{
	struct ms_node *node = nf_node_new(*state, NULL);
	ms_uuid build = published_build(node, 3);
	struct ms_template *t = nf_cached(node, &build);
	assert_non_null(t);
	struct ms_pause_stats st;
	ms_pause_stats(t->pause, &st);
	double ms;
	assert_true(ms_pause_timing_ms(&st, MS_TIMING_COMPARE, &ms) && ms >= 0);
	assert_true(ms_pause_timing_ms(&st, MS_TIMING_DRAIN, &ms) && ms >= 0);
	assert_true(ms_pause_timing_ms(&st, MS_TIMING_UPLOAD, &ms) && ms >= 0);
	/* the node's own stages are not the pipeline's */
	assert_false(ms_pause_timing_ms(&st, MS_TIMING_STOP, &ms));
	assert_false(ms_pause_timing_ms(&st, MS_TIMING_RESUMABLE, &ms));
	assert_true(st.pages_dirty > 0);
	assert_true(st.upload_bytes > 0);
	/* counted by the time the build shows done: a scrape then sees it */
	assert_int_equal(atomic_load(&node->metrics.pauses_published), 1);
	assert_int_equal(atomic_load(&node->metrics.pauses_failed), 0);
	/* the pipeline counted its pages for the node's metrics */
	assert_int_equal(atomic_load(&node->metrics.pipeline.pages_dirty), st.pages_dirty);
	assert_int_equal(node->metrics.pause_stage[MS_TIMING_UPLOAD].count, 1);
	ms_template_unref(t);
	nf_node_free(node);
}

static void short_ttl(struct ms_node_config *cfg)
{
	cfg->template_ttl_ns = MS_NSEC_PER_MSEC;
}

static void short_ttl_stalled(struct ms_node_config *cfg)
{
	short_ttl(cfg);
	cfg->test_stall_compare_ns = 600 * MS_NSEC_PER_SEC; /* ends when the node stops */
}

static bool evicted_within(struct ms_node *node, const ms_uuid *id, int seconds)
{
	for (int i = 0; i < seconds * 20; i++) {
		struct ms_template *t = nf_cached(node, id);
		if (!t)
			return true;
		ms_template_unref(t);
		usleep(50000);
	}
	return false;
}

static void test_janitor_evicts_after_ttl(void **state)
{
	struct ms_node *node = nf_node_new(*state, short_ttl);
	ms_uuid build = published_build(node, 5);
	assert_true(evicted_within(node, &build, 30));
	assert_int_equal(atomic_load(&node->metrics.template_evictions), 1);
	/* evicted, not lost: the next resume fetches it from the store */
	struct ms_template *t;
	enum ms_start_type type;
	assert_int_equal(ms_template_get(node, &build, &t, &type), 0);
	assert_int_equal(type, MS_START_COLD);
	ms_template_unref(t);
	nf_node_free(node);
}

static void test_janitor_keeps_running_pipeline(void **state)
{
	struct ms_node *node = nf_node_new(*state, short_ttl_stalled);
	struct ms_node_sandbox *sb = nf_sandbox_new(node);
	nf_start_filled(sb, 9, 1);
	ms_uuid build = nf_pause(sb);
	nf_sandbox_free(sb);
	/* the janitor ticks every second: three ticks past the TTL, still cached */
	sleep(3);
	struct ms_template *t = nf_cached(node, &build);
	assert_non_null(t);
	pthread_mutex_lock(&node->lock);
	assert_false(t->done);
	pthread_mutex_unlock(&node->lock);
	assert_true(ms_pause_state(t->pause, NULL) < MS_PAUSE_COMPARING);
	ms_template_unref(t);
	assert_int_equal(atomic_load(&node->metrics.template_evictions), 0);
	nf_node_free(node); /* the stop lifts the stall; the upload finishes */
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_unknown_build, nf_setup, nf_teardown),
	    cmocka_unit_test_setup_teardown(test_warm_and_cold, nf_setup, nf_teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_misses_share_one_fetch, nf_setup,
					    nf_teardown),
	    cmocka_unit_test_setup_teardown(test_pause_figures, nf_setup, nf_teardown),
	    cmocka_unit_test_setup_teardown(test_janitor_evicts_after_ttl, nf_setup, nf_teardown),
	    cmocka_unit_test_setup_teardown(test_janitor_keeps_running_pipeline, nf_setup,
					    nf_teardown),
	};
	return nf_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}
