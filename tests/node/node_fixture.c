/* node_fixture.c - see node_fixture.h. */
#include "ms_test.h"
#include "node_fixture.h"
#include "util/err.h"
#include "util/lock.h"

#include <stdio.h>
#include <string.h>

static const char *nf_backend = "proc";

int nf_setup(void **state)
{
	struct node_fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->dir = ms_test_tmpdir();
	f->backend = nf_backend;
	*state = f;
	return 0;
}

int nf_teardown(void **state)
{
	struct node_fixture *f = *state;
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

int nf_main(int argc, char **argv, const struct CMUnitTest *tests, size_t count)
{
	if (argc > 1)
		nf_backend = argv[1];
	ms_test_backend(nf_backend);
	return _cmocka_run_group_tests(argv[0], tests, count, NULL, NULL);
}

struct ms_node *nf_node_new(struct node_fixture *f, void (*tweak)(struct ms_node_config *cfg))
{
	struct ms_node_config cfg;
	ms_node_config_defaults(&cfg);
	unsigned n = f->nodes++;
	snprintf(cfg.backend, sizeof(cfg.backend), "%s", f->backend);
	snprintf(cfg.cache_dir, sizeof(cfg.cache_dir), "%s/cache%u", f->dir, n);
	snprintf(cfg.run_dir, sizeof(cfg.run_dir), "%s/run%u", f->dir, n);
	snprintf(cfg.store, sizeof(cfg.store), "file://%s/store", f->dir);
	cfg.peer_listen[0] = '\0';
	cfg.peers[0] = '\0';
	if (tweak)
		tweak(&cfg);
	int err = 0;
	char why[256] = "";
	struct ms_node *node = ms_node_new(&cfg, &err, why, sizeof(why));
	if (!node)
		fail_msg("node: %s (%s)", why, ms_strerror(err));
	return node;
}

void nf_node_free(struct ms_node *node)
{
	assert_int_equal(ms_node_shutdown(node), 0);
	ms_node_free(node);
}

struct ms_node_sandbox *nf_sandbox_new(struct ms_node *node)
{
	int err = 0;
	struct ms_node_sandbox *sb = ms_nsb_new(node, &err);
	if (!sb)
		fail_msg("sandbox: %s", ms_strerror(err));
	return sb;
}

void nf_sandbox_free(struct ms_node_sandbox *sb)
{
	pthread_mutex_lock(&sb->op);
	ms_nsb_teardown(sb);
	pthread_mutex_unlock(&sb->op);
	ms_nsb_unref(sb);
}

void nf_start_filled(struct ms_node_sandbox *sb, uint64_t seed, uint64_t epoch)
{
	struct ms_api_request req = {
	    .op = MS_API_SANDBOX_CREATE,
	    .guest = MS_GUEST_PATTERN,
	    .mem_size = NF_MEM,
	    .exec = {.set = true, .command = MS_PATTERN_FILL, .arg0 = seed, .arg1 = epoch}};
	char cause[200] = "";
	pthread_mutex_lock(&sb->op);
	int err = ms_nsb_start_fresh(sb, &req, cause, sizeof(cause));
	pthread_mutex_unlock(&sb->op);
	if (err == -ENOTSUP)
		MS_TEST_SKIP_EXIT("the kernel lacks userfaultfd WP_ASYNC or PAGEMAP_SCAN");
	if (err)
		fail_msg("start: %s (%s)", ms_strerror(err), cause);
}

ms_uuid nf_pause(struct ms_node_sandbox *sb)
{
	ms_uuid build;
	char cause[200] = "";
	pthread_mutex_lock(&sb->op);
	int err = ms_nsb_pause(sb, NULL, &build, cause, sizeof(cause));
	pthread_mutex_unlock(&sb->op);
	if (err)
		fail_msg("pause: %s (%s)", ms_strerror(err), cause);
	return build;
}

int nf_resume(struct ms_node_sandbox *sb, const ms_uuid *build, const struct ms_api_exec *exec)
{
	static const struct ms_api_exec none;
	char cause[200] = "";
	pthread_mutex_lock(&sb->op);
	int err = ms_nsb_resume(sb, build, exec ? exec : &none, cause, sizeof(cause));
	pthread_mutex_unlock(&sb->op);
	if (err)
		print_message("resume: %s (%s)\n", ms_strerror(err), cause);
	return err;
}

void nf_resume_verify(struct ms_node_sandbox *sb, const ms_uuid *build, uint64_t seed,
		      uint64_t epoch)
{
	struct ms_api_exec verify = {
	    .set = true, .command = MS_PATTERN_VERIFY, .arg0 = seed, .arg1 = epoch};
	assert_int_equal(nf_resume(sb, build, &verify), 0);
	pthread_mutex_lock(&sb->node->lock);
	uint64_t mismatched = sb->result0;
	pthread_mutex_unlock(&sb->node->lock);
	assert_int_equal(mismatched, 0);
}

struct ms_template *nf_cached(struct ms_node *node, const ms_uuid *id)
{
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_template_index_locked(node, id);
	struct ms_template *t = i >= 0 ? ms_template_ref(node->templates[i]) : NULL;
	pthread_mutex_unlock(&node->lock);
	return t;
}

int nf_wait_done(struct ms_node *node, const ms_uuid *id)
{
	struct ms_template *t = nf_cached(node, id);
	assert_non_null(t);
	pthread_mutex_lock(&node->lock);
	while (!t->done)
		pthread_cond_wait(&node->cond, &node->lock);
	int err = t->error;
	pthread_mutex_unlock(&node->lock);
	ms_template_unref(t);
	return err;
}
