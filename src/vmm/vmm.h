/*
 * vmm.h - a small kvmtool-shaped VMM: one struct holds the KVM fds, the memory
 * banks and the vCPUs; each vCPU thread runs a loop that is one switch on the
 * exit reason; devices are a table of port-I/O handlers.
 *
 * vCPU states (guarded by ms_vmm.lock; the vCPU thread and the host both move them):
 *
 *   PARKED ──ms_vmm_resume──▶ RUNNING ──OUT to the control port──▶ REPORTED (parked)
 *     ▲                          │ │                                   │
 *     └──ms_vmm_stop (kick)──────┘ └──exception, shutdown, entry fail──┴─▶ DEAD (cause kept)
 *
 * A parked vCPU is outside KVM_RUN: the host may issue its state ioctls (the
 * snapfile code does) while holding no vCPU thread hostage. Before state is
 * saved, ms_vmm_stop completes a pending port I/O with one KVM_RUN under
 * immediate_exit (KVM's rule), so the saved rip is past the OUT.
 *
 * Memory: bank 0 is guest RAM at guest-physical 0 (the caller's mapping, a
 * memfd mapped MAP_SHARED, so a pause hands the memfd over); bank 1 is the
 * VMM's system region right after RAM (page tables, GDT, IDT, TSS, the
 * exception stubs, the CPL0 stack), rebuilt from the RAM size on restore.
 *
 * Guest ABI (guest.h): the guest runs at CPL3 in 64-bit mode with RAM identity
 * mapped (user, 2 MiB pages), EFER.SCE off (a `syscall` is #UD). It reports with
 * `int3`: #BP has a DPL-3 gate into a CPL0 stub that does
 * `out %al, $MS_VMM_PORT_CONTROL; iretq`. (PVM runs CPL3 natively and lets it
 * do no port I/O, even with IOPL 3: an OUT at CPL3 is #GP here; and `int $n`
 * from CPL3 is #UD here, while exceptions are delivered through the IDT.) An
 * exception enters a CPL0 stub that writes its vector to MS_VMM_PORT_FAULT.
 * Work at CPL3 runs at native speed under PVM; CPL0 is emulated (measured: see the README),
 * so the guests enter it only to report.
 */
#ifndef MS_VMM_VMM_H
#define MS_VMM_VMM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_VMM_MAX_VCPUS    4
#define MS_VMM_MAX_RAM	    (32ULL << 30)
#define MS_VMM_PORT_CONTROL 0xf4 /* the guests' reports: rax, rdx */
#define MS_VMM_PORT_FAULT   0xf5 /* the exception stubs: the vector */

struct ms_vmm;
struct ms_vmm_vcpu;

/* A port-I/O device: handles [base, base + len). data holds size bytes. */
struct ms_vmm_port_dev {
	const char *name;
	uint16_t base, len;
	/* 0, or a negative errno that kills the VM */
	int (*io)(struct ms_vmm *vmm, struct ms_vmm_vcpu *vcpu, uint16_t port, bool out, void *data,
		  unsigned size);
};

struct ms_vmm_config {
	void *ram;	   /* the guest RAM mapping (page aligned), bank 0 at GPA 0 */
	uint64_t ram_size; /* bytes, a multiple of 4 KiB, at most MS_VMM_MAX_RAM */
	unsigned vcpus;	   /* 1..MS_VMM_MAX_VCPUS */
};

/*
 * Creates the VM: KVM fds, in-kernel irqchip and PIT, both memory banks, the
 * vCPUs (CPUID from KVM_GET_SUPPORTED_CPUID) and their threads, all parked.
 * -ENODEV when /dev/kvm does not open, -EINVAL for a bad config.
 */
int ms_vmm_new(const struct ms_vmm_config *config, struct ms_vmm **out);
/* Stops and joins the vCPU threads, closes every fd, unmaps the system region. */
void ms_vmm_free(struct ms_vmm *vmm);

/* Sets a fresh boot state on every vCPU: rip = entry, rdi = 0 (RAM base), rsp = stack. */
int ms_vmm_boot(struct ms_vmm *vmm, uint64_t entry, uint64_t stack);
/* Lets every parked (or reported) vCPU run. */
int ms_vmm_resume(struct ms_vmm *vmm);
/*
 * Waits until vCPU 0 reports: 0 with its rax/rdx, -ETIMEDOUT (it keeps
 * running), or -ECHILD when the VM died (ms_vmm_death_cause).
 */
int ms_vmm_wait_report(struct ms_vmm *vmm, int64_t timeout_ns, uint64_t *rax, uint64_t *rdx);
/* Parks every vCPU (kicking the running ones) and completes pending I/O. */
int ms_vmm_stop(struct ms_vmm *vmm);
const char *ms_vmm_death_cause(struct ms_vmm *vmm);

/* For the state code: the fds, with every vCPU parked. */
int ms_vmm_kvm_fd(struct ms_vmm *vmm);
int ms_vmm_vm_fd(struct ms_vmm *vmm);
unsigned ms_vmm_vcpu_count(struct ms_vmm *vmm);
int ms_vmm_vcpu_fd(struct ms_vmm *vmm, unsigned index);
/*
 * A CPUID table from request (KVM_GET_SUPPORTED_CPUID on the /dev/kvm fd, or
 * KVM_GET_CPUID2 on a vCPU fd), sized as needed; malloc'd, or NULL with *err.
 */
struct kvm_cpuid2 *ms_vmm_cpuid_get(int fd, unsigned long request, int *err);
/* The system region's CPL0 stack page (4 KiB): saved with the state. */
uint8_t *ms_vmm_sys_stack(struct ms_vmm *vmm);
/* The device state blob (the control device's counters): save, and restore. */
void ms_vmm_devices_save(struct ms_vmm *vmm, uint64_t out[2]);
void ms_vmm_devices_load(struct ms_vmm *vmm, const uint64_t in[2]);

#endif
