/*
 * test_uffd_race.c - races and failures through a real userfaultfd:
 * REMOVE against an in-flight fetch (the page reads as zero, never stale),
 * madvise progressing while every worker is blocked on a slow source, source
 * retries, and a source failing forever (the session fails loudly, nothing hangs).
 */
#include "ms_test.h"
#include "uffd_test_util.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024ULL * 1024)
#define SEC (1000000000LL)

struct race {
	struct test_source src;
	char *dir, *path;
	struct ms_pageserver *srv;
	struct fc_child child;
	struct ms_uffd_session *session;
	atomic_int events;
	atomic_int last_state;
};

static void on_event(void *arg, struct ms_uffd_session *s, enum ms_uffd_session_state state,
		     int err)
{
	struct race *r = arg;
	atomic_store(&r->last_state, (int)state);
	atomic_fetch_add(&r->events, 1);
}

static void race_start(struct race *r, unsigned workers, int64_t delay_ns, int64_t delay_off)
{
	memset(r, 0, sizeof(*r));
	test_source_init(&r->src, 4 * MiB, 4096);
	r->src.delay_ns = delay_ns;
	r->src.delay_off = delay_off;
	r->path = test_socket_path(&r->dir);
	struct ms_pageserver_options opts = {
	    .workers = workers, .on_session_event = on_event, .event_arg = r};
	struct fc_child_cfg cfg = {.sock_path = r->path,
				   .size = 4 * MiB,
				   .page_size = 4096,
				   .regions = 1,
				   .wp = true,
				   .source = r->src.data};
	assert_int_equal(fc_child_spawn(&cfg, &r->child), 0);
	r->srv = ms_pageserver_new(r->path, &test_source_ops, &r->src, &opts, &(int){0});
	assert_non_null(r->srv);
	assert_int_equal(fc_child_ready(&r->child), 0);
	assert_int_equal(ms_pageserver_next_session(r->srv, 10 * SEC, &r->session), 0);
}

static void race_finish(struct race *r)
{
	if (r->child.pid > 0)
		fc_child_exit(&r->child);
	assert_int_equal(ms_uffd_session_wait(r->session, 10 * SEC), 0);
	ms_uffd_session_unref(r->session);
	ms_pageserver_free(r->srv);
	test_source_fini(&r->src);
	ms_test_rmtree(r->dir);
	free(r->dir);
	free(r->path);
}

static int64_t cmd(struct race *r, int op, uint64_t off, uint64_t len, uint64_t arg)
{
	return fc_child_cmd(&r->child, op, off, len, arg, 20000);
}

static void wait_in_read(struct race *r, int n)
{
	int64_t deadline = ms_clock_now_ns() + 10 * SEC;
	while (atomic_load(&r->src.in_read) < n && ms_clock_now_ns() < deadline)
		ms_clock_sleep_ns(1000000);
	assert_true(atomic_load(&r->src.in_read) >= n);
}

/* A fault's fetch is in flight when the guest madvises the page away: the madvise returns
 * while the worker is still blocked, and afterwards the page reads as zero, never the
 * (stale) source bytes the worker brings back. */
static void test_remove_vs_inflight_fault(void **state)
{
	(void)state;
	struct race r;
	const uint64_t page = 10 * 4096; /* a data page (not one of the zero pages) */
	race_start(&r, 2, 600 * 1000000LL, (int64_t)page);
	assert_int_equal(cmd(&r, FC_ASYNC_READ, page, 0, 0), 0);
	wait_in_read(&r, 1);
	int64_t took = cmd(&r, FC_MADVISE, page, 4096, 0);
	assert_true(took >= 0);
	assert_true(took < 2 * SEC);
	assert_int_equal(atomic_load(&r.src.in_read), 1); /* the worker is still blocked */
	/* The faulting thread gets zeros, and so does every later read. */
	assert_int_equal(cmd(&r, FC_JOIN, 0, 0, 0), 1);
	assert_int_equal(cmd(&r, FC_READ_CHECK, page, 4096, 1), 0);
	assert_int_equal(cmd(&r, FC_READ_CHECK, page + 4096, 4096, 0), 0); /* neighbour intact */
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(r.session);
	usleep(50000); /* counters trail the install that woke the child */
	assert_int_equal(atomic_load(&m->events_remove), 1);
	struct ms_pageset *dirty, *empty;
	assert_int_equal(ms_uffd_session_export(r.session, &dirty, &empty), 0);
	assert_true(ms_pageset_contains(empty, (uint32_t)(page / 4096)));
	assert_true(ms_pageset_is_empty(dirty));
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	/* A write after the remove is a fresh zero page made dirty. */
	assert_int_equal(cmd(&r, FC_WRITE, page, 4096, 0x5a), 0);
	assert_int_equal(cmd(&r, FC_READ_CHECK, page, 4096, 0x5a + 2), 0);
	assert_int_equal(ms_uffd_session_export(r.session, &dirty, &empty), 0);
	assert_true(ms_pageset_contains(dirty, (uint32_t)(page / 4096)));
	assert_false(ms_pageset_contains(empty, (uint32_t)(page / 4096)));
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	race_finish(&r);
}

/* Every worker is blocked on a slow source; a madvise of other, installed pages still
 * returns at once, those pages read as zero, and the slow faults complete correctly. */
static void test_madvise_while_workers_blocked(void **state)
{
	(void)state;
	struct race r;
	race_start(&r, 1, 800 * 1000000LL, -1);
	/* Install pages 100..103 first (slow, but nothing else is running). */
	assert_int_equal(cmd(&r, FC_READ_CHECK, 100 * 4096, 4 * 4096, 0), 0);
	assert_int_equal(cmd(&r, FC_ASYNC_READ, 200 * 4096, 0, 0), 0);
	wait_in_read(&r, 1); /* the only worker is blocked */
	int64_t took = cmd(&r, FC_MADVISE, 100 * 4096, 4 * 4096, 0);
	assert_true(took >= 0);
	assert_true(took < SEC / 2);
	assert_int_equal(atomic_load(&r.src.in_read), 1);
	assert_int_equal(cmd(&r, FC_JOIN, 0, 0, 0), 0); /* the slow fault got its bytes */
	assert_int_equal(cmd(&r, FC_READ_CHECK, 100 * 4096, 4 * 4096, 1), 0);
	race_finish(&r);
}

/* The source fails twice, then succeeds: the fault is retried and served. */
static void test_retry_then_success(void **state)
{
	(void)state;
	struct race r;
	race_start(&r, 2, 0, -1);
	atomic_store(&r.src.fail_next, 2);
	int64_t t0 = ms_clock_now_ns();
	assert_int_equal(cmd(&r, FC_READ_CHECK, 0, 4096, 0), 0);
	int64_t took = ms_clock_now_ns() - t0;
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(r.session);
	assert_int_equal(atomic_load(&m->source_retries), 2);
	assert_int_equal(atomic_load(&m->source_errors), 0);
	/* Backoff 50 ms then 100 ms, each with jitter in [d/2, d]. */
	assert_true(took >= 75 * 1000000LL);
	assert_int_equal(ms_uffd_session_state(r.session), MS_UFFD_SESSION_SERVING);
	assert_int_equal(cmd(&r, FC_READ_CHECK, 4096, 64 * 4096, 0), 0);
	race_finish(&r);
	assert_int_equal(atomic_load(&r.last_state), MS_UFFD_SESSION_CLOSED);
}

/* The source fails forever: the session fails loudly (state, error, event fd, callback)
 * within the retry budget, and the test tears the stuck child down. */
static void test_fail_forever(void **state)
{
	(void)state;
	struct race r;
	race_start(&r, 2, 0, -1);
	atomic_store(&r.src.fail_always, true);
	assert_int_equal(cmd(&r, FC_ASYNC_READ, 3 * 4096, 0, 0), 0);
	struct pollfd pfd = {.fd = ms_uffd_session_event_fd(r.session), .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	assert_int_equal(ms_uffd_session_state(r.session), MS_UFFD_SESSION_FAILED);
	assert_int_equal(ms_uffd_session_error(r.session, NULL), -EIO);
	assert_int_equal(atomic_load(&r.last_state), MS_UFFD_SESSION_FAILED);
	assert_int_equal(atomic_load(&r.events), 1);
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(r.session);
	assert_int_equal(atomic_load(&m->source_retries), 3); /* 4 attempts */
	assert_int_equal(atomic_load(&m->source_errors), 1);
	uint64_t off = 0;
	assert_int_equal(ms_uffd_session_prefault(r.session, &off, 1), -EIO);
	/* A madvise still progresses on a failed session. */
	int64_t took = cmd(&r, FC_MADVISE, 100 * 4096, 4096, 0);
	assert_true(took >= 0 && took < SEC);
	/* The VMM side reacts to the failure: kill the sandbox. */
	fc_child_kill(&r.child);
	race_finish(&r);
}

/* Many child threads are not available here; instead hammer one page range with
 * alternating REMOVE and reads for a while: every read sees source bytes or zeros
 * (after a remove), never anything else, and nothing hangs. */
static void test_remove_read_churn(void **state)
{
	(void)state;
	struct race r;
	race_start(&r, 3, 0, -1);
	for (int round = 0; round < 200; round++) {
		uint64_t off = (uint64_t)(round % 16) * 4096 * 3;
		assert_int_equal(cmd(&r, FC_ASYNC_READ, off, 0, 0), 0);
		assert_true(cmd(&r, FC_MADVISE, off, 3 * 4096, 0) >= 0);
		int64_t v = cmd(&r, FC_JOIN, 0, 0, 0);
		bool source_zero = test_page_is_zero(r.src.data + off, 4096);
		assert_true(v == 0 || v == 1 || (source_zero && v == 0));
	}
	race_finish(&r);
}

int main(void)
{
	if (!test_uffd_available())
		return MS_TEST_SKIP;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_remove_vs_inflight_fault),
	    cmocka_unit_test(test_madvise_while_workers_blocked),
	    cmocka_unit_test(test_retry_then_success),
	    cmocka_unit_test(test_fail_forever),
	    cmocka_unit_test(test_remove_read_churn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
