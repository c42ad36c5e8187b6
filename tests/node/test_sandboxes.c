/*
 * test_sandboxes.c - the sandbox part of the daemon (node/sandboxes.c)
 * without HTTP: fresh start, pause into a build, warm resume, a chain of
 * pauses resumed cold on another node, a failed resume that changes nothing,
 * and the template references a sandbox holds. Backend: argv[1] (proc, kvm).
 */
#include "ms_test.h"
#include "node_fixture.h"
#include "util/err.h"

#include <string.h>

/* The sandbox's API-visible fields, read under node->lock. */
struct seen {
	enum ms_sb_state state;
	enum ms_start_type start_type;
	bool has_build;
	ms_uuid build_id;
	unsigned pauses, resumes;
	uint64_t reports;
};

static struct seen seen(struct ms_node_sandbox *sb)
{
	pthread_mutex_lock(&sb->node->lock);
	struct seen s = {sb->state,  sb->start_type, sb->has_build, sb->build_id,
			 sb->pauses, sb->resumes,    sb->reports};
	pthread_mutex_unlock(&sb->node->lock);
	return s;
}

static void test_fresh_pause_warm_resume(void **state)
{
	struct ms_node *node = nf_node_new(*state, NULL);
	struct ms_node_sandbox *sb = nf_sandbox_new(node);
	nf_start_filled(sb, 21, 1);
	struct seen s = seen(sb);
	assert_int_equal(s.state, SB_RUNNING);
	assert_int_equal(s.start_type, MS_START_FRESH);
	assert_false(s.has_build);
	assert_true(s.reports > 0);
	assert_non_null(sb->tmpl);
	assert_true(sb->tmpl->base);

	ms_uuid build = nf_pause(sb);
	s = seen(sb);
	assert_int_equal(s.state, SB_PAUSED);
	assert_true(s.has_build);
	assert_true(ms_uuid_eq(&s.build_id, &build));
	assert_int_equal(s.pauses, 1);
	/* the VM, its page server and the base template went with the pause */
	assert_null(sb->vm);
	assert_null(sb->srv);
	assert_null(sb->tmpl);
	/* the build is in the cache at once, before its pipeline ended */
	struct ms_template *t = nf_cached(node, &build);
	assert_non_null(t);
	assert_non_null(t->pause);
	assert_int_equal(t->guest, MS_GUEST_PATTERN);
	ms_template_unref(t);

	nf_resume_verify(sb, &build, 21, 1);
	s = seen(sb);
	assert_int_equal(s.state, SB_RUNNING);
	assert_int_equal(s.start_type, MS_START_WARM);
	assert_int_equal(s.resumes, 1);
	assert_non_null(sb->srv);
	assert_int_equal(nf_wait_done(node, &build), 0);
	nf_sandbox_free(sb);
	nf_node_free(node);
}

static void test_failed_resume_changes_nothing(void **state)
{
	struct ms_node *node = nf_node_new(*state, NULL);
	struct ms_node_sandbox *sb = nf_sandbox_new(node);
	nf_start_filled(sb, 4, 1);
	ms_uuid build = nf_pause(sb);
	ms_uuid unknown;
	ms_uuid_generate(&unknown);
	assert_int_equal(nf_resume(sb, &unknown, NULL), MS_ENOTFOUND);
	struct seen s = seen(sb);
	assert_int_equal(s.state, SB_PAUSED);
	assert_true(ms_uuid_eq(&s.build_id, &build));
	assert_int_equal(s.resumes, 0);
	assert_null(sb->vm);
	assert_null(sb->srv);
	assert_null(sb->tmpl);
	/* and the sandbox still resumes its own build */
	nf_resume_verify(sb, &build, 4, 1);
	assert_int_equal(nf_wait_done(node, &build), 0);
	nf_sandbox_free(sb);
	nf_node_free(node);
}

static void test_sandbox_holds_its_template(void **state)
{
	struct ms_node *node = nf_node_new(*state, NULL);
	struct ms_node_sandbox *sb = nf_sandbox_new(node);
	nf_start_filled(sb, 8, 1);
	ms_uuid build = nf_pause(sb);
	assert_int_equal(nf_wait_done(node, &build), 0);
	struct ms_template *t = nf_cached(node, &build);
	unsigned before = atomic_load(&t->refs);
	assert_int_equal(nf_resume(sb, &build, NULL), 0);
	assert_ptr_equal(sb->tmpl, t);
	assert_int_equal(atomic_load(&t->refs), before + 1);
	pthread_mutex_lock(&sb->op);
	ms_nsb_teardown(sb);
	pthread_mutex_unlock(&sb->op);
	assert_null(sb->tmpl);
	assert_int_equal(atomic_load(&t->refs), before);
	ms_template_unref(t);
	ms_nsb_unref(sb);
	nf_node_free(node);
}

static void test_chain_resumes_cold_elsewhere(void **state)
{
	struct node_fixture *f = *state;
	struct ms_node *a = nf_node_new(f, NULL);
	struct ms_node_sandbox *sb = nf_sandbox_new(a);
	nf_start_filled(sb, 31, 1);
	ms_uuid parent = nf_pause(sb);
	/* resume, fill again (epoch 2), pause: a child of parent */
	struct ms_api_exec fill = {.set = true, .command = MS_PATTERN_FILL, .arg0 = 31, .arg1 = 2};
	assert_int_equal(nf_resume(sb, &parent, &fill), 0);
	ms_uuid child = nf_pause(sb);
	assert_false(ms_uuid_eq(&child, &parent));
	struct ms_template *t = nf_cached(a, &child);
	assert_ptr_equal(t->parent, nf_cached(a, &parent));
	ms_template_unref(t->parent); /* nf_cached's reference */
	ms_template_unref(t);
	assert_int_equal(nf_wait_done(a, &parent), 0);
	assert_int_equal(nf_wait_done(a, &child), 0);
	nf_sandbox_free(sb);
	nf_node_free(a);
	/* a node that never saw either: both resume cold from the store */
	struct ms_node *b = nf_node_new(f, NULL);
	sb = nf_sandbox_new(b);
	nf_resume_verify(sb, &child, 31, 2);
	assert_int_equal(seen(sb).start_type, MS_START_COLD);
	nf_sandbox_free(sb);
	/* a resume is of a sandbox without a VM (the API allows it only when PAUSED) */
	sb = nf_sandbox_new(b);
	nf_resume_verify(sb, &parent, 31, 1);
	nf_sandbox_free(sb);
	nf_node_free(b);
}

static void test_lookup(void **state)
{
	struct ms_node *node = nf_node_new(*state, NULL);
	ms_uuid id;
	ms_uuid_generate(&id);
	assert_null(ms_nsb_lookup(node, &id));
	pthread_mutex_lock(&node->lock);
	assert_int_equal(ms_nsb_index_locked(node, &id), -1);
	pthread_mutex_unlock(&node->lock);
	nf_node_free(node);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fresh_pause_warm_resume, nf_setup, nf_teardown),
	    cmocka_unit_test_setup_teardown(test_failed_resume_changes_nothing, nf_setup,
					    nf_teardown),
	    cmocka_unit_test_setup_teardown(test_sandbox_holds_its_template, nf_setup, nf_teardown),
	    cmocka_unit_test_setup_teardown(test_chain_resumes_cold_elsewhere, nf_setup,
					    nf_teardown),
	    cmocka_unit_test_setup_teardown(test_lookup, nf_setup, nf_teardown),
	};
	return nf_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}
