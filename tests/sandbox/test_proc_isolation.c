/*
 * test_proc_isolation.c - a process sandbox holds nothing of the node that forked it.
 *
 * The proc backend forks its sandbox without exec. Before the child shed the node
 * (proc_shed.S), a guest could load from any address of the node: its heap (the
 * store's credentials, the fleet's keys) as the fork left it, and the RAM of every
 * other sandbox, live, through the node's MAP_SHARED mappings. Each test here has
 * a guest load from such an address: it must die of the fault, never report the
 * node's bytes. The last one reads the sandbox's /proc/PID/maps: guest RAM and the
 * shed's page only (and the kernel's vsyscall page, which no one can unmap).
 *
 * proc only: a kvm guest has its own address space in hardware.
 */
#include "ms_test.h"
#include "sandbox/proc.h"
#include "sandbox/sandbox.h"
#include "util/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM    (1u << 20)
#define SEC    1000000000LL
#define SECRET 0x5ec2e75ec2e75ec2ULL

static const struct ms_sandbox_ops *ops;

/*
 * Has a started guest load the word at addr and report it (int3 with the word in rax):
 * its code page becomes a nop sled ending in the load, which the guest reaches when it
 * returns from its boot report. 0 with *word, or the guest's death (-ECHILD).
 */
static int guest_load(struct ms_sandbox *sb, uint64_t addr, uint64_t *word)
{
	uint8_t load[] = {0x48, 0xb8, 0,    0, 0, 0, 0, 0, 0, 0, /* movabs $addr, %rax */
			  0x48, 0x8b, 0x00,			 /* mov (%rax), %rax */
			  0xcc,					 /* int3: a report */
			  0xeb, 0xfe};				 /* jmp . */
	memcpy(load + 2, &addr, sizeof(addr));
	uint8_t *code = ms_sandbox_ram(sb) + MS_GUEST_CODE;
	memset(code, 0x90, 0x1000);
	memcpy(code + 0x1000 - sizeof(load), load, sizeof(load));
	assert_int_equal(ms_sandbox_run(sb), 0);
	int err = ms_sandbox_wait_report(sb, 10 * SEC);
	if (!err)
		*word = *(uint64_t *)(ms_sandbox_ram(sb) + MS_GUEST_RESULT0);
	return err;
}

/* The guest's load must have killed it, and not by anything but the fault. */
static void assert_load_faults(struct ms_sandbox *sb, uint64_t addr, const char *what)
{
	uint64_t word = 0;
	int err = guest_load(sb, addr, &word);
	if (!err)
		fail_msg("the guest read %s at 0x%" PRIx64 ": 0x%" PRIx64 "%s", what, addr, word,
			 word == SECRET ? " (the secret)" : "");
	assert_int_equal(err, -ECHILD);
	const char *cause = ms_sandbox_death_cause(sb);
	print_message("loading %s: %s\n", what, cause);
	assert_non_null(strstr(cause, "Segmentation fault"));
}

static void test_node_heap_is_gone(void **state)
{
	(void)state;
	uint64_t *secret = malloc(4096);
	assert_non_null(secret);
	for (int i = 0; i < 512; i++)
		secret[i] = SECRET;
	struct ms_sandbox *sb = ms_test_sandbox_start(ops, MS_GUEST_PATTERN, MEM);
	assert_load_faults(sb, (uint64_t)(uintptr_t)(secret + 256), "the node's heap");
	ms_sandbox_destroy(sb);
	free(secret);
}

static void test_other_sandbox_ram_is_gone(void **state)
{
	(void)state;
	struct ms_sandbox *a = ms_test_sandbox_start(ops, MS_GUEST_PATTERN, MEM);
	uint64_t *page = (uint64_t *)(ms_sandbox_ram(a) + MEM / 2);
	for (int i = 0; i < 512; i++)
		page[i] = SECRET;
	struct ms_sandbox *b = ms_test_sandbox_start(ops, MS_GUEST_PATTERN, MEM);
	assert_load_faults(b, (uint64_t)(uintptr_t)(page + 8), "another sandbox's RAM");
	ms_sandbox_destroy(b);
	/* the other sandbox is untouched */
	assert_int_equal(page[8], SECRET);
	ms_sandbox_destroy(a);
}

static void test_maps_hold_ram_and_the_shed(void **state)
{
	(void)state;
	struct ms_proc_config cfg = {.guest = MS_GUEST_PATTERN, .mem_size = MEM};
	struct ms_proc *p;
	int err = ms_proc_start(&cfg, &p);
	if (err == -ENOTSUP)
		MS_TEST_SKIP_EXIT("the kernel lacks the tracker's userfaultfd features");
	assert_int_equal(err, 0);
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)ms_proc_pid(p));
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	int user = 0, ram = 0, shed = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long start, end;
		char perms[8];
		assert_int_equal(sscanf(line, "%llx-%llx %7s", &start, &end, perms), 3);
		print_message("sandbox map: %s", line);
		if (start >= (1ull << 56))
			continue; /* [vsyscall] */
		user++;
		if (start == MS_PROC_RAM_BASE && end == MS_PROC_RAM_BASE + MEM)
			ram++;
		else if (end - start == 4096 && !strcmp(perms, "r-xp"))
			shed++;
	}
	fclose(f);
	assert_int_equal(ram, 1);
	assert_int_equal(shed, 1);
	assert_int_equal(user, 2);
	/* and the guest still runs */
	assert_int_equal(ms_proc_continue(p), 0);
	assert_int_equal(ms_proc_wait_report(p, 10 * SEC), 0);
	ms_proc_destroy(p);
}

int main(void)
{
	ops = ms_test_backend("proc");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_node_heap_is_gone),
	    cmocka_unit_test(test_other_sandbox_ram_is_gone),
	    cmocka_unit_test(test_maps_hold_ram_and_the_shed),
	};
	return cmocka_run_group_tests_name("proc isolation", tests, NULL, NULL);
}
