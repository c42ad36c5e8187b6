/*
 * test_proc.c - the proc backend's core: guests boot and report, memory is
 * exact, written-page sets are exact (async WP + PAGEMAP_SCAN), a guest
 * syscall kills the sandbox and is reported.
 */
#include "ms_test.h"
#include "sandbox/proc.h"
#include "util/err.h"
#include "sandbox/snapfile.h"
#include "sandbox/sandbox.h"
#include "uffd/pageserver.h"
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <errno.h>
#include <string.h>

#define MEM   (1u << 20) /* 256 pages */
#define PAGES (MEM / 4096)
#define SEC   1000000000LL

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
	/* written: exactly the data pages (a report writes no RAM) */
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	for (uint32_t page = 0; page < PAGES; page++) {
		bool data = page >= MS_GUEST_DATA_FIRST_PAGE && page < PAGES - MS_GUEST_STACK_PAGES;
		if (data)
			assert_true(ms_pageset_contains(written, page));
		else
			assert_false(ms_pageset_contains(written, page));
	}
	ms_pageset_free(written);
	/* a read-only epoch: VERIFY reads every data page and writes nothing */
	command(p, MS_PATTERN_VERIFY, 1234, 7);
	assert_int_equal(*mailbox(p, MS_GUEST_RESULT0), 0);
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_int_equal(ms_pageset_count(written), 0);
	ms_pageset_free(written);
	/* a host write through its own mapping is seen by the guest, not tracked */
	ram[20 * 4096 + 8] ^= 1;
	command(p, MS_PATTERN_VERIFY, 1234, 7);
	assert_int_equal(*mailbox(p, MS_GUEST_RESULT0), 1);
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_false(ms_pageset_contains(written, 20));
	ms_pageset_free(written);
	/* ZERO some pages, then exactly those are written */
	command(p, MS_PATTERN_ZERO, 30, 5);
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_int_equal(ms_pageset_count(written), 5);
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
	 * that ends in getpid(): a syscall strict seccomp does not allow */
	static const uint8_t getpid_call[] = {0xb8, 39, 0, 0, 0, 0x0f, 0x05}; /* mov $39,%eax */
	uint8_t *code = ms_proc_ram(p) + MS_GUEST_CODE;
	memset(code, 0x90, 0x1000);
	memcpy(code + 0x1000 - sizeof(getpid_call), getpid_call, sizeof(getpid_call));
	assert_int_equal(ms_proc_continue(p), 0);
	assert_int_equal(ms_proc_wait_report(p, 10 * SEC), -ECHILD);
	print_message("death: %s\n", ms_proc_death_cause(p));
	assert_non_null(strstr(ms_proc_death_cause(p), "SIGKILL"));
	ms_proc_destroy(p);
}

static struct ms_proc *restore_eager(struct ms_proc_paused *paused)
{
	struct ms_proc_restore r = {.mem_size = MEM,
				    .snapfile = paused->snapfile,
				    .snapfile_len = paused->snapfile_len,
				    .eager_fd = paused->memfd};
	struct ms_proc *p = NULL;
	assert_int_equal(ms_proc_restore(&r, &p), 0);
	return p;
}

static void paused_fini(struct ms_proc_paused *paused)
{
	close(paused->memfd);
	ms_pageset_free(paused->written);
	free(paused->snapfile);
}

/* counter continues without a gap over 20 pause -> eager restore cycles (new processes) */
static void test_counter_across_restores(void **state)
{
	(void)state;
	struct ms_proc *p = start(MS_GUEST_COUNTER);
	*mailbox(p, MS_GUEST_ARG0) = 50000;
	assert_int_equal(ms_proc_continue(p), 0);
	assert_int_equal(ms_proc_wait_report(p, 10 * SEC), 0);
	uint64_t last = *mailbox(p, MS_GUEST_RESULT0);
	for (int cycle = 0; cycle < 20; cycle++) {
		struct ms_proc_paused paused;
		assert_int_equal(ms_proc_pause(p, &paused), 0);
		ms_proc_destroy(p);
		p = restore_eager(&paused);
		paused_fini(&paused);
		assert_int_equal(ms_proc_continue(p), 0);
		assert_int_equal(ms_proc_wait_report(p, 10 * SEC), 0);
		uint64_t now = *mailbox(p, MS_GUEST_RESULT0);
		assert_int_equal(*mailbox(p, MS_GUEST_RESULT1), 0);
		assert_int_equal(now, last + 50000);
		last = now;
	}
	ms_proc_destroy(p);
}

/* A page source over a paused memfd, for the real page server. */
struct mem_source {
	const uint8_t *mem;
	uint64_t size;
};

static int mem_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	struct mem_source *m = ctx;
	memcpy(dst, m->mem + off, len);
	return 0;
}

static uint64_t mem_size(void *ctx)
{
	return ((struct mem_source *)ctx)->size;
}

static const struct ms_page_source_ops mem_ops = {.read = mem_read, .size = mem_size};

/* pause -> lazy restore through the page server (Firecracker's handshake) -> verify */
static void test_pattern_lazy_restore(void **state)
{
	(void)state;
	struct ms_proc *p = start(MS_GUEST_PATTERN);
	command(p, MS_PATTERN_FILL, 99, 3);
	*mailbox(p, MS_GUEST_CMD) = 0; /* the guest's next step after a resume: just report */
	struct ms_proc_paused paused;
	assert_int_equal(ms_proc_pause(p, &paused), 0);
	ms_proc_destroy(p);
	struct mem_source src = {.mem = mmap(NULL, MEM, PROT_READ, MAP_SHARED, paused.memfd, 0),
				 .size = MEM};
	assert_true(src.mem != MAP_FAILED);
	char *dir = ms_test_tmpdir(), sock[512];
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	struct ms_pageserver_options opts = {.workers = 2, .batch_bytes = 65536};
	struct ms_pageserver *srv = ms_pageserver_new(sock, &mem_ops, &src, &opts);
	assert_non_null(srv);
	struct ms_proc_restore r = {.mem_size = MEM,
				    .snapfile = paused.snapfile,
				    .snapfile_len = paused.snapfile_len,
				    .eager_fd = -1,
				    .lazy_socket = sock};
	assert_int_equal(ms_proc_restore(&r, &p), 0);
	struct ms_pageset *written;
	/*
	 * The host's mapping shows a page of a lazily restored guest only once the page
	 * server installed it: let the guest fault the mailbox in (it reports at once),
	 * then command it.
	 */
	assert_int_equal(ms_proc_continue(p), 0);
	int err = ms_proc_wait_report(p, 10 * SEC);
	if (err)
		fail_msg("lazy restore: %s (%s)", ms_strerror(err), ms_proc_death_cause(p));
	assert_int_equal(*mailbox(p, MS_GUEST_ARG0), 99);
	command(p, MS_PATTERN_VERIFY, 99, 3);
	assert_int_equal(*mailbox(p, MS_GUEST_RESULT0), 0);
	/* after a lazy resume and a read-only epoch the written set is empty */
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_int_equal(ms_pageset_count(written), 0);
	ms_pageset_free(written);
	/* after a write epoch it is exactly the pages written */
	command(p, MS_PATTERN_ZERO, 10, 3);
	assert_int_equal(ms_proc_written_pages(p, true, &written), 0);
	assert_int_equal(ms_pageset_count(written), 3);
	for (uint32_t page = 18; page < 21; page++)
		assert_true(ms_pageset_contains(written, page));
	ms_pageset_free(written);
	ms_proc_destroy(p);
	ms_pageserver_free(srv);
	munmap((void *)src.mem, MEM);
	paused_fini(&paused);
	ms_test_rmtree(dir);
	free(dir);
}

static void test_snapfile_rejections(void **state)
{
	(void)state;
	struct ms_proc *p = start(MS_GUEST_PATTERN);
	struct ms_proc_paused paused;
	assert_int_equal(ms_proc_pause(p, &paused), 0);
	ms_proc_destroy(p);
	struct ms_proc_restore r = {.mem_size = MEM,
				    .snapfile = paused.snapfile,
				    .snapfile_len = paused.snapfile_len,
				    .eager_fd = paused.memfd};
	uint8_t *bad = malloc(paused.snapfile_len);
	/* a corrupted byte */
	memcpy(bad, paused.snapfile, paused.snapfile_len);
	bad[100] ^= 1;
	r.snapfile = bad;
	assert_int_equal(ms_proc_restore(&r, &p), MS_ECHECKSUM);
	/* truncated */
	r.snapfile = paused.snapfile;
	r.snapfile_len = paused.snapfile_len - 16;
	assert_true(ms_proc_restore(&r, &p) < 0);
	r.snapfile_len = 20;
	assert_int_equal(ms_proc_restore(&r, &p), MS_ECORRUPT);
	/* another memory size */
	r.snapfile_len = paused.snapfile_len;
	r.mem_size = MEM * 2;
	assert_int_equal(ms_proc_restore(&r, &p), -EINVAL);
	/* the other backend (a well-formed kvm snapfile) */
	memcpy(bad, paused.snapfile, paused.snapfile_len);
	uint32_t kvm = MS_BACKEND_KVM;
	memcpy(bad + 12, &kvm, 4);
	uint64_t sum = XXH64(bad, paused.snapfile_len - 8, 0);
	memcpy(bad + paused.snapfile_len - 8, &sum, 8);
	r.snapfile = bad;
	r.mem_size = MEM;
	assert_int_equal(ms_proc_restore(&r, &p), MS_EBACKEND);
	free(bad);
	paused_fini(&paused);
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

/* 10 cycles of mutator epochs with a pause and an eager restore between each: memory exact. */
static void test_mutator_cycles(void **state)
{
	(void)state;
	struct ms_proc *p = start(MS_GUEST_MUTATOR);
	static uint64_t model[PAGES]; /* per data page: the word every slot holds (0: untouched) */
	memset(model, 0, sizeof(model));
	for (uint64_t cycle = 0; cycle < 10; cycle++) {
		uint64_t seed = 0x1000 + cycle * 7919, writes = 40 + cycle * 3;
		command(p, 1, seed, writes);
		mutator_model(model, seed, writes);
		*mailbox(p, MS_GUEST_CMD) = 0;
		struct ms_proc_paused paused;
		assert_int_equal(ms_proc_pause(p, &paused), 0);
		/* the written set holds the mutated pages (plus mailbox and stack) */
		assert_true(ms_pageset_count(paused.written) <= writes + 2 + (cycle == 0 ? 2 : 0));
		ms_proc_destroy(p);
		p = restore_eager(&paused);
		paused_fini(&paused);
		assert_int_equal(ms_proc_continue(p), 0);
		assert_int_equal(ms_proc_wait_report(p, 10 * SEC), 0);
		const uint8_t *ram = ms_proc_ram(p);
		for (uint64_t page = MS_GUEST_DATA_FIRST_PAGE; page < PAGES - MS_GUEST_STACK_PAGES;
		     page++)
			for (uint64_t w = 0; w < 512; w += 127)
				if (((const uint64_t *)(ram + page * 4096))[w] != model[page])
					fail_msg("cycle %llu: page %llu differs",
						 (unsigned long long)cycle,
						 (unsigned long long)page);
	}
	ms_proc_destroy(p);
}

/* The interface: backend choice, and a fresh -> pause -> eager restore round through it. */
static void test_sandbox_interface(void **state)
{
	(void)state;
	const struct ms_sandbox_ops *ops;
	char why[160];
	bool kvm = ms_sandbox_kvm_available();
	assert_int_equal(ms_sandbox_backend_pick("kvm", &ops, why, sizeof(why)), kvm ? 0 : -ENODEV);
	assert_int_equal(ms_sandbox_backend_pick("vmware", &ops, why, sizeof(why)), -EINVAL);
	assert_int_equal(ms_sandbox_backend_pick("auto", &ops, why, sizeof(why)), 0);
	assert_string_equal(ops->name, kvm ? "kvm" : "proc"); /* auto: kvm where /dev/kvm opens */
	print_message("auto: %s\n", why);
	assert_int_equal(ms_sandbox_backend_pick("proc", &ops, why, sizeof(why)), 0);
	assert_string_equal(ops->name, "proc");
	struct ms_sandbox_spec fresh = {
	    .guest = MS_GUEST_PATTERN, .mem_size = MEM, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *sb;
	assert_int_equal(ms_sandbox_create(ops, &fresh, &sb), 0);
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb);
	box[0] = MS_PATTERN_FILL;
	box[1] = 11;
	box[2] = 2;
	assert_int_equal(ms_sandbox_run(sb), 0);
	assert_int_equal(ms_sandbox_wait_report(sb, 10 * SEC), 0);
	box[0] = MS_PATTERN_VERIFY;
	struct ms_sandbox_paused paused;
	assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
	ms_sandbox_destroy(sb);
	struct ms_sandbox_spec eager = {.mem_size = MEM,
					.memory = MS_SANDBOX_EAGER,
					.eager_fd = paused.memfd,
					.snapfile = paused.snapfile,
					.snapfile_len = paused.snapfile_len};
	assert_int_equal(ms_sandbox_create(ops, &eager, &sb), 0);
	box = (uint64_t *)ms_sandbox_ram(sb);
	assert_int_equal(ms_sandbox_run(sb), 0);
	assert_int_equal(ms_sandbox_wait_report(sb, 10 * SEC), 0);
	assert_int_equal(box[MS_GUEST_RESULT0 / 8], 0); /* VERIFY ran on the restored memory */
	ms_sandbox_destroy(sb);
	struct ms_sandbox_spec lazy_without_socket = {.mem_size = MEM,
						      .memory = MS_SANDBOX_LAZY,
						      .snapfile = paused.snapfile,
						      .snapfile_len = paused.snapfile_len};
	assert_int_equal(ms_sandbox_create(ops, &lazy_without_socket, &sb), -EINVAL);
	ms_sandbox_paused_fini(&paused);
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
	    cmocka_unit_test(test_counter_across_restores),
	    cmocka_unit_test(test_pattern_lazy_restore),
	    cmocka_unit_test(test_snapfile_rejections),
	    cmocka_unit_test(test_mutator_cycles),
	    cmocka_unit_test(test_sandbox_interface),
	    cmocka_unit_test(test_bad_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
