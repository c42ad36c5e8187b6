/* state.c - vCPU, VM and device state save/restore (sections and order in state.h). */
#include "vmm/state.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define MS_VMM_LAYOUT_VERSION 1

/* MSRs worth saving (Firecracker's allow-list): [first, last] ranges. */
static const uint32_t ms_vmm_msr_ranges[][2] = {
    {0x10, 0x10},	      /* TSC */
    {0x11, 0x12},	      /* KVM wall clock / system time (legacy PV) */
    {0x1b, 0x1b},	      /* APIC_BASE */
    {0x3b, 0x3b},	      /* TSC_ADJUST */
    {0x48, 0x48},	      /* SPEC_CTRL */
    {0x122, 0x122},	      /* TSX_CTRL */
    {0x174, 0x176},	      /* SYSENTER_CS/ESP/EIP */
    {0x179, 0x17b},	      /* MCG_CAP/STATUS/CTL */
    {0x1a0, 0x1a0},	      /* MISC_ENABLE */
    {0x1d9, 0x1d9},	      /* DEBUGCTL */
    {0x1db, 0x1de},	      /* last branch / exception records */
    {0x200, 0x2ff},	      /* MTRRs, PAT */
    {0x400, 0x47f},	      /* MCi banks */
    {0x6e0, 0x6e0},	      /* TSC_DEADLINE */
    {0x800, 0x8ff},	      /* x2APIC */
    {0xda0, 0xda0},	      /* IA32_XSS */
    {0x4b564d00, 0x4b564dff}, /* KVM paravirtual MSRs */
    {0xc0000080, 0xc0000084}, /* EFER, STAR, LSTAR, CSTAR, SYSCALL_MASK */
    {0xc0000100, 0xc0000103}, /* FS/GS/KERNEL_GS_BASE, TSC_AUX */
};

static bool ms_vmm_msr_allowed(uint32_t index)
{
	for (size_t i = 0; i < sizeof(ms_vmm_msr_ranges) / sizeof(ms_vmm_msr_ranges[0]); i++)
		if (index >= ms_vmm_msr_ranges[i][0] && index <= ms_vmm_msr_ranges[i][1])
			return true;
	return false;
}

/* The allowed MSR indices this KVM reports (malloc'd). */
static int ms_vmm_msr_indices(struct ms_vmm *vmm, uint32_t **out, uint32_t *count)
{
	struct kvm_msr_list probe = {.nmsrs = 0};
	if (ioctl(ms_vmm_kvm_fd(vmm), KVM_GET_MSR_INDEX_LIST, &probe) && errno != E2BIG)
		return -errno;
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	if (!list)
		return -ENOMEM;
	list->nmsrs = probe.nmsrs;
	if (ioctl(ms_vmm_kvm_fd(vmm), KVM_GET_MSR_INDEX_LIST, list)) {
		int err = -errno;
		free(list);
		return err;
	}
	uint32_t *indices = calloc(list->nmsrs + 1, sizeof(uint32_t)), n = 0;
	if (!indices) {
		free(list);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < list->nmsrs; i++)
		if (ms_vmm_msr_allowed(list->indices[i]))
			indices[n++] = list->indices[i];
	free(list);
	*out = indices;
	*count = n;
	return 0;
}

/*
 * Reads the MSRs one batch at a time; an MSR this vCPU refuses to read is
 * left out (KVM_GET_MSRS stops at the first failure and returns how many it read).
 */
static int ms_vmm_save_msrs(struct ms_vmm *vmm, int fd, unsigned index, ms_vmm_emit_fn emit,
			    void *ctx)
{
	uint32_t *indices = NULL, count = 0;
	int err = ms_vmm_msr_indices(vmm, &indices, &count);
	if (err)
		return err;
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + count * sizeof(struct kvm_msr_entry));
	struct kvm_msr_entry *saved = calloc(count + 1, sizeof(struct kvm_msr_entry));
	uint32_t nsaved = 0;
	if (!msrs || !saved) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t next = 0; next < count;) {
		msrs->nmsrs = count - next;
		for (uint32_t i = 0; i < msrs->nmsrs; i++)
			msrs->entries[i] = (struct kvm_msr_entry){.index = indices[next + i]};
		int got = ioctl(fd, KVM_GET_MSRS, msrs);
		if (got < 0) {
			err = -errno;
			goto out;
		}
		memcpy(saved + nsaved, msrs->entries, (size_t)got * sizeof(struct kvm_msr_entry));
		nsaved += (uint32_t)got;
		next += (uint32_t)got;
		if (next < count) {
			ms_debug("vmm", "MSR 0x%x not readable: left out", indices[next]);
			next++;
		}
	}
	err = emit(ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_MSRS, index), saved,
		   nsaved * (uint32_t)sizeof(struct kvm_msr_entry));
out:
	free(saved);
	free(msrs);
	free(indices);
	return err;
}

static int ms_vmm_save_cpuid(int fd, unsigned index, ms_vmm_emit_fn emit, void *ctx)
{
	int err;
	struct kvm_cpuid2 *cpuid = ms_vmm_cpuid_get(fd, KVM_GET_CPUID2, &err);
	if (!cpuid)
		return err;
	uint32_t used =
	    (uint32_t)(sizeof(struct kvm_cpuid2) + cpuid->nent * sizeof(struct kvm_cpuid_entry2));
	err = emit(ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_CPUID, index), cpuid, used);
	free(cpuid);
	return err;
}

static int ms_vmm_xsave_size(struct ms_vmm *vmm)
{
	int size = ioctl(ms_vmm_vm_fd(vmm), KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return size > (int)sizeof(struct kvm_xsave) ? size : (int)sizeof(struct kvm_xsave);
}

/* Runs one GET ioctl into a stack buffer and emits it. */
#define MS_VMM_SAVE(fd, req, type, sec)                                                            \
	do {                                                                                       \
		type value_;                                                                       \
		memset(&value_, 0, sizeof(value_));                                                \
		if (ioctl(fd, req, &value_))                                                       \
			return -errno;                                                             \
		int e_ = emit(ctx, sec, &value_, sizeof(value_));                                  \
		if (e_)                                                                            \
			return e_;                                                                 \
	} while (0)

static int ms_vmm_save_vcpu(struct ms_vmm *vmm, unsigned i, ms_vmm_emit_fn emit, void *ctx)
{
	int fd = ms_vmm_vcpu_fd(vmm, i), err;
	MS_VMM_SAVE(fd, KVM_GET_MP_STATE, struct kvm_mp_state,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_MP_STATE, i));
	MS_VMM_SAVE(fd, KVM_GET_REGS, struct kvm_regs, MS_VMM_SEC_VCPU(MS_VMM_SEC_REGS, i));
	MS_VMM_SAVE(fd, KVM_GET_SREGS, struct kvm_sregs, MS_VMM_SEC_VCPU(MS_VMM_SEC_SREGS, i));
	int xsize = ms_vmm_xsave_size(vmm);
	void *xsave = calloc(1, (size_t)xsize);
	if (!xsave)
		return -ENOMEM;
	err =
	    ioctl(fd, xsize > (int)sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xsave)
		? -errno
		: emit(ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_XSAVE, i), xsave, (uint32_t)xsize);
	free(xsave);
	if (err)
		return err;
	MS_VMM_SAVE(fd, KVM_GET_XCRS, struct kvm_xcrs, MS_VMM_SEC_VCPU(MS_VMM_SEC_XCRS, i));
	MS_VMM_SAVE(fd, KVM_GET_DEBUGREGS, struct kvm_debugregs,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_DEBUGREGS, i));
	MS_VMM_SAVE(fd, KVM_GET_LAPIC, struct kvm_lapic_state,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_LAPIC, i));
	int khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
	if (khz < 0)
		return -errno;
	uint32_t tsc_khz = (uint32_t)khz;
	if ((err = emit(ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_TSC_KHZ, i), &tsc_khz, 4)) ||
	    (err = ms_vmm_save_cpuid(fd, i, emit, ctx)) ||
	    (err = ms_vmm_save_msrs(vmm, fd, i, emit, ctx)))
		return err;
	MS_VMM_SAVE(fd, KVM_GET_VCPU_EVENTS, struct kvm_vcpu_events,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_EVENTS, i));
	return 0;
}

int ms_vmm_state_save(struct ms_vmm *vmm, ms_vmm_emit_fn emit, void *ctx)
{
	int err;
	for (unsigned i = 0; i < ms_vmm_vcpu_count(vmm); i++)
		if ((err = ms_vmm_save_vcpu(vmm, i, emit, ctx)))
			return err;
	int vm = ms_vmm_vm_fd(vmm);
	MS_VMM_SAVE(vm, KVM_GET_PIT2, struct kvm_pit_state2, MS_VMM_SEC_PIT2);
	MS_VMM_SAVE(vm, KVM_GET_CLOCK, struct kvm_clock_data, MS_VMM_SEC_CLOCK);
	struct kvm_irqchip chips[3];
	memset(chips, 0, sizeof(chips));
	for (uint32_t c = 0; c < 3; c++) {
		chips[c].chip_id = c;
		if (ioctl(vm, KVM_GET_IRQCHIP, &chips[c]))
			return -errno;
	}
	uint64_t devices[2];
	ms_vmm_devices_save(vmm, devices);
	uint32_t layout[2] = {ms_vmm_vcpu_count(vmm), MS_VMM_LAYOUT_VERSION};
	if ((err = emit(ctx, MS_VMM_SEC_IRQCHIPS, chips, sizeof(chips))) ||
	    (err = emit(ctx, MS_VMM_SEC_DEVICES, devices, sizeof(devices))) ||
	    (err = emit(ctx, MS_VMM_SEC_SYSSTACK, ms_vmm_sys_stack(vmm), 4096)))
		return err;
	return emit(ctx, MS_VMM_SEC_LAYOUT, layout, sizeof(layout));
}

/* The section of exactly len bytes (len 0: any length >= min), else NULL. */
static const void *ms_vmm_need(ms_vmm_find_fn find, void *ctx, uint32_t type, uint32_t len,
			       uint32_t *got)
{
	uint32_t have = 0;
	const void *data = find(ctx, type, &have);
	if (!data || (len && have != len)) {
		ms_warn("vmm", "snapfile: section 0x%x %s (%u bytes, want %u)", type,
			data ? "has the wrong size" : "is missing", have, len);
		return NULL;
	}
	if (got)
		*got = have;
	return data;
}

/* Runs one SET ioctl from a section of exactly sizeof(type) bytes. */
#define MS_VMM_LOAD(fd, req, type, sec)                                                            \
	do {                                                                                       \
		type value_;                                                                       \
		const void *d_ = ms_vmm_need(find, ctx, sec, sizeof(type), NULL);                  \
		if (!d_)                                                                           \
			return MS_ECORRUPT;                                                        \
		memcpy(&value_, d_, sizeof(value_));                                               \
		if (ioctl(fd, req, &value_) < 0)                                                   \
			return -errno;                                                             \
	} while (0)

static int ms_vmm_load_vcpu(struct ms_vmm *vmm, unsigned i, ms_vmm_find_fn find, void *ctx)
{
	int fd = ms_vmm_vcpu_fd(vmm, i);
	uint32_t len;
	const void *data = ms_vmm_need(find, ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_CPUID, i), 0, &len);
	if (!data || len < sizeof(struct kvm_cpuid2))
		return MS_ECORRUPT;
	struct kvm_cpuid2 *cpuid = malloc(len);
	if (!cpuid)
		return -ENOMEM;
	memcpy(cpuid, data, len);
	int err = 0;
	if ((uint64_t)cpuid->nent * sizeof(struct kvm_cpuid_entry2) + sizeof(*cpuid) != len)
		err = MS_ECORRUPT;
	else if (ioctl(fd, KVM_SET_CPUID2, cpuid))
		err = -errno;
	free(cpuid);
	if (err)
		return err;
	/* the TSC frequency: warn when this host's differs by more than 250 ppm */
	const uint32_t *khz =
	    ms_vmm_need(find, ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_TSC_KHZ, i), 4, NULL);
	if (!khz)
		return MS_ECORRUPT;
	int here = ioctl(fd, KVM_GET_TSC_KHZ, 0);
	uint32_t saved_khz;
	memcpy(&saved_khz, khz, 4);
	if (here > 0 && (uint64_t)labs((long)here - (long)saved_khz) * 4000 > saved_khz &&
	    ioctl(fd, KVM_SET_TSC_KHZ, saved_khz))
		ms_warn("vmm", "TSC %u kHz here, %u kHz when saved: cannot scale (%s)", here,
			saved_khz, strerror(errno));
	MS_VMM_LOAD(fd, KVM_SET_MP_STATE, struct kvm_mp_state,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_MP_STATE, i));
	MS_VMM_LOAD(fd, KVM_SET_REGS, struct kvm_regs, MS_VMM_SEC_VCPU(MS_VMM_SEC_REGS, i));
	MS_VMM_LOAD(fd, KVM_SET_SREGS, struct kvm_sregs, MS_VMM_SEC_VCPU(MS_VMM_SEC_SREGS, i));
	int xsize = ms_vmm_xsave_size(vmm);
	if (!(data = ms_vmm_need(find, ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_XSAVE, i), 0, &len)))
		return MS_ECORRUPT;
	if (len != (uint32_t)xsize) {
		ms_err("vmm", "snapfile: an XSAVE area of %u bytes; this host's is %d", len, xsize);
		return -ENOTSUP;
	}
	void *xsave = malloc(len);
	if (!xsave)
		return -ENOMEM;
	memcpy(xsave, data, len);
	err = ioctl(fd, KVM_SET_XSAVE, xsave) ? -errno : 0;
	free(xsave);
	if (err)
		return err;
	MS_VMM_LOAD(fd, KVM_SET_XCRS, struct kvm_xcrs, MS_VMM_SEC_VCPU(MS_VMM_SEC_XCRS, i));
	MS_VMM_LOAD(fd, KVM_SET_DEBUGREGS, struct kvm_debugregs,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_DEBUGREGS, i));
	MS_VMM_LOAD(fd, KVM_SET_LAPIC, struct kvm_lapic_state,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_LAPIC, i));
	if (!(data = ms_vmm_need(find, ctx, MS_VMM_SEC_VCPU(MS_VMM_SEC_MSRS, i), 0, &len)) ||
	    len % sizeof(struct kvm_msr_entry))
		return MS_ECORRUPT;
	uint32_t n = len / (uint32_t)sizeof(struct kvm_msr_entry);
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + len);
	if (!msrs)
		return -ENOMEM;
	msrs->nmsrs = n;
	memcpy(msrs->entries, data, len);
	int set = ioctl(fd, KVM_SET_MSRS, msrs);
	if (set != (int)n) {
		ms_err("vmm", "KVM_SET_MSRS took %d of %u MSRs (first refused: 0x%x)", set, n,
		       set >= 0 && (uint32_t)set < n ? msrs->entries[set].index : 0);
		free(msrs);
		return set < 0 ? -errno : -EINVAL;
	}
	free(msrs);
	MS_VMM_LOAD(fd, KVM_SET_VCPU_EVENTS, struct kvm_vcpu_events,
		    MS_VMM_SEC_VCPU(MS_VMM_SEC_EVENTS, i));
	ioctl(fd, KVM_KVMCLOCK_CTRL, 0); /* EINVAL until the guest enables kvmclock */
	return 0;
}

int ms_vmm_state_load(struct ms_vmm *vmm, ms_vmm_find_fn find, void *ctx)
{
	const uint32_t *layout = ms_vmm_need(find, ctx, MS_VMM_SEC_LAYOUT, 8, NULL);
	if (!layout)
		return MS_ECORRUPT;
	uint32_t saved[2];
	memcpy(saved, layout, sizeof(saved));
	if (saved[0] != ms_vmm_vcpu_count(vmm) || saved[1] != MS_VMM_LAYOUT_VERSION) {
		ms_err("vmm", "snapfile: %u vCPUs, layout %u; this VM has %u vCPUs, layout %u",
		       saved[0], saved[1], ms_vmm_vcpu_count(vmm), MS_VMM_LAYOUT_VERSION);
		return -EINVAL;
	}
	int vm = ms_vmm_vm_fd(vmm);
	MS_VMM_LOAD(vm, KVM_SET_PIT2, struct kvm_pit_state2, MS_VMM_SEC_PIT2);
	const void *clock =
	    ms_vmm_need(find, ctx, MS_VMM_SEC_CLOCK, sizeof(struct kvm_clock_data), NULL);
	if (!clock)
		return MS_ECORRUPT;
	struct kvm_clock_data clk;
	memcpy(&clk, clock, sizeof(clk));
	clk.flags = 0;
	if (ioctl(vm, KVM_SET_CLOCK, &clk))
		return -errno;
	struct kvm_irqchip chips[3];
	const void *c = ms_vmm_need(find, ctx, MS_VMM_SEC_IRQCHIPS, sizeof(chips), NULL);
	if (!c)
		return MS_ECORRUPT;
	memcpy(chips, c, sizeof(chips));
	for (uint32_t i = 0; i < 3; i++)
		if (chips[i].chip_id != i)
			return MS_ECORRUPT;
		else if (ioctl(vm, KVM_SET_IRQCHIP, &chips[i]))
			return -errno;
	const void *dev = ms_vmm_need(find, ctx, MS_VMM_SEC_DEVICES, 16, NULL);
	if (!dev)
		return MS_ECORRUPT;
	uint64_t devices[2];
	memcpy(devices, dev, sizeof(devices));
	if (devices[0] != 1)
		return MS_ECORRUPT;
	const void *stack = ms_vmm_need(find, ctx, MS_VMM_SEC_SYSSTACK, 4096, NULL);
	if (!stack)
		return MS_ECORRUPT;
	int err;
	for (unsigned i = 0; i < ms_vmm_vcpu_count(vmm); i++)
		if ((err = ms_vmm_load_vcpu(vmm, i, find, ctx)))
			return err;
	memcpy(ms_vmm_sys_stack(vmm), stack, 4096);
	ms_vmm_devices_load(vmm, devices);
	return 0;
}
