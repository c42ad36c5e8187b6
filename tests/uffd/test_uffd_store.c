/*
 * test_uffd_store.c - the whole read path through a real userfaultfd: a
 * Firecracker-like child touches every page of a 3-layer image that the page
 * server serves from an object store (fs, and the real S3 server when
 * MEMSNAP_S3_ENDPOINT is set, as `make test` does), through the layered file,
 * the diff store and chunked fetches. Every byte must match.
 */
#include "ms_test.h"
#include "ms_chain.h"
#include "uffd_test_util.h"
#include "build/layered.h"
#include "build/storage.h"
#include "storage/s3.h"
#include "uffd/filesource.h"
#include "util/clock.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGES 4096 /* 16 MiB */

static void serve_and_check(struct ms_store *store, bool shmem, uint64_t batch)
{
	struct ms_test_chain chain;
	ms_test_chain_build(store, PAGES, &chain);
	char *dir = ms_test_tmpdir(), cache[512];
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	assert_int_equal(mkdir(cache, 0700), 0);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = cache};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	assert_non_null(diffs);
	struct ms_build_storage bs = {
	    .store = store, .diffs = diffs, .cache_dir = cache, .data = MS_ARTIFACT_MEMFILE};
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(store, &chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	struct ms_layered *file = ms_layered_new(top, ms_build_storage_resolve, &bs);
	char *sock_dir, *sock = test_socket_path(&sock_dir);
	struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = batch};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts, &(int){0});
	assert_non_null(srv);
	uint8_t *image = ms_test_chain_image(&chain);
	struct fc_child_cfg cfg = {.sock_path = sock,
				   .size = PAGES * 4096ULL,
				   .page_size = 4096,
				   .regions = 2,
				   .shmem = shmem,
				   .wp = true,
				   .source = image};
	struct fc_child child;
	assert_int_equal(fc_child_start(&cfg, &child), 0);
	struct ms_uffd_session *session;
	assert_int_equal(ms_pageserver_next_session(srv, 10 * MS_NSEC_PER_SEC, &session), 0);
	int64_t t0 = ms_clock_now_ns();
	int64_t bad = fc_child_cmd(&child, FC_READ_CHECK, 0, cfg.size, 0, 60000);
	double secs = (double)(ms_clock_now_ns() - t0) / 1e9;
	assert_int_equal(bad, 0);
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(session);
	print_message(
	    "%s %s: %d pages in %.3f s, %llu from the source, %llu zero, %llu faults\n",
	    store->ops->name, shmem ? "memfd" : "anon", PAGES, secs,
	    (unsigned long long)atomic_load(&m->pages_source),
	    (unsigned long long)atomic_load(&m->pages_zero),
	    (unsigned long long)(atomic_load(&m->faults_read) + atomic_load(&m->faults_write)));
	/* a read-only touch leaves nothing dirty */
	struct ms_pageset *dirty, *empty;
	assert_int_equal(ms_uffd_session_export(session, &dirty, &empty), 0);
	assert_int_equal(ms_pageset_count(dirty), 0);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	fc_child_exit(&child);
	/* the counters settle with the session: a page is counted after the wake-up that let
	 * the child go on, so count only once the session has ended */
	assert_int_equal(ms_uffd_session_wait(session, 10 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(atomic_load(&m->pages_source) + atomic_load(&m->pages_zero), PAGES);
	ms_uffd_session_unref(session);

	/* A second resume over the same node: every chunk is cached now, so the file source
	 * classifies every page LOCAL (or ZERO) and each fault is served inline on the event
	 * thread, no worker hand-off (before classify, faults_inline stayed 0 here). */
	assert_int_equal(fc_child_start(&cfg, &child), 0);
	assert_int_equal(ms_pageserver_next_session(srv, 10 * MS_NSEC_PER_SEC, &session), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 0, cfg.size, 0, 60000), 0);
	fc_child_exit(&child);
	assert_int_equal(ms_uffd_session_wait(session, 10 * MS_NSEC_PER_SEC), 0);
	m = ms_uffd_session_metrics(session);
	uint64_t faults = atomic_load(&m->faults_read) + atomic_load(&m->faults_write);
	uint64_t zero_faults = atomic_load(&m->pages_zero);
	print_message(
	    "warm: %llu faults, %llu inline, %llu zero, %llu pages sliced\n",
	    (unsigned long long)faults, (unsigned long long)atomic_load(&m->faults_inline),
	    (unsigned long long)zero_faults, (unsigned long long)atomic_load(&m->pages_sliced));
	assert_true(faults > 0);
	assert_int_equal(atomic_load(&m->faults_inline) + zero_faults, faults);
	/* ... and, one page a job, the pages of the object read in place (the plain layer)
	 * straight from its mapping; the chunker's are read (filesource.c says why). (The
	 * chain's layers change every few pages, so a 64 KiB block spans several header runs:
	 * no one slice holds it, and it is read.) */
	if (batch == 4096 && !strcmp(store->ops->name, "fs"))
		assert_true(atomic_load(&m->pages_sliced) > 0);
	assert_int_equal(atomic_load(&m->slice_fallbacks), 0);
	assert_int_equal(atomic_load(&m->pages_source) + atomic_load(&m->pages_zero), PAGES);
	ms_uffd_session_unref(session);
	ms_pageserver_free(srv);
	ms_layered_free(file);
	ms_diffstore_free(diffs);
	free(image);
	ms_test_chain_fini(&chain);
	free(sock);
	ms_test_rmtree(sock_dir);
	free(sock_dir);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_from_fs_store(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	char *dir = ms_test_tmpdir();
	int err;
	struct ms_store *store = ms_store_fs_new(dir, &err);
	assert_non_null(store);
	serve_and_check(store, false, 65536);
	serve_and_check(store, true, 4096);
	ms_store_free(store);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_from_s3(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	const char *endpoint = getenv("MEMSNAP_S3_ENDPOINT");
	if (!endpoint || !*endpoint) {
		print_message(
		    "SKIP: MEMSNAP_S3_ENDPOINT is not set (make test starts the S3 server)\n");
		skip();
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "uffd-%d", (int)getpid());
	struct ms_s3_config cfg = {
	    .endpoint = endpoint,
	    .bucket = "memsnap-uffd",
	    .prefix = prefix,
	    .access_key = getenv("MEMSNAP_S3_ACCESS_KEY"),
	    .secret_key = getenv("MEMSNAP_S3_SECRET_KEY"),
	    .region = getenv("MEMSNAP_S3_REGION"),
	};
	int err;
	struct ms_store *store = ms_store_s3_new(&cfg, &err);
	assert_non_null(store);
	assert_int_equal(ms_store_s3_create_bucket(store), 0);
	serve_and_check(store, false, 65536);
	ms_store_free(store);
}

/*
 * The `memsnap pageserver` command, as a Firecracker user runs it: a separate
 * process serving a build from a store; the child touches every page; SIGTERM
 * stops the server, which prints a summary line for the session.
 */
static void test_pageserver_command(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	const char *build_root = getenv("MEMSNAP_BUILD_ROOT");
	assert_non_null(build_root);
	char *dir = ms_test_tmpdir();
	char store_dir[512], sock[512], log[512], exe[1024], uri[600], id[MS_UUID_STR_LEN];
	snprintf(store_dir, sizeof(store_dir), "%s/store", dir);
	snprintf(sock, sizeof(sock), "%s/fc.sock", dir);
	snprintf(log, sizeof(log), "%s/out.log", dir);
	snprintf(exe, sizeof(exe), "%s/src/cli/memsnap", build_root);
	snprintf(uri, sizeof(uri), "file://%s", store_dir);
	int err;
	struct ms_store *store = ms_store_fs_new(store_dir, &err);
	struct ms_test_chain chain;
	ms_test_chain_build(store, PAGES, &chain);
	ms_uuid_format(&chain.ids[MS_CHAIN_LAYERS - 1], id);
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(exe, exe, "pageserver", "--store", uri, "--build", id, "--socket", sock,
		      (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && access(sock, F_OK) != 0; i++)
		usleep(20000);
	assert_int_equal(access(sock, F_OK), 0);
	uint8_t *image = ms_test_chain_image(&chain);
	struct fc_child_cfg cfg = {.sock_path = sock,
				   .size = PAGES * 4096ULL,
				   .page_size = 4096,
				   .regions = 1,
				   .wp = true,
				   .source = image};
	struct fc_child child;
	assert_int_equal(fc_child_start(&cfg, &child), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 0, cfg.size, 0, 60000), 0);
	fc_child_exit(&child);
	usleep(300000); /* the server notices the session's end within its 200 ms poll */
	kill(pid, SIGTERM);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	FILE *f = fopen(log, "r");
	char line[1024];
	bool summary = false;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "session 1") && strstr(line, "pages served"))
			summary = true;
	fclose(f);
	assert_true(summary);
	free(image);
	ms_test_chain_fini(&chain);
	ms_store_free(store);
	ms_test_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_from_fs_store),
	    cmocka_unit_test(test_from_s3),
	    cmocka_unit_test(test_pageserver_command),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
