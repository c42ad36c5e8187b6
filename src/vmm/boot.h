/*
 * boot.h - the VMM's system region and the 64-bit CPL3 boot state.
 *
 * The system region (MS_VMM_SYS_SIZE bytes, guest-physical MS_VMM_SYS_BASE(ram),
 * identity mapped supervisor-only) holds what the CPU needs and the guest must
 * not touch. It is a pure function of the RAM size, so a restore rebuilds it
 * instead of saving it:
 *
 *   offset    size     content
 *   0x00000   56       GDT: null, kernel code 0x08, kernel data 0x10,
 *                      user data 0x1b, user code 0x23, 64-bit TSS 0x28 (16 bytes)
 *   0x00100   104      TSS (rsp0 = top of the region; no I/O bitmap)
 *   0x01000   4096     IDT: vectors 0-31 -> the exception stubs (interrupt gates, DPL 0),
 *                      but #BP -> the report stub (DPL 3: the guest's int3 from CPL3)
 *   0x02000   32 x 16  exception stubs: mov $vector,%al; out %al,$0xf5; 1: hlt; jmp 1b
 *   0x02200   4        report stub: out %al,$0xf4; iretq
 *   0x02300   7        syscall stub (LSTAR): mov $0xfe,%al; out %al,$0xf5; 1: hlt; jmp 1b
 *                      (EFER.SCE is off, so `syscall` is #UD; should a KVM deliver it
 *                      anyway, it still ends the guest, reported as a syscall)
 *   0x03000   4096     PML4
 *   0x04000   4096     PDPT
 *   0x05000   4096     PT for RAM's last partial 2 MiB (4 KiB user pages)
 *   0x06000   N x 4096 PDs, one per GiB of [0, MS_VMM_SYS_BASE + MS_VMM_SYS_SIZE)
 *   0x1ff000  4096     CPL0 stack (the last page), growing down from the end of the
 *                      region: the one mutable part, saved in the snapfile (a vCPU
 *                      stopped at a report is inside the report stub, its iret
 *                      frame on this stack)
 *
 * Guest RAM [0, ram) is mapped user read/write/execute (2 MiB pages, 4 KiB for
 * a partial tail); nothing else is mapped but the system region.
 */
#ifndef MS_VMM_BOOT_H
#define MS_VMM_BOOT_H

#include <linux/kvm.h>
#include <stdint.h>

#define MS_VMM_SYS_SIZE	     (2ULL << 20)
#define MS_VMM_SYS_BASE(ram) (((ram) + MS_VMM_SYS_SIZE - 1) & ~(MS_VMM_SYS_SIZE - 1))
#define MS_VMM_SYS_GDT	     0x0000
#define MS_VMM_SYS_TSS	     0x0100
#define MS_VMM_SYS_IDT	     0x1000
#define MS_VMM_SYS_STUBS     0x2000
#define MS_VMM_SYS_REPORT    0x2200
#define MS_VMM_SYS_SYSCALL   0x2300
#define MS_VMM_SYS_STACK     (MS_VMM_SYS_SIZE - 4096)
#define MS_VMM_SYSCALL_MARK  0xfe /* the syscall stub's value on the fault port */
#define MS_VMM_REPORT_VECTOR 3	  /* #BP: the guest's int3 */
#define MS_VMM_SYS_PML4	     0x3000
#define MS_VMM_SYS_PDPT	     0x4000
#define MS_VMM_SYS_PT	     0x5000
#define MS_VMM_SYS_PD	     0x6000

#define MS_VMM_SEL_KCODE 0x08
#define MS_VMM_SEL_KDATA 0x10
#define MS_VMM_SEL_UDATA 0x1b
#define MS_VMM_SEL_UCODE 0x23
#define MS_VMM_SEL_TSS	 0x28

/* The MSRs of the boot state: STAR, LSTAR (the syscall stub), SFMASK. */
void ms_vmm_boot_msrs(uint64_t ram_size, struct kvm_msr_entry entries[3]);
/* Fills the system region sys (MS_VMM_SYS_SIZE bytes, zeroed) for ram_size bytes of RAM. */
void ms_vmm_sys_build(uint8_t *sys, uint64_t ram_size);
/* The boot state: sregs (started from KVM's defaults in *sregs) and regs. */
void ms_vmm_boot_state(uint64_t ram_size, uint64_t entry, uint64_t stack, struct kvm_sregs *sregs,
		       struct kvm_regs *regs);
/* Whether the exception with this vector pushes an error code. */
int ms_vmm_vector_has_error_code(unsigned vector);
/* "#PF" and the like; "vector N" past 31. */
const char *ms_vmm_vector_name(unsigned vector);

#endif
