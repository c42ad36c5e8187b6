/*
 * state.h - save and restore the full vCPU, VM and device state of a stopped
 * VM, in Firecracker's order, as typed sections that the
 * snapfile (sandbox/snapfile.h) stores.
 *
 * Section types (u32): per vCPU, MS_VMM_SEC_VCPU(kind, index) = kind | index << 16;
 * per VM, the kind alone.
 *
 *   kind  per    content                                         save order
 *   0x10  vCPU   struct kvm_mp_state                              1 (first: may change the LAPIC)
 *   0x11  vCPU   struct kvm_regs                                  2
 *   0x12  vCPU   struct kvm_sregs                                 3
 *   0x13  vCPU   XSAVE area (KVM_GET_XSAVE2, KVM_CAP_XSAVE2 bytes) 4
 *   0x14  vCPU   struct kvm_xcrs                                  5
 *   0x15  vCPU   struct kvm_debugregs                             6
 *   0x16  vCPU   struct kvm_lapic_state                           7
 *   0x17  vCPU   u32 TSC kHz                                      8
 *   0x18  vCPU   u32 nent, then nent x struct kvm_cpuid_entry2     9
 *   0x19  vCPU   n x struct kvm_msr_entry (index list ∩ allow-list) 10
 *   0x1a  vCPU   struct kvm_vcpu_events                           11 (last)
 *   0x20  VM     struct kvm_pit_state2
 *   0x21  VM     struct kvm_clock_data
 *   0x22  VM     3 x struct kvm_irqchip (PIC master, PIC slave, IOAPIC)
 *   0x23  VM     u64[2] device state: version 1, control-device report count
 *   0x24  VM     u32[2] vCPU count, system-region layout version (1)
 *   0x25  VM     4096 bytes: the system region's CPL0 stack page (vmm/boot.h)
 *
 * Restore order: per VM (after the irqchip and PIT exist) PIT2, clock (flags 0),
 * irqchips; per vCPU CPUID2, MP state, regs, sregs, xsave, xcrs, debugregs, LAPIC,
 * MSRs (every entry must be accepted), vCPU events, then KVM_KVMCLOCK_CTRL (its
 * error ignored: EINVAL until the guest enables kvmclock).
 * Every section's length is checked; a missing or misfit section is MS_ECORRUPT.
 */
#ifndef MS_VMM_STATE_H
#define MS_VMM_STATE_H

#include "vmm/vmm.h"

#include <stdint.h>

#define MS_VMM_SEC_VCPU(kind, index) ((uint32_t)(kind) | ((uint32_t)(index) << 16))

enum ms_vmm_section {
	MS_VMM_SEC_MP_STATE = 0x10,
	MS_VMM_SEC_REGS = 0x11,
	MS_VMM_SEC_SREGS = 0x12,
	MS_VMM_SEC_XSAVE = 0x13,
	MS_VMM_SEC_XCRS = 0x14,
	MS_VMM_SEC_DEBUGREGS = 0x15,
	MS_VMM_SEC_LAPIC = 0x16,
	MS_VMM_SEC_TSC_KHZ = 0x17,
	MS_VMM_SEC_CPUID = 0x18,
	MS_VMM_SEC_MSRS = 0x19,
	MS_VMM_SEC_EVENTS = 0x1a,
	MS_VMM_SEC_PIT2 = 0x20,
	MS_VMM_SEC_CLOCK = 0x21,
	MS_VMM_SEC_IRQCHIPS = 0x22,
	MS_VMM_SEC_DEVICES = 0x23,
	MS_VMM_SEC_LAYOUT = 0x24,
	MS_VMM_SEC_SYSSTACK = 0x25,
};

/* Receives each saved section in order (data valid only during the call). */
typedef int (*ms_vmm_emit_fn)(void *ctx, uint32_t type, const void *data, uint32_t length);
/* Finds a section to restore; NULL when absent. */
typedef const void *(*ms_vmm_find_fn)(void *ctx, uint32_t type, uint32_t *length);

/* Saves everything; every vCPU must be stopped (ms_vmm_stop). */
int ms_vmm_state_save(struct ms_vmm *vmm, ms_vmm_emit_fn emit, void *ctx);
/* Restores into a new VM of the same RAM size and vCPU count, its vCPUs parked. */
int ms_vmm_state_load(struct ms_vmm *vmm, ms_vmm_find_fn find, void *ctx);

#endif
