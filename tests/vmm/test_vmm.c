/*
 * test_vmm.c - the KVM VMM on its own terms: every saved state section
 * round-trips through a restore into a new VM (saved again, byte for byte,
 * but for the clocks that run), a pause lands anywhere (not only at a report)
 * and the guest continues exactly, guest exceptions are reported with their
 * vector and address, a two-vCPU VM saves and restores both vCPUs. Skips with one line where
 * /dev/kvm does not open.
 */
#include "ms_test.h"
#include "sandbox/sandbox.h"
#include "util/err.h"
#include "vmm/boot.h"
#include "vmm/state.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM (1u << 20)
#define SEC 1000000000LL

static const struct ms_sandbox_ops *ops;

static struct ms_sandbox *start(enum ms_guest_kind kind)
{
	return ms_test_sandbox_start(ops, kind, MEM);
}

static struct ms_sandbox *restore(const struct ms_sandbox_paused *paused)
{
	return ms_test_sandbox_restore_eager(ops, paused, MEM);
}

static void parse(const struct ms_sandbox_paused *paused, struct ms_snap_part *parts,
		  unsigned *count)
{
	assert_int_equal(ms_snapfile_parse(paused->snapfile, paused->snapfile_len, MS_BACKEND_KVM,
					   MEM, parts, count),
			 0);
}

/* Masks the fields of a section that move on their own (clocks, timers). */
static void mask_volatile(uint32_t type, uint8_t *data, uint32_t len)
{
	switch (type & 0xffff) {
	case MS_VMM_SEC_CLOCK:
		memset(data, 0, len); /* the VM clock runs */
		break;
	case MS_VMM_SEC_PIT2:
		for (unsigned ch = 0; ch < 3; ch++) /* count_load_time: a host ktime */
			memset(&((struct kvm_pit_state2 *)data)->channels[ch].count_load_time, 0,
			       sizeof(int64_t));
		break;
	case MS_VMM_SEC_LAPIC:
		memset(data + 0x390, 0, 4); /* the timer's current count */
		break;
	case MS_VMM_SEC_MSRS:
		for (struct kvm_msr_entry *e = (void *)data; (uint8_t *)(e + 1) <= data + len; e++)
			if (e->index == 0x10 || e->index == 0x3b || (e->index >> 8) == 0x4b564d)
				e->data = 0; /* TSC, TSC_ADJUST, kvmclock values */
		break;
	}
}

/* save -> restore in a new VM -> save: every section is the same */
static void test_state_round_trip(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_COUNTER);
	((uint64_t *)ms_sandbox_ram(sb))[1] = 100000;
	assert_int_equal(ms_sandbox_run(sb), 0);
	assert_int_equal(ms_sandbox_wait_report(sb, 10 * SEC), 0);
	struct ms_sandbox_paused first, second;
	assert_int_equal(ms_sandbox_pause(sb, &first), 0);
	ms_sandbox_destroy(sb);
	sb = restore(&first);
	assert_int_equal(ms_sandbox_pause(sb, &second), 0);
	ms_sandbox_destroy(sb);
	struct ms_snap_part a[MS_SNAPFILE_MAX_SECTIONS], b[MS_SNAPFILE_MAX_SECTIONS];
	unsigned na, nb;
	parse(&first, a, &na);
	parse(&second, b, &nb);
	assert_int_equal(na, nb);
	static const uint32_t kinds[] = {
	    MS_VMM_SEC_MP_STATE, MS_VMM_SEC_REGS,      MS_VMM_SEC_SREGS,   MS_VMM_SEC_XSAVE,
	    MS_VMM_SEC_XCRS,	 MS_VMM_SEC_DEBUGREGS, MS_VMM_SEC_LAPIC,   MS_VMM_SEC_TSC_KHZ,
	    MS_VMM_SEC_CPUID,	 MS_VMM_SEC_MSRS,      MS_VMM_SEC_EVENTS,  MS_VMM_SEC_PIT2,
	    MS_VMM_SEC_CLOCK,	 MS_VMM_SEC_IRQCHIPS,  MS_VMM_SEC_DEVICES, MS_VMM_SEC_LAYOUT,
	    MS_VMM_SEC_SYSSTACK};
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		const struct ms_snap_part *x = ms_snapfile_find(a, na, kinds[k]);
		const struct ms_snap_part *y = ms_snapfile_find(b, nb, kinds[k]);
		if (!x || !y)
			fail_msg("section 0x%x missing", kinds[k]);
		assert_int_equal(x->length, y->length);
		uint8_t *cx = malloc(x->length), *cy = malloc(y->length);
		memcpy(cx, x->data, x->length);
		memcpy(cy, y->data, y->length);
		mask_volatile(kinds[k], cx, x->length);
		mask_volatile(kinds[k], cy, y->length);
		for (uint32_t i = 0; i < x->length; i++)
			if (cx[i] != cy[i])
				fail_msg("section 0x%x differs at byte %u after a round trip",
					 kinds[k], i);
		free(cx);
		free(cy);
	}
	/* the MSRs held something: the allow-list met this KVM's index list */
	const struct ms_snap_part *msrs = ms_snapfile_find(a, na, MS_VMM_SEC_MSRS);
	print_message("%u MSRs saved, XSAVE area %u bytes, snapfile %zu bytes\n",
		      msrs->length / (unsigned)sizeof(struct kvm_msr_entry),
		      ms_snapfile_find(a, na, MS_VMM_SEC_XSAVE)->length, first.snapfile_len);
	assert_true(msrs->length >= 8 * sizeof(struct kvm_msr_entry));
	ms_sandbox_paused_fini(&first);
	ms_sandbox_paused_fini(&second);
}

/* pauses that land while the guest computes, in place and into new VMs: no gap */
static void test_pause_anywhere(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_COUNTER);
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb);
	box[1] = 20000000; /* reports rarely: pauses land mid-computation */
	for (int i = 0; i < 30; i++) {
		assert_int_equal(ms_sandbox_run(sb), 0);
		usleep(1000);
		struct ms_sandbox_paused paused;
		assert_int_equal(ms_sandbox_pause(sb, &paused), 0);
		if (i % 3 == 2) { /* every third: into a new VM */
			ms_sandbox_destroy(sb);
			sb = restore(&paused);
			box = (uint64_t *)ms_sandbox_ram(sb);
		}
		ms_sandbox_paused_fini(&paused);
	}
	box[1] = 1000;
	assert_int_equal(ms_sandbox_run(sb), 0);
	assert_int_equal(ms_sandbox_wait_report(sb, 10 * SEC), 0);
	assert_int_equal(box[MS_GUEST_RESULT1 / 8], 0); /* register and RAM agree */
	assert_int_equal(box[MS_GUEST_RESULT0 / 8] % 1000, 0);
	ms_sandbox_destroy(sb);
}

/* a guest that reads past its RAM takes a #PF: reported with the address */
static void test_exception_reported(void **state)
{
	(void)state;
	struct ms_sandbox *sb = start(MS_GUEST_PATTERN);
	/* movabs $0x4000000000, %rax; mov (%rax), %rax */
	static const uint8_t bad_read[] = {0x48, 0xb8, 0, 0, 0, 0, 0x40, 0, 0, 0, 0x48, 0x8b, 0x00};
	uint8_t *code = ms_sandbox_ram(sb) + MS_GUEST_CODE;
	memset(code, 0x90, 0x1000);
	memcpy(code + 0x1000 - sizeof(bad_read), bad_read, sizeof(bad_read));
	assert_int_equal(ms_sandbox_run(sb), 0);
	assert_int_equal(ms_sandbox_wait_report(sb, 10 * SEC), -ECHILD);
	const char *cause = ms_sandbox_death_cause(sb);
	print_message("death: %s\n", cause);
	assert_non_null(strstr(cause, "#PF"));
	assert_non_null(strstr(cause, "cr2 0x4000000000"));
	ms_sandbox_destroy(sb);
}

/* Saved sections, copied, for the two-vCPU test. */
struct sections {
	uint32_t type[64], len[64];
	void *data[64];
	unsigned n;
};

static int collect(void *ctx, uint32_t type, const void *data, uint32_t length)
{
	struct sections *s = ctx;
	assert_true(s->n < 64);
	s->type[s->n] = type;
	s->len[s->n] = length;
	s->data[s->n] = malloc(length);
	memcpy(s->data[s->n], data, length);
	s->n++;
	return 0;
}

static const void *lookup(void *ctx, uint32_t type, uint32_t *length)
{
	struct sections *s = ctx;
	for (unsigned i = 0; i < s->n; i++)
		if (s->type[i] == type) {
			*length = s->len[i];
			return s->data[i];
		}
	return NULL;
}

/*
 * The VMM itself with two vCPUs: vCPU 0 runs counter, vCPU 1 waits for a SIPI
 * (in-kernel LAPIC); both are stopped, saved (a section set each) and restored
 * into a new two-vCPU VM over the same memory, where counter continues exactly.
 */
static void test_two_vcpus(void **state)
{
	(void)state;
	uint64_t size = MEM;
	int memfd = memfd_create("test-vmm", MFD_CLOEXEC);
	assert_int_equal(ftruncate(memfd, (off_t)size), 0);
	uint8_t *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	assert_true(ram != MAP_FAILED);
	const uint8_t *code;
	size_t len;
	assert_int_equal(ms_guest_code(MS_GUEST_COUNTER, &code, &len), 0);
	static const uint8_t stub[] = {0xcc, 0x41, 0xff, 0xe3}; /* int3; jmp *%r11 */
	memcpy(ram + MS_GUEST_STUB, stub, sizeof(stub));
	memcpy(ram + MS_GUEST_CODE, code, len);
	((uint64_t *)ram)[MS_GUEST_PAGES / 8] = size / 4096;
	((uint64_t *)ram)[MS_GUEST_ARG0 / 8] = 100000;
	struct ms_vmm_config cfg = {.ram = ram, .ram_size = size, .vcpus = 2};
	struct ms_vmm *vmm;
	assert_int_equal(ms_vmm_new(&cfg, &vmm), 0);
	assert_int_equal(ms_vmm_boot(vmm, MS_GUEST_CODE, size - 64), 0);
	uint64_t rax, rdx, last = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ms_vmm_resume(vmm), 0);
		assert_int_equal(ms_vmm_wait_report(vmm, 10 * SEC, &rax, &rdx), 0);
		assert_int_equal(rdx, 0);
		last = rax;
	}
	assert_int_equal(ms_vmm_stop(vmm), 0);
	struct sections saved = {.n = 0};
	assert_int_equal(ms_vmm_state_save(vmm, collect, &saved), 0);
	ms_vmm_free(vmm);
	uint32_t got;
	const struct kvm_mp_state *ap =
	    lookup(&saved, MS_VMM_SEC_VCPU(MS_VMM_SEC_MP_STATE, 1), &got);
	assert_non_null(ap);
	assert_int_equal(ap->mp_state, KVM_MP_STATE_UNINITIALIZED); /* waiting for its SIPI */
	assert_non_null(lookup(&saved, MS_VMM_SEC_VCPU(MS_VMM_SEC_REGS, 1), &got));
	/* a one-vCPU VM refuses the two-vCPU state */
	struct ms_vmm_config one = {.ram = ram, .ram_size = size, .vcpus = 1};
	assert_int_equal(ms_vmm_new(&one, &vmm), 0);
	assert_int_equal(ms_vmm_state_load(vmm, lookup, &saved), -EINVAL);
	ms_vmm_free(vmm);
	/* restored into a new two-vCPU VM, counter continues */
	assert_int_equal(ms_vmm_new(&cfg, &vmm), 0);
	assert_int_equal(ms_vmm_state_load(vmm, lookup, &saved), 0);
	assert_int_equal(ms_vmm_resume(vmm), 0);
	assert_int_equal(ms_vmm_wait_report(vmm, 10 * SEC, &rax, &rdx), 0);
	assert_int_equal(rdx, 0);
	assert_int_equal(rax, last + 100000);
	ms_vmm_free(vmm);
	for (unsigned i = 0; i < saved.n; i++)
		free(saved.data[i]);
	munmap(ram, size);
	close(memfd);
}

/* the system region's tables: RAM user-mapped, the region supervisor-only */
static void test_system_region(void **state)
{
	(void)state;
	uint64_t ram = (3u << 20) + 8192; /* a partial last 2 MiB: 4 KiB entries */
	uint8_t *sys = calloc(1, MS_VMM_SYS_SIZE);
	ms_vmm_sys_build(sys, ram);
	uint64_t base = MS_VMM_SYS_BASE(ram), pd0, tail;
	assert_int_equal(base, 4u << 20);
	memcpy(&pd0, sys + MS_VMM_SYS_PD, 8);
	assert_int_equal(pd0, 0x87); /* 0..2 MiB: present, writable, user, 2 MiB */
	memcpy(&tail, sys + MS_VMM_SYS_PD + 8, 8);
	assert_int_equal(tail & ~0xfffULL, base + MS_VMM_SYS_PT);
	uint64_t pte_last, pte_past, sys_pde;
	memcpy(&pte_last, sys + MS_VMM_SYS_PT + 257 * 8, 8); /* RAM's last page, 3 MiB + 4 KiB */
	memcpy(&pte_past, sys + MS_VMM_SYS_PT + 258 * 8, 8);
	assert_int_equal(pte_last, ((3u << 20) + 4096) | 7);
	assert_int_equal(pte_past, 0);
	memcpy(&sys_pde, sys + MS_VMM_SYS_PD + (base >> 21) * 8, 8);
	assert_int_equal(sys_pde, base | 0x83); /* no user bit */
	free(sys);
}

int main(void)
{
	ops = ms_test_backend("kvm");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_state_round_trip),   cmocka_unit_test(test_pause_anywhere),
	    cmocka_unit_test(test_exception_reported), cmocka_unit_test(test_system_region),
	    cmocka_unit_test(test_two_vcpus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
