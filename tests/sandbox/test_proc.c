/*
 * test_proc.c - the proc backend's core: guests boot and report, memory is
 * exact, written-page sets are exact (async WP + PAGEMAP_SCAN), a guest
 * syscall kills the sandbox and is reported.
 */
#include "ms_test.h"
#include "sandbox/proc.h"
#include "util/err.h"

#include <errno.h>
#include <string.h>

#define MEM (1u << 20) /* 256 pages */
#define PAGES (MEM / 4096)
#define SEC 1000000000LL

static uint64_t *mailbox(struct ms_proc *p, unsigned off)
{
	return (uint64_t *)(ms_proc_ram(p) + off);
}

static struct ms_proc *start(enum ms_guest_kind kind)
{
	struct ms_proc_config cfg = {.guest = kind, .mem_size = MEM};
	struct ms_proc *p = NULL;
	int err = ms_proc_start(&cfg, &p);
	if (err == -ENOTSUP)
		MS_TEST_SKIP_EXIT("the kernel lacks userfaultfd WP_ASYNC or PAGEMAP_SCAN");
	assert_int_equal(err, 0);
	return p;
}

static void command(struct ms_proc *p, uint64_t cmd, uint64_t a0, uint64_t a1)
{
	*mailbox(p, MS_GUEST_CMD) = cmd;
	*mailbox(p, MS_GUEST_ARG0) = a0;
	*mailbox(p, MS_GUEST_ARG1) = a1;
	assert_int_equal(ms_proc_continue(p), 0);
	assert_int_equal(ms_proc_wait_report(p, 10 * SEC), 0);
}

static void test_pattern_fill_verify_and_written_pages(void **state)
{
	(void)state;
	struct ms_proc *p = start(MS_GUEST_PATTERN);
	struct ms_pageset *written;
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0); /* start an epoch */
	ms_pageset_free(written);
	command(p, MS_PATTERN_FILL, 1234, 7);
	/* the host sees exactly what the guest computed */
	uint8_t *ram = ms_proc_ram(p);
	for (uint64_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES; page++)
		for (uint64_t w = 0; w < 512; w += 97)
			assert_true(((uint64_t *)(ram + page * 4096))[w] ==
				    ms_guest_pattern_word(1234, 7, page, w));
	/* written: every data page, the mailbox page and the stack page; nothing else */
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	for (uint32_t page = 0; page < PAGES; page++) {
		bool data = page >= MS_GUEST_DATA_FIRST_PAGE &&
			    page < PAGES - MS_GUEST_STACK_PAGES;
		bool stack = page == PAGES - 1;
		if (data || page == 0 || stack)
			assert_true(ms_pageset_contains(written, page));
		else
			assert_false(ms_pageset_contains(written, page));
	}
	ms_pageset_free(written);
	/* a read-only epoch: VERIFY reads every data page, writes only mailbox and stack */
	command(p, MS_PATTERN_VERIFY, 1234, 7);
	assert_int_equal(*mailbox(p, MS_GUEST_RESULT0), 0);
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_int_equal(ms_pageset_count(written), 2);
	assert_true(ms_pageset_contains(written, 0) && ms_pageset_contains(written, PAGES - 1));
	ms_pageset_free(written);
	/* a host write through its own mapping is seen by the guest, not tracked */
	ram[20 * 4096 + 8] ^= 1;
	command(p, MS_PATTERN_VERIFY, 1234, 7);
	assert_int_equal(*mailbox(p, MS_GUEST_RESULT0), 1);
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_false(ms_pageset_contains(written, 20));
	ms_pageset_free(written);
	/* ZERO some pages, then exactly those (and mailbox, stack) are written */
	command(p, MS_PATTERN_ZERO, 30, 5);
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_int_equal(ms_pageset_count(written), 7);
	for (uint32_t page = 38; page < 43; page++)
		assert_true(ms_pageset_contains(written, page));
	ms_pageset_free(written);
	ms_proc_destroy(p);
}

static void test_counter_continues(void **state)
{
	(void)state;
	struct ms_proc *p = start(MS_GUEST_COUNTER);
	*mailbox(p, MS_GUEST_ARG0) = 100000;
	uint64_t last = 0;
	for (int i = 0; i < 20; i++) {
		assert_int_equal(ms_proc_continue(p), 0);
		assert_int_equal(ms_proc_wait_report(p, 10 * SEC), 0);
		uint64_t now = *mailbox(p, MS_GUEST_RESULT0);
		assert_int_equal(*mailbox(p, MS_GUEST_RESULT1), 0); /* register and RAM agree */
		if (i > 0)
			assert_int_equal(now, last + 100000);
		last = now;
	}
	ms_proc_destroy(p);
}

static void test_syscall_kills(void **state)
{
	(void)state;
	struct ms_proc *p = start(MS_GUEST_PATTERN);
	/* the guest returns from its report into code the host turned into a nop sled
	 * that ends in `syscall` */
	uint8_t *code = ms_proc_ram(p) + MS_GUEST_CODE;
	memset(code, 0x90, 0x1000);
	code[0x1000 - 2] = 0x0f;
	code[0x1000 - 1] = 0x05;
	assert_int_equal(ms_proc_continue(p), 0);
	assert_int_equal(ms_proc_wait_report(p, 10 * SEC), -ECHILD);
	assert_non_null(strstr(ms_proc_death_cause(p), "SIGKILL"));
	print_message("death: %s\n", ms_proc_death_cause(p));
	ms_proc_destroy(p);
}

static void test_bad_config(void **state)
{
	(void)state;
	struct ms_proc *p;
	struct ms_proc_config cfg = {.guest = MS_GUEST_PATTERN, .mem_size = 4096};
	assert_int_equal(ms_proc_start(&cfg, &p), -EINVAL);
	cfg.mem_size = MEM + 100;
	assert_int_equal(ms_proc_start(&cfg, &p), -EINVAL);
	cfg.mem_size = MEM;
	cfg.guest = (enum ms_guest_kind)99;
	assert_int_equal(ms_proc_start(&cfg, &p), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pattern_fill_verify_and_written_pages),
		cmocka_unit_test(test_counter_continues),
		cmocka_unit_test(test_syscall_kills),
		cmocka_unit_test(test_bad_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
