/*
 * test_backend.c - one test body for every sandbox backend, through the
 * sandbox interface only: argv[1] names the backend (proc or kvm). kvm skips
 * with one line where /dev/kvm does not open.
 *
 * Each guest boots and reports; pause -> snapfile -> eager and lazy restore
 * (the real page server) -> the guest verifies every page; counter continues
 * without a gap over 20 pause/restore cycles; 10 mutator cycles stay exact
 * against the host's model; written-page sets are exact; a guest syscall is
 * reported with its cause; bad snapfiles are rejected; the backend choice.
 */
#include "ms_test.h"
#include "sandbox/memory.h"
#include "sandbox/sandbox.h"
#include "uffd/pageserver.h"
#include "util/err.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xxhash.h>

#define MEM   (1u << 20) /* 256 pages */
#define PAGES (MEM / 4096)
#define SEC   1000000000LL

static const struct ms_sandbox_ops *ops;

static uint64_t *box(struct ms_sandbox *sb, unsigned off)
{
	return (uint64_t *)(ms_sandbox_ram(sb) + off);
}

static struct ms_sandbox *start(enum ms_guest_kind kind)
{
	return ms_test_sandbox_start(ops, kind, MEM);
}

static void run_report(struct ms_sandbox *sb)
{
	assert_int_equal(ms_sandbox_run(sb), 0);
	int err = ms_sandbox_wait_report(sb, 10 * SEC);
	if (err)
		fail_msg("%s: %s (%s)", ops->name, ms_strerror(err), ms_sandbox_death_cause(sb));
}

static void command(struct ms_sandbox *sb, uint64_t cmd, uint64_t a0, uint64_t a1)
{
	*box(sb, MS_GUEST_CMD) = cmd;
	*box(sb, MS_GUEST_ARG0) = a0;
	*box(sb, MS_GUEST_ARG1) = a1;
	run_report(sb);
}

static struct ms_pageset *written(struct ms_sandbox *sb)
{
	struct ms_pageset *set = NULL;
	assert_int_equal(ms_sandbox_written(sb, true, &set), 0);
	return set;
}

static void test_pattern_and_written_pages(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_PATTERN);
	ms_pageset_free(written(sb)); /* the image: start a fresh epoch */
	command(sb, MS_PATTERN_FILL, 1234, 7);
	const uint8_t *ram = ms_sandbox_ram(sb);
	for (uint64_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES; page++)
		for (uint64_t w = 0; w < 512; w += 97)
			assert_true(((const uint64_t *)(ram + page * 4096))[w] ==
				    ms_guest_pattern_word(1234, 7, page, w));
	/* exactly the data pages: a report writes no guest RAM */
	struct ms_pageset *set = written(sb);
	for (uint32_t page = 0; page < PAGES; page++) {
		bool data = page >= MS_GUEST_DATA_FIRST_PAGE && page < PAGES - MS_GUEST_STACK_PAGES;
		if (data != ms_pageset_contains(set, page))
			fail_msg("%s: page %u %s the written set", ops->name, page,
				 data ? "missing from" : "wrongly in");
	}
	ms_pageset_free(set);
	/* a read-only epoch writes nothing */
	command(sb, MS_PATTERN_VERIFY, 1234, 7);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 0);
	set = written(sb);
	assert_int_equal(ms_pageset_count(set), 0);
	ms_pageset_free(set);
	/* a host write through its own view: seen by the guest, not tracked */
	ms_sandbox_ram(sb)[20 * 4096 + 8] ^= 1;
	command(sb, MS_PATTERN_VERIFY, 1234, 7);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 1);
	set = written(sb);
	assert_int_equal(ms_pageset_count(set), 0);
	ms_pageset_free(set);
	command(sb, MS_PATTERN_ZERO, 30, 5);
	set = written(sb);
	assert_int_equal(ms_pageset_count(set), 5);
	for (uint32_t page = 38; page < 43; page++)
		assert_true(ms_pageset_contains(set, page));
	ms_pageset_free(set);
	ms_sandbox_destroy(sb);
}

static struct ms_sandbox *restore_eager(struct ms_sandbox_paused *paused)
{
	return ms_test_sandbox_restore_eager(ops, paused, MEM);
}

/* counter: reports continue without a gap, and across 20 pause -> eager restore cycles */
static void test_counter_across_restores(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_COUNTER);
	*box(sb, MS_GUEST_ARG0) = 50000;
	run_report(sb);
	uint64_t last = *box(sb, MS_GUEST_RESULT0);
	for (int i = 0; i < 5; i++) { /* in place */
		run_report(sb);
		assert_int_equal(*box(sb, MS_GUEST_RESULT0), last + 50000);
		assert_int_equal(*box(sb, MS_GUEST_RESULT1), 0);
		last += 50000;
	}
	for (int cycle = 0; cycle < 20; cycle++) {
		struct ms_sandbox_paused paused;
		assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
		ms_sandbox_destroy(sb);
		sb = restore_eager(&paused);
		ms_sandbox_paused_fini(&paused);
		run_report(sb);
		uint64_t now = *box(sb, MS_GUEST_RESULT0);
		assert_int_equal(*box(sb, MS_GUEST_RESULT1), 0); /* register and RAM agree */
		if (now != last + 50000)
			fail_msg("%s: cycle %d: count %llu after %llu", ops->name, cycle,
				 (unsigned long long)now, (unsigned long long)last);
		last = now;
	}
	/* a pause while the guest runs (not at a report) continues exactly too */
	assert_int_equal(ms_sandbox_run(sb), 0);
	struct ms_sandbox_paused paused;
	assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
	ms_sandbox_destroy(sb);
	sb = restore_eager(&paused);
	ms_sandbox_paused_fini(&paused);
	run_report(sb);
	assert_int_equal(*box(sb, MS_GUEST_RESULT1), 0);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0) % 50000, 0);
	assert_true(*box(sb, MS_GUEST_RESULT0) > last);
	ms_sandbox_destroy(sb);
}

static void test_syscall_is_reported(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_PATTERN);
	/* the guest returns from its report into a nop sled ending in getpid() */
	static const uint8_t getpid_call[] = {0xb8, 39, 0, 0, 0, 0x0f, 0x05};
	uint8_t *code = ms_sandbox_ram(sb) + MS_GUEST_CODE;
	memset(code, 0x90, 0x1000);
	memcpy(code + 0x1000 - sizeof(getpid_call), getpid_call, sizeof(getpid_call));
	assert_int_equal(ms_sandbox_run(sb), 0);
	assert_int_equal(ms_sandbox_wait_report(sb, 10 * SEC), -ECHILD);
	const char *cause = ms_sandbox_death_cause(sb);
	print_message("%s: death: %s\n", ops->name, cause);
	assert_true(strstr(cause, "SIGKILL") || strstr(cause, "syscall") || strstr(cause, "#UD"));
	assert_int_equal(ms_sandbox_run(sb), -ECHILD);
	/* the memory is left intact for a post-mortem pause */
	assert_int_equal(
	    memcmp(code + 0x1000 - sizeof(getpid_call), getpid_call, sizeof(getpid_call)), 0);
	ms_sandbox_destroy(sb);
}

static sigjmp_buf probe_jump;

static void probe_segv(int sig)
{
	(void)sig;
	siglongjmp(probe_jump, 1);
}

/* Whether reading addr faults (SIGSEGV). */
static bool read_faults(const volatile uint8_t *addr)
{
	struct sigaction sa = {.sa_handler = probe_segv}, old;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	bool faulted = true;
	if (sigsetjmp(probe_jump, 1) == 0) {
		(void)*addr;
		faulted = false;
	}
	sigaction(SIGSEGV, &old, NULL);
	return faulted;
}

/* A page source over a paused memfd, for the real page server. */
struct mem_source {
	const uint8_t *mem;
};

static int mem_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	memcpy(dst, ((struct mem_source *)ctx)->mem + off, len);
	return 0;
}

static uint64_t mem_size(void *ctx)
{
	(void)ctx;
	return MEM;
}

static const struct ms_page_source_ops mem_ops = {.read = mem_read, .size = mem_size};

/* pause -> lazy restore through the page server (Firecracker's handshake) -> verify */
static void test_pattern_lazy_restore(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_PATTERN);
	command(sb, MS_PATTERN_FILL, 99, 3);
	*box(sb, MS_GUEST_CMD) = 0; /* the next step after the resume: report */
	struct ms_sandbox_paused paused;
	assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
	ms_sandbox_destroy(sb);
	struct mem_source src = {.mem = mmap(NULL, MEM, PROT_READ, MAP_SHARED, paused.memfd, 0)};
	assert_true(src.mem != MAP_FAILED);
	char *dir = ms_test_tmpdir(), sock[512];
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	/* one page per fault: the pages the guest never touches stay holes in its memory */
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 4096};
	struct ms_pageserver *srv = ms_pageserver_new(sock, &mem_ops, &src, &opts, &(int){0});
	assert_non_null(srv);
	struct ms_sandbox_spec spec = {.mem_size = MEM,
				       .memory = MS_SANDBOX_LAZY,
				       .lazy_socket = sock,
				       .snapfile = paused.snapfile,
				       .snapfile_len = paused.snapfile_len};
	int err = ms_sandbox_create(ops, &spec, &sb);
	if (err)
		fail_msg("%s: lazy restore: %s", ops->name, ms_strerror(err));
	/*
	 * Before the guest's first report the host view is closed: a host read of a page
	 * the page server has not installed would put a zero page into the guest's memory.
	 */
	assert_true(read_faults(ms_sandbox_ram(sb) + 40 * 4096));
	run_report(sb); /* faults the mailbox in before the host touches it */
	assert_int_equal(*box(sb, MS_GUEST_ARG0), 99);
	/*
	 * Pages never touched since the restore are not written: a hole counted as
	 * written would be read back as zeros by the next pause's compare, and the
	 * new layer would map the parent's data there to nil.
	 */
	struct ms_pageset *set = written(sb);
	if (ms_pageset_count(set))
		fail_msg("%s: %llu pages written by a guest that only reported", ops->name,
			 (unsigned long long)ms_pageset_count(set));
	ms_pageset_free(set);
	command(sb, MS_PATTERN_VERIFY, 99, 3);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 0);
	/* after a lazy resume and a read-only epoch the written set is empty ... */
	set = written(sb);
	if (ms_pageset_count(set))
		fail_msg("%s: %llu pages written in a read-only epoch", ops->name,
			 (unsigned long long)ms_pageset_count(set));
	ms_pageset_free(set);
	/* ... and after a write epoch it is exactly the pages written */
	command(sb, MS_PATTERN_ZERO, 10, 3);
	set = written(sb);
	assert_int_equal(ms_pageset_count(set), 3);
	for (uint32_t page = 18; page < 21; page++)
		assert_true(ms_pageset_contains(set, page));
	ms_pageset_free(set);
	ms_sandbox_destroy(sb);
	ms_pageserver_free(srv);
	munmap((void *)src.mem, MEM);
	ms_sandbox_paused_fini(&paused);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_snapfile_rejections(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_PATTERN);
	struct ms_sandbox_paused paused;
	assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
	ms_sandbox_destroy(sb);
	struct ms_sandbox_spec spec = {.mem_size = MEM,
				       .memory = MS_SANDBOX_EAGER,
				       .eager_fd = paused.memfd,
				       .snapfile = paused.snapfile,
				       .snapfile_len = paused.snapfile_len};
	uint8_t *bad = malloc(paused.snapfile_len);
	memcpy(bad, paused.snapfile, paused.snapfile_len);
	bad[100] ^= 1;
	spec.snapfile = bad;
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), MS_ECHECKSUM);
	spec.snapfile = paused.snapfile;
	spec.snapfile_len = paused.snapfile_len - 16;
	assert_true(ms_sandbox_create(ops, &spec, &sb) < 0);
	spec.snapfile_len = 20;
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), MS_ECORRUPT);
	spec.snapfile_len = paused.snapfile_len;
	spec.mem_size = MEM * 2;
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), -EINVAL);
	/* the other backend's (well-formed) snapfile */
	memcpy(bad, paused.snapfile, paused.snapfile_len);
	uint32_t other = ops->id == MS_BACKEND_KVM ? MS_BACKEND_PROC : MS_BACKEND_KVM;
	memcpy(bad + 12, &other, 4);
	uint64_t sum = XXH64(bad, paused.snapfile_len - 8, 0);
	memcpy(bad + paused.snapfile_len - 8, &sum, 8);
	spec.snapfile = bad;
	spec.mem_size = MEM;
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), MS_EBACKEND);
	/* the intact one restores */
	spec.snapfile = paused.snapfile;
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), 0);
	ms_sandbox_destroy(sb);
	free(bad);
	ms_sandbox_paused_fini(&paused);
}

/* The host's model of mutator: the same xorshift, page = state % data pages. */
static void mutator_model(uint64_t *model, uint64_t seed, uint64_t writes)
{
	uint64_t data_pages = PAGES - MS_GUEST_DATA_FIRST_PAGE - MS_GUEST_STACK_PAGES;
	uint64_t x = seed;
	for (uint64_t i = 0; i < writes; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t page = MS_GUEST_DATA_FIRST_PAGE + x % data_pages;
		model[page] = page ^ seed;
	}
}

/* 10 mutator epochs, a pause and an eager restore between each: memory exact. */
static void test_mutator_cycles(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_MUTATOR);
	static uint64_t model[PAGES];
	memset(model, 0, sizeof(model));
	for (uint64_t cycle = 0; cycle < 10; cycle++) {
		uint64_t seed = 0x1000 + cycle * 7919, writes = 40 + cycle * 3;
		static uint64_t before[PAGES];
		memcpy(before, model, sizeof(model));
		command(sb, 1, seed, writes);
		mutator_model(model, seed, writes);
		*box(sb, MS_GUEST_CMD) = 0;
		struct ms_sandbox_paused paused;
		assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
		/* the mutated pages, plus the stack page and (first cycle) the image */
		for (uint32_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES;
		     page++)
			if (ms_pageset_contains(paused.written, page) && !model[page])
				fail_msg("%s: untouched page %u in the written set", ops->name,
					 page);
			else if (model[page] != before[page] &&
				 !ms_pageset_contains(paused.written, page))
				/* after an eager restore (cycles > 0) too: a lost write */
				fail_msg("%s: cycle %llu: page %u written but not in the set",
					 ops->name, (unsigned long long)cycle, page);
		ms_sandbox_destroy(sb);
		sb = restore_eager(&paused);
		ms_sandbox_paused_fini(&paused);
		run_report(sb);
		const uint8_t *ram = ms_sandbox_ram(sb);
		for (uint64_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES;
		     page++)
			for (uint64_t w = 0; w < 512; w += 127)
				if (((const uint64_t *)(ram + page * 4096))[w] != model[page])
					fail_msg("%s: cycle %llu: page %llu differs", ops->name,
						 (unsigned long long)cycle,
						 (unsigned long long)page);
	}
	ms_sandbox_destroy(sb);
}

/* workset: FILL writes exactly the pages of its walk (about 15 %), VERIFY finds them, a wrong
 * seed is caught, and the set survives a pause and an eager restore. */
static void test_workset(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_WORKSET);
	const uint64_t seed = 4242,
		       data_pages = PAGES - MS_GUEST_DATA_FIRST_PAGE - MS_GUEST_STACK_PAGES;
	static bool in_set[PAGES];
	memset(in_set, 0, sizeof(in_set));
	uint64_t walk = 0, distinct = 0;
	for (uint64_t i = 0; i < ms_guest_workset_steps(data_pages); i++) {
		uint64_t page = ms_guest_workset_page(seed, data_pages, &walk);
		distinct += !in_set[page];
		in_set[page] = true;
	}
	assert_true(distinct * 100 >= data_pages * 12 && distinct * 100 <= data_pages * 18);
	struct ms_pageset *before = written(sb);
	ms_pageset_free(before);
	command(sb, MS_PATTERN_FILL, seed, 3);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 0);
	struct ms_pageset *set = written(sb);
	for (uint32_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES; page++)
		if (ms_pageset_contains(set, page) != in_set[page])
			fail_msg("%s: page %u: written %d, in the walk %d", ops->name, page,
				 ms_pageset_contains(set, page), in_set[page]);
	ms_pageset_free(set);
	const uint8_t *ram = ms_sandbox_ram(sb);
	for (uint64_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES; page++)
		if (in_set[page])
			assert_int_equal(((const uint64_t *)(ram + page * 4096))[7],
					 ms_guest_pattern_word(seed, 3, page, 7));
	command(sb, MS_PATTERN_VERIFY, seed, 3);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 0);
	command(sb, MS_PATTERN_VERIFY, seed, 4);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), ms_guest_workset_steps(data_pages));
	*box(sb, MS_GUEST_CMD) = 0;
	struct ms_sandbox_paused paused;
	assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
	ms_sandbox_destroy(sb);
	sb = restore_eager(&paused);
	ms_sandbox_paused_fini(&paused);
	run_report(sb);
	command(sb, MS_PATTERN_VERIFY, seed, 3);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 0);
	ms_sandbox_destroy(sb);
}

/* workset FILL_ALL: every data page holds pattern's words, so VERIFY of the walk's set passes
 * and a pattern guest's check of any page outside the set would too. */
static void test_workset_fill_all(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_WORKSET);
	const uint64_t seed = 99, epoch = 5;
	ms_pageset_free(written(sb));
	command(sb, MS_WORKSET_FILL_ALL, seed, epoch);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 0);
	struct ms_pageset *set = written(sb);
	const uint8_t *ram = ms_sandbox_ram(sb);
	for (uint32_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES;
	     page++) {
		if (!ms_pageset_contains(set, page))
			fail_msg("%s: page %u not written by FILL_ALL", ops->name, page);
		for (uint64_t w = 0; w < 512; w += 73)
			if (((const uint64_t *)(ram + page * 4096))[w] !=
			    ms_guest_pattern_word(seed, epoch, page, w))
				fail_msg("%s: page %u word %llu differs", ops->name, page,
					 (unsigned long long)w);
	}
	ms_pageset_free(set);
	command(sb, MS_PATTERN_VERIFY, seed, epoch);
	assert_int_equal(*box(sb, MS_GUEST_RESULT0), 0);
	command(sb, MS_PATTERN_VERIFY, seed, epoch + 1);
	assert_true(*box(sb, MS_GUEST_RESULT0) > 0);
	ms_sandbox_destroy(sb);
}

/* auto is kvm where /dev/kvm opens, else proc; kvm without it and unknown names are refused */
static void test_backend_choice(void **state)
{
	(void)state;
	const struct ms_sandbox_ops *picked;
	char why[160];
	bool kvm = ms_sandbox_kvm_available();
	assert_int_equal(ms_sandbox_backend_pick("kvm", &picked, why, sizeof(why)),
			 kvm ? 0 : -ENODEV);
	if (!kvm) /* the refusal says why */
		assert_non_null(strstr(why, "/dev/kvm"));
	assert_int_equal(ms_sandbox_backend_pick("vmware", &picked, why, sizeof(why)), -EINVAL);
	assert_int_equal(ms_sandbox_backend_pick("auto", &picked, why, sizeof(why)), 0);
	assert_string_equal(picked->name, kvm ? "kvm" : "proc");
	print_message("auto: %s\n", why);
	assert_int_equal(ms_sandbox_backend_pick("proc", &picked, why, sizeof(why)), 0);
	assert_string_equal(picked->name, "proc");
	assert_int_equal(picked->id, MS_BACKEND_PROC);
}

/* the tracker's names, its probe, and the refusal when the probe reports nothing */
static void test_tracker_choice(void **state)
{
	(void)state;
	enum ms_tracker_mode mode;
	char why[320];
	assert_int_equal(ms_tracker_mode_parse("sync", &mode), 0);
	assert_int_equal(mode, MS_TRACKER_SYNC);
	assert_int_equal(ms_tracker_mode_parse("fast", &mode), -EINVAL);
	/* no feature at all: refused, in one line that names the missing feature */
	for (int want = MS_TRACKER_AUTO; want <= MS_TRACKER_SYNC; want++) {
		assert_int_equal(
		    ms_tracker_pick((enum ms_tracker_mode)want, true, &mode, why, sizeof(why)),
		    -ENOTSUP);
		assert_null(strchr(why, '\n'));
		assert_non_null(strstr(why, "no written-page tracker"));
		assert_non_null(strstr(why, "UFFD_FEATURE_PAGEFAULT_FLAG_WP"));
	}
	/* the real probe: auto takes async where the kernel has it */
	int err = ms_tracker_pick(MS_TRACKER_AUTO, false, &mode, why, sizeof(why));
	if (err) {
		print_message("SKIP: no tracker on this kernel: %s\n", why);
		skip();
	}
	print_message("auto: %s %s\n", ms_tracker_mode_name(mode), why);
	enum ms_tracker_mode forced;
	if (mode == MS_TRACKER_ASYNC) {
		assert_non_null(strstr(why, "UFFD_FEATURE_WP_ASYNC"));
		assert_int_equal(ms_tracker_pick(MS_TRACKER_SYNC, false, &forced, why, sizeof(why)),
				 0);
		assert_int_equal(forced, MS_TRACKER_SYNC);
		assert_non_null(strstr(why, "forced"));
	} else {
		assert_int_equal(
		    ms_tracker_pick(MS_TRACKER_ASYNC, false, &forced, why, sizeof(why)), -ENOTSUP);
	}
}

static void test_bad_specs(void **state)
{
	(void)state;
	struct ms_sandbox *sb;
	struct ms_sandbox_spec spec = {
	    .guest = MS_GUEST_PATTERN, .mem_size = 4096, .memory = MS_SANDBOX_FRESH};
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), -EINVAL);
	spec.mem_size = MEM + 100;
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), -EINVAL);
	spec.mem_size = MEM;
	spec.guest = (enum ms_guest_kind)99;
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), -EINVAL);
	spec.memory = MS_SANDBOX_LAZY; /* no socket */
	assert_int_equal(ms_sandbox_create(ops, &spec, &sb), -EINVAL);
}

/*
 * Under a seccomp filter that allows everything - as memsnapd runs under a
 * systemd unit with LockPersonality= or RestrictAddressFamilies=, or in a
 * container - sandboxes still start, run, pause and restore, and a guest's
 * system call still kills it (the kernel refuses strict mode on top of a filter).
 * The filter cannot be removed: this test runs last.
 */
static void test_under_seccomp_filter(void **state)
{
	struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = {.len = 1, .filter = &allow};
	assert_int_equal(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	assert_int_equal(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog), 0);
	test_counter_across_restores(state);
	test_syscall_is_reported(state);
}

int main(int argc, char **argv)
{
	ops = ms_test_backend(argc > 1 ? argv[1] : NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pattern_and_written_pages),
	    cmocka_unit_test(test_counter_across_restores),
	    cmocka_unit_test(test_syscall_is_reported),
	    cmocka_unit_test(test_pattern_lazy_restore),
	    cmocka_unit_test(test_snapfile_rejections),
	    cmocka_unit_test(test_mutator_cycles),
	    cmocka_unit_test(test_workset),
	    cmocka_unit_test(test_workset_fill_all),
	    cmocka_unit_test(test_bad_specs),
	    cmocka_unit_test(test_backend_choice),
	    cmocka_unit_test(test_tracker_choice),
	    cmocka_unit_test(test_under_seccomp_filter), /* last: its filter stays */
	};
	return cmocka_run_group_tests_name(ops->name, tests, NULL, NULL);
}
