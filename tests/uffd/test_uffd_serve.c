/*
 * test_uffd_serve.c - the page server through a real userfaultfd, against a
 * child that behaves as Firecracker does: every byte matches the source, WP
 * dirty tracking is exact, zero pages, batching, prefault, shmem, hugetlb,
 * installs straight from a source's slice (and back to a read when the kernel
 * cannot copy from it).
 */
#include "ms_test.h"
#include "uffd_test_util.h"
#include "build/layered.h"
#include "cache/source.h"
#include "header/header.h"
#include "uffd/filesource.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MiB	   (1024ULL * 1024)
#define TIMEOUT_NS (10LL * 1000000000LL)

struct fixture {
	struct test_source src;
	char *dir, *path;
	struct ms_pageserver *srv;
	struct fc_child child;
	struct ms_uffd_session *session;
};

/*
 * Starts a server over a fresh source and a child: 0, or the child's error when it
 * cannot map its guest memory (everything is released then). Only the hugetlb test
 * may take that as a skip (its pool can be too small); fixture_start fails the rest.
 */
static int fixture_try(struct fixture *f, uint64_t size, uint64_t page_size,
		       const struct ms_pageserver_options *opts, struct fc_child_cfg cfg,
		       bool cached, bool zero_hint)
{
	memset(f, 0, sizeof(*f));
	test_source_init(&f->src, size, page_size);
	f->src.cached = cached;
	f->src.zero_hint = zero_hint;
	f->path = test_socket_path(&f->dir);
	cfg.sock_path = f->path;
	cfg.size = size;
	cfg.page_size = page_size;
	cfg.source = f->src.data;
	assert_int_equal(fc_child_spawn(&cfg, &f->child), 0);
	f->srv = ms_pageserver_new(f->path, &test_source_ops, &f->src, opts, &(int){0});
	assert_non_null(f->srv);
	int err = fc_child_ready(&f->child);
	if (err) {
		ms_pageserver_free(f->srv);
		test_source_fini(&f->src);
		ms_test_rmtree(f->dir);
		free(f->dir);
		free(f->path);
		return err;
	}
	assert_int_equal(ms_pageserver_next_session(f->srv, TIMEOUT_NS, &f->session), 0);
	assert_int_equal(ms_uffd_session_page_size(f->session), page_size);
	return 0;
}

/* fixture_try, and a set-up failure fails the test. */
static void fixture_start(struct fixture *f, uint64_t size, uint64_t page_size,
			  const struct ms_pageserver_options *opts, struct fc_child_cfg cfg,
			  bool cached, bool zero_hint)
{
	int err = fixture_try(f, size, page_size, opts, cfg, cached, zero_hint);
	if (err)
		fail_msg("set-up: the child could not set up its guest memory: %s", strerror(-err));
}

/* The child exits and the session ends with it, cleanly; its counters are final then. */
static void fixture_end(struct fixture *f)
{
	fc_child_exit(&f->child);
	/* The session ends on its own when the peer exits. */
	assert_int_equal(ms_uffd_session_wait(f->session, TIMEOUT_NS), 0);
	assert_int_equal(ms_uffd_session_state(f->session), MS_UFFD_SESSION_CLOSED);
	assert_int_equal(ms_uffd_session_error(f->session, NULL), 0);
}

/* After fixture_end. */
static void fixture_free(struct fixture *f)
{
	ms_uffd_session_unref(f->session);
	ms_pageserver_free(f->srv);
	test_source_fini(&f->src);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f->path);
}

static void fixture_stop(struct fixture *f)
{
	fixture_end(f);
	fixture_free(f);
}

static uint64_t metric(struct fixture *f, size_t offset)
{
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(f->session);
	return atomic_load((const _Atomic uint64_t *)((const char *)m + offset));
}
#define M(f, field) metric(f, offsetof(struct ms_uffd_metrics, field))

/* Counters are bumped just after the install ioctl that already woke the child: wait until
 * they stop moving before asserting exact values. */
static void settle(struct fixture *f)
{
	uint64_t last = UINT64_MAX;
	for (int i = 0; i < 100; i++) {
		uint64_t now = M(f, pages_source) + M(f, pages_zero) + M(f, faults_wp) +
			       M(f, faults_read) + M(f, faults_write) + M(f, pages_prefault);
		if (now == last)
			return;
		last = now;
		usleep(20000);
	}
}

static int64_t cmd(struct fixture *f, int op, uint64_t off, uint64_t len, uint64_t arg)
{
	int64_t r = fc_child_cmd(&f->child, op, off, len, arg, 20000);
	settle(f);
	return r;
}

/* The expected empty set: source pages that are all zero (every 5th page) among [0, n). */
static void check_export(struct fixture *f, const struct ms_pageset *want_dirty,
			 uint64_t zero_pages_upto)
{
	struct ms_pageset *dirty, *empty;
	assert_int_equal(ms_uffd_session_export(f->session, &dirty, &empty), 0);
	assert_true(ms_pageset_equal(dirty, want_dirty));
	for (uint64_t p = 0; p < zero_pages_upto; p++) {
		bool zero = test_page_is_zero(f->src.data + p * 4096, 4096);
		bool is_dirty = ms_pageset_contains(want_dirty, (uint32_t)p);
		if (f->src.zero_hint)
			assert_int_equal(ms_pageset_contains(empty, (uint32_t)p),
					 zero && !is_dirty);
	}
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
}

/* Anonymous MAP_PRIVATE, MISSING|WP, two regions, inline (cached) source with zero hints. */
static void test_anon_wp_exact(void **state)
{
	(void)state;
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 2};
	struct fc_child_cfg cfg = {.regions = 2, .wp = true};
	const uint64_t size = 16 * MiB, pages = size / 4096;
	fixture_start(&f, size, 4096, &opts, cfg, true, true);
	/* Read-only touch of everything: every byte matches, nothing dirty. */
	assert_int_equal(cmd(&f, FC_READ_CHECK, 0, size, 0), 0);
	assert_true(ms_uffd_session_has_wp(f.session));
	struct ms_pageset *want = ms_pageset_new();
	check_export(&f, want, pages);
	assert_int_equal(M(&f, faults_write), 0);
	assert_int_equal(M(&f, faults_wp), 0);
	assert_true(M(&f, pages_zero) >= pages / 5);
	assert_int_equal(M(&f, pages_source) + M(&f, pages_zero), pages);
	/* Writes: some to data pages, some to zero pages, one spanning the region boundary. */
	uint64_t written[] = {0, 1, 4, 9, 100, pages / 2 - 1, pages / 2, pages - 1};
	for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++) {
		assert_int_equal(cmd(&f, FC_WRITE, written[i] * 4096, 4096, 0xA5), 0);
		ms_pageset_add(want, (uint32_t)written[i]);
	}
	check_export(&f, want, pages);
	assert_int_equal(M(&f, faults_wp), sizeof(written) / sizeof(written[0]));
	for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++)
		assert_int_equal(cmd(&f, FC_READ_CHECK, written[i] * 4096, 4096, 0xA5 + 2), 0);
	/* Untouched pages still match. */
	assert_int_equal(cmd(&f, FC_READ_CHECK, 2 * 4096, 2 * 4096, 0), 0);
	ms_pageset_free(want);
	fixture_stop(&f);
}

/* Write faults on never-touched pages (MISSING + write): writable at once, dirty. */
static void test_anon_write_faults(void **state)
{
	(void)state;
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 3, .batch_bytes = 64 * 1024};
	struct fc_child_cfg cfg = {.regions = 1, .wp = true};
	const uint64_t size = 4 * MiB;
	fixture_start(&f, size, 4096, &opts, cfg, false, false);
	struct ms_pageset *want = ms_pageset_new();
	/* Page 3 is in the block of page 0..15; page 4 is a zero page (no hint: read). */
	uint64_t written[] = {3, 4, 40, 1000};
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(cmd(&f, FC_WRITE, written[i] * 4096, 4096, 0x11), 0);
		ms_pageset_add(want, (uint32_t)written[i]);
	}
	/* Page 4 was installed (WP) with page 3's block: its write is a WP fault. */
	assert_int_equal(M(&f, faults_write), 3);
	assert_int_equal(M(&f, faults_wp), 1);
	/* The rest of each block came along (batched, read-only and WP). */
	assert_true(M(&f, pages_batched) > 0);
	assert_int_equal(cmd(&f, FC_READ_CHECK, 0, size, 0), 4); /* exactly the written 4 differ */
	check_export(&f, want, 0);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(cmd(&f, FC_READ_CHECK, written[i] * 4096, 4096, 0x11 + 2), 0);
	ms_pageset_free(want);
	fixture_stop(&f);
}

/* MISSING only (no WP): worker path with 64 KiB batching; all bytes match; dirty = written. */
static void test_anon_nowp_batched(void **state)
{
	(void)state;
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = 64 * 1024};
	struct fc_child_cfg cfg = {.regions = 2, .wp = false};
	const uint64_t size = 8 * MiB;
	fixture_start(&f, size, 4096, &opts, cfg, false, false);
	assert_int_equal(cmd(&f, FC_READ_CHECK, 0, size, 0), 0);
	assert_false(ms_uffd_session_has_wp(f.session));
	/* 16 pages per fault: far fewer faults than pages. */
	assert_true(M(&f, faults_read) <= size / 4096 / 8);
	assert_true(M(&f, pages_batched) > size / 4096 / 2);
	assert_int_equal(M(&f, faults_inline), 0);
	struct ms_pageset *want = ms_pageset_new();
	check_export(&f, want, 0); /* without WP a write to an installed page is invisible */
	ms_pageset_free(want);
	fixture_stop(&f);
}

/* memfd MAP_SHARED region sent as the second fd; MISSING|WP on shmem needs
 * UFFD_FEATURE_WP_HUGETLBFS_SHMEM at UFFDIO_API time. */
static void test_shmem_memfd(void **state)
{
	(void)state;
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 16 * 1024};
	struct fc_child_cfg cfg = {.regions = 2, .shmem = true, .wp = true};
	const uint64_t size = 8 * MiB;
	fixture_start(&f, size, 4096, &opts, cfg, false, true);
	assert_true(ms_uffd_session_memfd(f.session) >= 0);
	assert_int_equal(cmd(&f, FC_READ_CHECK, 0, size, 0), 0);
	assert_true(ms_uffd_session_has_wp(f.session));
	struct ms_pageset *want = ms_pageset_new();
	check_export(&f, want, size / 4096);
	assert_int_equal(cmd(&f, FC_WRITE, 7 * 4096, 2 * 4096, 0x3c), 0);
	ms_pageset_add_range(want, 7, 9);
	check_export(&f, want, size / 4096);
	/* The bytes are in the memfd too: read them through it. */
	uint8_t page[4096];
	assert_int_equal(pread(ms_uffd_session_memfd(f.session), page, 4096, 7 * 4096), 4096);
	assert_int_equal(page[0], 0x3c);
	assert_int_equal(pread(ms_uffd_session_memfd(f.session), page, 4096, 2 * 4096), 4096);
	assert_memory_equal(page, f.src.data + 2 * 4096, 4096);
	ms_pageset_free(want);
	fixture_stop(&f);
}

/* 2 MiB hugetlb pages (anonymous MAP_HUGETLB); skipped when the pool is empty. */
static void test_hugetlb(void **state)
{
	(void)state;
	void *probe = mmap(NULL, 2 * MiB, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (probe == MAP_FAILED) {
		printf(
		    "SKIP: test_hugetlb: MAP_HUGETLB failed (%s); set vm.nr_hugepages to run it\n",
		    strerror(errno));
		skip();
	}
	munmap(probe, 2 * MiB);
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 2};
	struct fc_child_cfg cfg = {.regions = 1, .wp = true};
	const uint64_t size = 8 * MiB;
	int err = fixture_try(&f, size, 2 * MiB, &opts, cfg, false, false);
	if (err) {
		printf("SKIP: test_hugetlb: the child could not map %llu MiB of huge pages (%s); "
		       "raise vm.nr_hugepages to run it\n",
		       (unsigned long long)(size / MiB), strerror(-err));
		skip();
	}
	assert_int_equal(cmd(&f, FC_READ_CHECK, 0, size, 0), 0);
	assert_int_equal(M(&f, pages_source) + M(&f, pages_zero), 4);
	assert_int_equal(cmd(&f, FC_WRITE, 2 * MiB + 4096, 4096, 0x77), 0);
	struct ms_pageset *want = ms_pageset_new();
	if (ms_uffd_session_has_wp(f.session)) {
		ms_pageset_add_range(want, 512, 1024); /* the whole huge page, in 4 KiB units */
		check_export(&f, want, 0);
	}
	ms_pageset_free(want);
	fixture_stop(&f);
}

/* Prefault installs pages ahead of faults: touching them afterwards raises no fault. */
static void test_prefault(void **state)
{
	(void)state;
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 32 * 1024};
	struct fc_child_cfg cfg = {.regions = 2, .wp = true};
	const uint64_t size = 4 * MiB;
	fixture_start(&f, size, 4096, &opts, cfg, false, true);
	uint64_t offs[64];
	for (int i = 0; i < 64; i++)
		offs[i] =
		    (uint64_t)(i * 13) * 4096 + 17; /* any alignment: the page containing it */
	assert_int_equal(ms_uffd_session_prefault(f.session, offs, 64), 0);
	assert_int_equal(M(&f, pages_prefault), 64);
	assert_int_equal(M(&f, faults_read), 0);
	for (int i = 0; i < 64; i++)
		assert_int_equal(cmd(&f, FC_READ_CHECK, offs[i] & ~4095ULL, 4096, 0), 0);
	assert_int_equal(M(&f, faults_read), 0);
	/* Again: everything is installed already, nothing new. */
	assert_int_equal(ms_uffd_session_prefault(f.session, offs, 64), 0);
	assert_int_equal(M(&f, pages_prefault), 64);
	uint64_t bad = size;
	assert_int_equal(ms_uffd_session_prefault(f.session, &bad, 1), -EINVAL);
	/* Prefaulted pages are clean: nothing dirty. */
	struct ms_pageset *want = ms_pageset_new();
	check_export(&f, want, 0);
	ms_pageset_free(want);
	fixture_stop(&f);
	/* After the session closed, prefault refuses. */
}

/*
 * A source that hands out views: every page is installed by the kernel's copy straight
 * from the source's bytes, none is read into a buffer first, and every byte matches;
 * each view's hold is released once.
 */
static void test_slice_installs_without_copy(void **state)
{
	(void)state;
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 64 * 1024};
	struct fc_child_cfg cfg = {.regions = 2, .wp = true};
	const uint64_t size = 8 * MiB, pages = size / 4096;
	fixture_start(&f, size, 4096, &opts, cfg, true, false);
	atomic_store(&f.src.slice, TEST_SLICE_DATA);
	/* a write fault installs writable from the view; then everything is read */
	assert_int_equal(cmd(&f, FC_WRITE, 5 * 4096, 4096, 0x33), 0);
	assert_int_equal(cmd(&f, FC_READ_CHECK, 0, size, 0), 1); /* the written page */
	assert_int_equal(cmd(&f, FC_READ_CHECK, 5 * 4096, 4096, 0x33 + 2), 0);
	struct ms_pageset *want = ms_pageset_new();
	ms_pageset_add(want, 5);
	check_export(&f, want, 0);
	ms_pageset_free(want);
	fixture_end(&f);
	assert_int_equal(M(&f, pages_source), pages);
	assert_int_equal(M(&f, pages_sliced), pages);
	assert_int_equal(M(&f, slice_fallbacks), 0);
	assert_int_equal(M(&f, source_reads), 0);
	assert_int_equal(atomic_load(&f.src.reads), 0);
	assert_true(atomic_load(&f.src.slices) > 0);
	assert_int_equal(atomic_load(&f.src.holds), 0);
	fixture_free(&f);
}

/*
 * Views the kernel cannot copy from (PROT_NONE here; a truncated file's mapping in
 * production): the copy fails with -EFAULT, not a signal in the server, and each job goes
 * back to the read path, so every byte still matches and the session does not fail.
 */
static void test_slice_unreadable_reads(void **state)
{
	(void)state;
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 16 * 1024};
	struct fc_child_cfg cfg = {.regions = 2, .wp = true};
	const uint64_t size = 4 * MiB, pages = size / 4096;
	fixture_start(&f, size, 4096, &opts, cfg, true, false);
	atomic_store(&f.src.slice, TEST_SLICE_BAD);
	assert_int_equal(cmd(&f, FC_READ_CHECK, 0, size, 0), 0);
	assert_int_equal(cmd(&f, FC_WRITE, 9 * 4096, 4096, 0x44), 0);
	assert_int_equal(cmd(&f, FC_READ_CHECK, 9 * 4096, 4096, 0x44 + 2), 0);
	fixture_end(&f); /* asserts the session ended without error */
	assert_int_equal(M(&f, pages_source), pages);
	assert_int_equal(M(&f, pages_sliced), 0);
	assert_int_equal(M(&f, slice_fallbacks), M(&f, faults_read));
	assert_true(M(&f, slice_fallbacks) > 0);
	assert_true(M(&f, source_reads) > 0);
	assert_int_equal(atomic_load(&f.src.holds), 0);
	fixture_free(&f);
}

/* The layered file's resolver: the one build is the diff file in ctx. */
static int resolve_one(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
		       struct ms_source **out)
{
	(void)build_id;
	(void)header;
	*out = ms_source_ref(ctx);
	return 0;
}

/*
 * The production source over a local diff file that is cut short under it: the pages the
 * file still holds come straight from its mapping; a fault past the cut makes the kernel's
 * copy from the mapping fail (no SIGBUS in the server), the job is read instead, and that
 * read's fault-safe copy fails the session with a read error.
 */
static void test_slice_truncated_file(void **state)
{
	(void)state;
	const uint64_t size = 4 * MiB, half = size / 2;
	struct test_source pattern;
	test_source_init(&pattern, size, 4096);
	char *dir, *sock = test_socket_path(&dir), path[4096];
	snprintf(path, sizeof(path), "%s/diff", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, pattern.data, size, 0), (ssize_t)size);
	int err = 0;
	struct ms_source *diff = ms_source_file_open(path, false, &err);
	assert_non_null(diff);
	assert_int_equal(ftruncate(fd, (off_t)half), 0); /* the mapping outlives the cut */
	close(fd);
	ms_uuid build;
	ms_uuid_generate(&build);
	struct ms_header *header = ms_header_new_base(&build, 1, 4096, size, true);
	assert_non_null(header);
	struct ms_layered *file = ms_layered_new(header, resolve_one, diff);
	assert_non_null(file);
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 64 * 1024};
	struct fc_child_cfg cfg = {.sock_path = sock,
				   .size = size,
				   .page_size = 4096,
				   .regions = 1,
				   .wp = true,
				   .source = pattern.data};
	struct fc_child child;
	assert_int_equal(fc_child_spawn(&cfg, &child), 0);
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts, &(int){0});
	assert_non_null(srv);
	assert_int_equal(fc_child_ready(&child), 0);
	struct ms_uffd_session *session;
	assert_int_equal(ms_pageserver_next_session(srv, TIMEOUT_NS, &session), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 0, half, 0, 20000), 0);
	/* past the cut: the child's thread blocks on a page the server cannot give */
	assert_int_equal(fc_child_cmd(&child, FC_ASYNC_READ, half + 8 * 4096, 0, 0, 20000), 0);
	struct pollfd pfd = {.fd = ms_uffd_session_event_fd(session), .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	assert_int_equal(ms_uffd_session_state(session), MS_UFFD_SESSION_FAILED);
	assert_int_equal(ms_uffd_session_error(session, NULL), MS_EFAULT_IO);
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(session);
	assert_int_equal(atomic_load(&m->pages_sliced), half / 4096);
	assert_int_equal(atomic_load(&m->pages_source), half / 4096);
	assert_int_equal(atomic_load(&m->slice_fallbacks), 1);
	assert_int_equal(atomic_load(&m->source_errors), 1);
	fc_child_kill(&child);
	ms_uffd_session_unref(session);
	ms_pageserver_free(srv);
	ms_layered_free(file);
	ms_source_unref(diff);
	test_source_fini(&pattern);
	ms_test_rmtree(dir);
	free(dir);
	free(sock);
}

/* A server that cannot start says why through its err out-parameter. */
static void test_new_reports_err(void **state)
{
	(void)state;
	struct test_source src;
	test_source_init(&src, 2 * MiB, 4096);
	char *dir, *path = test_socket_path(&dir);
	int err = 0;
	struct ms_pageserver_options bad = {.batch_bytes = 3 * 4096};
	assert_null(ms_pageserver_new(path, &test_source_ops, &src, &bad, &err));
	assert_int_equal(err, -EINVAL);
	err = 0;
	assert_null(ms_pageserver_new(NULL, &test_source_ops, &src, NULL, &err));
	assert_int_equal(err, -EINVAL);
	char missing[4096];
	snprintf(missing, sizeof(missing), "%s/no-such-dir/uffd.sock", dir);
	err = 0;
	assert_null(ms_pageserver_new(missing, &test_source_ops, &src, NULL, &err));
	assert_int_equal(err, -ENOENT);
	struct ms_pageserver *srv = ms_pageserver_new(path, &test_source_ops, &src, NULL, &err);
	assert_non_null(srv);
	assert_int_equal(err, 0);
	ms_pageserver_free(srv);
	test_source_fini(&src);
	ms_test_rmtree(dir);
	free(dir);
	free(path);
}

/* Several sessions on one server, one after another and at once. */
static void test_two_sessions(void **state)
{
	(void)state;
	struct test_source src;
	test_source_init(&src, 2 * MiB, 4096);
	char *dir, *path = test_socket_path(&dir);
	struct ms_pageserver_options opts = {.workers = 1};
	struct ms_pageserver *srv =
	    ms_pageserver_new(path, &test_source_ops, &src, &opts, &(int){0});
	assert_non_null(srv);
	struct fc_child children[2];
	struct ms_uffd_session *sessions[2];
	for (int i = 0; i < 2; i++) {
		struct fc_child_cfg cfg = {.sock_path = path,
					   .size = 2 * MiB,
					   .page_size = 4096,
					   .regions = 1,
					   .wp = i == 1,
					   .source = src.data};
		assert_int_equal(fc_child_start(&cfg, &children[i]), 0);
		assert_int_equal(ms_pageserver_next_session(srv, TIMEOUT_NS, &sessions[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(fc_child_cmd(&children[i], FC_READ_CHECK, 0, 2 * MiB, 0, 20000),
				 0);
	assert_int_equal(ms_pageserver_sessions_accepted(srv), 2);
	fc_child_exit(&children[0]);
	assert_int_equal(ms_uffd_session_wait(sessions[0], TIMEOUT_NS), 0);
	assert_int_equal(ms_uffd_session_state(sessions[1]), MS_UFFD_SESSION_SERVING);
	/* Stopping the server closes the live session too. */
	ms_pageserver_stop(srv);
	assert_int_equal(ms_uffd_session_state(sessions[1]), MS_UFFD_SESSION_CLOSED);
	uint64_t off = 0;
	assert_int_equal(ms_uffd_session_prefault(sessions[1], &off, 1), MS_ECLOSED);
	struct ms_uffd_session *none;
	assert_int_equal(ms_pageserver_next_session(srv, 1000000, &none), MS_ECLOSED);
	fc_child_kill(&children[1]);
	for (int i = 0; i < 2; i++)
		ms_uffd_session_unref(sessions[i]);
	ms_pageserver_free(srv);
	test_source_fini(&src);
	ms_test_rmtree(dir);
	free(dir);
	free(path);
}

/*
 * The busy-poll after a fault (spin_us) must not hold a CPU the faulting process needs.
 * Every thread here is SCHED_FIFO at one priority on one CPU, where nothing preempts a
 * running thread for another of its priority: the child can only run when the event
 * thread blocks or yields. The spin window (10 s) outlasts the command's timeout (5 s),
 * so the child's 64 faults complete only if the spinning thread yields between polls;
 * before it did, the child stalled after its first fault until the window ran out.
 */
static void test_spin_yields_cpu(void **state)
{
	(void)state;
	struct sched_param rt = {.sched_priority = 1}, other = {.sched_priority = 0};
	cpu_set_t one, all;
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
	if (sched_setscheduler(0, SCHED_FIFO, &rt)) {
		printf("SKIP: SCHED_FIFO unavailable: %s\n", strerror(errno));
		skip();
	}
	/* the child (forked next) and the server's threads inherit both */
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	struct fixture f;
	struct ms_pageserver_options opts = {.workers = 1, .spin_us = 10 * 1000 * 1000};
	struct fc_child_cfg cfg = {.regions = 1, .wp = true};
	int err = fixture_try(&f, 1 * MiB, 4096, &opts, cfg, true, false);
	int64_t bad = err ? 0 : fc_child_cmd(&f.child, FC_READ_CHECK, 0, 64 * 4096, 0, 5000);
	/* back to normal before asserting: a failed assertion leaves the test */
	sched_setscheduler(0, SCHED_OTHER, &other);
	sched_setaffinity(0, sizeof(all), &all);
	if (err)
		fail_msg("set-up: the child could not set up its guest memory: %s", strerror(-err));
	if (bad != 0) {
		/* the child holds its own uffd: kill it, or it waits on its fault forever */
		fc_child_kill(&f.child);
		ms_uffd_session_unref(f.session);
		ms_pageserver_free(f.srv);
		test_source_fini(&f.src);
		ms_test_rmtree(f.dir);
		free(f.dir);
		free(f.path);
		fail_msg("the child stalled behind the spinning event thread (%lld)",
			 (long long)bad);
	}
	assert_int_equal(M(&f, faults_read), 64);
	fixture_stop(&f);
}

int main(void)
{
	if (!test_uffd_available())
		return MS_TEST_SKIP;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_anon_wp_exact),
	    cmocka_unit_test(test_anon_write_faults),
	    cmocka_unit_test(test_anon_nowp_batched),
	    cmocka_unit_test(test_shmem_memfd),
	    cmocka_unit_test(test_hugetlb),
	    cmocka_unit_test(test_prefault),
	    cmocka_unit_test(test_two_sessions),
	    cmocka_unit_test(test_new_reports_err),
	    cmocka_unit_test(test_spin_yields_cpu),
	    cmocka_unit_test(test_slice_installs_without_copy),
	    cmocka_unit_test(test_slice_unreadable_reads),
	    cmocka_unit_test(test_slice_truncated_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
