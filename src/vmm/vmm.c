/*
 * vmm.c - VM and vCPU lifecycle, the vCPU loop, the port-I/O device table
 * (state machine in vmm.h).
 *
 * Threads: one per vCPU runs KVM_RUN; the host thread drives them through
 * vmm->lock and vmm->cond. A kick is immediate_exit = 1 plus a signal
 * (MS_VMM_KICK_SIGNAL, empty handler, no SA_RESTART): whichever comes first,
 * KVM_RUN returns -EINTR without entering the guest again.
 */
#include "vmm/vmm.h"
#include "vmm/boot.h"
#include "util/clock.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MS_VMM_KICK_SIGNAL (SIGRTMIN + 5)

enum ms_vcpu_state { MS_VCPU_PARKED, MS_VCPU_RUNNING, MS_VCPU_REPORTED, MS_VCPU_DEAD };

struct ms_vmm_vcpu {
	struct ms_vmm *vmm;
	unsigned index;
	int fd;
	struct kvm_run *run; /* mmap'd; the vCPU thread's while RUNNING, the host's while parked */
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	/* guarded by vmm->lock */
	enum ms_vcpu_state state;
	bool go;	   /* the host asks the parked thread to enter KVM_RUN */
	bool stop;	   /* the host asks the running thread to park */
	bool io_pending;   /* parked after a port-I/O exit: KVM completes it on the next run */
	uint64_t rax, rdx; /* the last report's values */
};

struct ms_vmm {
	int kvm_fd, vm_fd;
	uint64_t ram_size;
	void *ram;
	uint8_t *sys; /* the system region (bank 1) */
	unsigned nr_vcpus;
	struct ms_vmm_vcpu vcpus[MS_VMM_MAX_VCPUS];
	const struct ms_vmm_port_dev *ports;
	size_t nr_ports;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* any vCPU state change, or a host request */
	bool quit;	     /* guarded by lock: the threads exit */
	bool dead;	     /* guarded by lock */
	char cause[256];     /* guarded by lock; set once with dead */
	uint64_t reports;    /* guarded by lock: the control device's count */
};

static void ms_vmm_kick_handler(int sig)
{
	(void)sig;
}

/* The VM dies: first cause wins. Takes vmm->lock. */
static void ms_vmm_die(struct ms_vmm *vmm, struct ms_vmm_vcpu *vcpu, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ms_vmm_die(struct ms_vmm *vmm, struct ms_vmm_vcpu *vcpu, const char *fmt, ...)
{
	pthread_mutex_lock(&vmm->lock);
	if (!vmm->dead) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(vmm->cause, sizeof(vmm->cause), fmt, ap);
		va_end(ap);
		vmm->dead = true;
	}
	vcpu->state = MS_VCPU_DEAD;
	pthread_cond_broadcast(&vmm->cond);
	pthread_mutex_unlock(&vmm->lock);
}

/* The control device: a report parks the vCPU with the guest's rax and rdx. */
static int ms_vmm_control_io(struct ms_vmm *vmm, struct ms_vmm_vcpu *vcpu, uint16_t port, bool out,
			     void *data, unsigned size)
{
	if (!out) {
		memset(data, 0, size);
		return 0;
	}
	struct kvm_regs regs;
	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs))
		return -errno;
	pthread_mutex_lock(&vmm->lock);
	vcpu->rax = regs.rax;
	vcpu->rdx = regs.rdx;
	vmm->reports++;
	/* with the state, atomically: a stop that sees REPORTED completes the OUT */
	vcpu->io_pending = true;
	vcpu->state = MS_VCPU_REPORTED;
	pthread_cond_broadcast(&vmm->cond);
	pthread_mutex_unlock(&vmm->lock);
	return 1; /* park */
}

/* The exception stubs: the vector, the faulting rip from the CPL0 frame, cr2. */
static int ms_vmm_fault_io(struct ms_vmm *vmm, struct ms_vmm_vcpu *vcpu, uint16_t port, bool out,
			   void *data, unsigned size)
{
	if (!out)
		return 0;
	unsigned vector = *(uint8_t *)data;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint64_t rip = 0, err = 0;
	if (vector == MS_VMM_SYSCALL_MARK && !ioctl(vcpu->fd, KVM_GET_REGS, &regs)) {
		ms_vmm_die(vmm, vcpu, "the guest executed a syscall instruction at rip 0x%llx",
			   (unsigned long long)regs.rcx - 2);
	} else if (!ioctl(vcpu->fd, KVM_GET_REGS, &regs) &&
		   !ioctl(vcpu->fd, KVM_GET_SREGS, &sregs)) {
		uint64_t base = MS_VMM_SYS_BASE(vmm->ram_size);
		uint64_t at = regs.rsp - base;
		if (at < MS_VMM_SYS_SIZE - 16) {
			if (ms_vmm_vector_has_error_code(vector) && at + 16 <= MS_VMM_SYS_SIZE) {
				memcpy(&err, vmm->sys + at, 8);
				at += 8;
			}
			memcpy(&rip, vmm->sys + at, 8);
		}
		if (rip == base + MS_VMM_SYS_SYSCALL) /* PVM jumps to LSTAR still at CPL3 */
			ms_vmm_die(vmm, vcpu,
				   "the guest executed a syscall instruction (at rip 0x%llx)",
				   (unsigned long long)regs.rcx - 2);
		else
			ms_vmm_die(vmm, vcpu,
				   "guest exception %s (vector %u) at rip 0x%llx, error code "
				   "0x%llx, cr2 0x%llx",
				   ms_vmm_vector_name(vector), vector, (unsigned long long)rip,
				   (unsigned long long)err, (unsigned long long)sregs.cr2);
	} else {
		ms_vmm_die(vmm, vcpu, "guest exception %s (vector %u)", ms_vmm_vector_name(vector),
			   vector);
	}
	return 1;
}

static const struct ms_vmm_port_dev ms_vmm_devices[] = {
    {.name = "control", .base = MS_VMM_PORT_CONTROL, .len = 1, .io = ms_vmm_control_io},
    {.name = "fault", .base = MS_VMM_PORT_FAULT, .len = 1, .io = ms_vmm_fault_io},
};

/* 0: continue running; 1: parked or dead (the handler set the state); < 0: dies. */
static int ms_vmm_port_io(struct ms_vmm_vcpu *vcpu)
{
	struct ms_vmm *vmm = vcpu->vmm;
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool out = run->io.direction == KVM_EXIT_IO_OUT;
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		const struct ms_vmm_port_dev *dev = NULL;
		for (size_t d = 0; d < vmm->nr_ports; d++)
			if (run->io.port >= vmm->ports[d].base &&
			    run->io.port - vmm->ports[d].base < vmm->ports[d].len)
				dev = &vmm->ports[d];
		if (!dev) { /* no device: writes vanish, reads float high */
			if (!out)
				memset(data, 0xff, run->io.size);
			continue;
		}
		int r = dev->io(vmm, vcpu, run->io.port, out, data, run->io.size);
		if (r)
			return r;
	}
	return 0;
}

/* One KVM_RUN and its exit; 0 to run again, 1 parked/dead. Called without the lock. */
static int ms_vmm_vcpu_step(struct ms_vmm_vcpu *vcpu)
{
	struct ms_vmm *vmm = vcpu->vmm;
	if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 0; /* a kick: the loop checks for a stop request */
		ms_vmm_die(vmm, vcpu, "KVM_RUN failed: %s", strerror(errno));
		return 1;
	}
	struct kvm_run *run = vcpu->run;
	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		int r = ms_vmm_port_io(vcpu);
		if (r < 0)
			ms_vmm_die(vmm, vcpu, "port 0x%x: %s", run->io.port, strerror(-r));
		return r ? 1 : 0; /* parked by the device (io_pending set with the state) */
	}
	case KVM_EXIT_MMIO:
		if (!run->mmio.is_write)
			memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		return 0;
	case KVM_EXIT_HLT:
		ms_vmm_die(vmm, vcpu, "the guest halted (hlt with interrupts off)");
		return 1;
	case KVM_EXIT_SHUTDOWN:
		ms_vmm_die(vmm, vcpu, "the guest shut down (triple fault)");
		return 1;
	case KVM_EXIT_FAIL_ENTRY:
		ms_vmm_die(vmm, vcpu, "VM entry failed (hardware reason 0x%llx)",
			   (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return 1;
	case KVM_EXIT_INTERNAL_ERROR:
		ms_vmm_die(vmm, vcpu, "KVM internal error (suberror %u)", run->internal.suberror);
		return 1;
	case KVM_EXIT_INTR:
		return 0;
	default:
		ms_vmm_die(vmm, vcpu, "unhandled exit reason %u", run->exit_reason);
		return 1;
	}
}

static void *ms_vmm_vcpu_thread(void *arg)
{
	struct ms_vmm_vcpu *vcpu = arg;
	struct ms_vmm *vmm = vcpu->vmm;
	sigset_t kick;
	sigemptyset(&kick);
	sigaddset(&kick, MS_VMM_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
	pthread_mutex_lock(&vmm->lock);
	for (;;) {
		while (!vmm->quit && !(vcpu->go && vcpu->state != MS_VCPU_DEAD))
			pthread_cond_wait(&vmm->cond, &vmm->lock);
		if (vmm->quit)
			break;
		vcpu->go = false;
		vcpu->io_pending = false;
		vcpu->state = MS_VCPU_RUNNING;
		pthread_cond_broadcast(&vmm->cond);
		while (vcpu->state == MS_VCPU_RUNNING && !vcpu->stop) {
			pthread_mutex_unlock(&vmm->lock);
			int parked = ms_vmm_vcpu_step(vcpu);
			pthread_mutex_lock(&vmm->lock);
			if (parked)
				break;
		}
		if (vcpu->state == MS_VCPU_RUNNING)
			vcpu->state = MS_VCPU_PARKED;
		vcpu->stop = false;
		vcpu->run->immediate_exit = 0;
		pthread_cond_broadcast(&vmm->cond);
	}
	pthread_mutex_unlock(&vmm->lock);
	return NULL;
}

struct kvm_cpuid2 *ms_vmm_cpuid_get(int fd, unsigned long request, int *err)
{
	for (uint32_t nent = 64; nent <= 4096; nent *= 2) {
		struct kvm_cpuid2 *cpuid =
		    calloc(1, sizeof(*cpuid) + nent * sizeof(struct kvm_cpuid_entry2));
		if (!cpuid) {
			*err = -ENOMEM;
			return NULL;
		}
		cpuid->nent = nent;
		if (ioctl(fd, request, cpuid) == 0)
			return cpuid;
		*err = -errno;
		free(cpuid);
		if (*err != -E2BIG)
			return NULL;
	}
	return NULL;
}

static int ms_vmm_set_cpuid(struct ms_vmm *vmm, int vcpu_fd)
{
	int err;
	struct kvm_cpuid2 *cpuid = ms_vmm_cpuid_get(vmm->kvm_fd, KVM_GET_SUPPORTED_CPUID, &err);
	if (!cpuid)
		return err;
	err = ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid) ? -errno : 0;
	free(cpuid);
	return err;
}

static int ms_vmm_memslot(struct ms_vmm *vmm, uint32_t slot, uint64_t gpa, void *host,
			  uint64_t size)
{
	struct kvm_userspace_memory_region region = {.slot = slot,
						     .guest_phys_addr = gpa,
						     .memory_size = size,
						     .userspace_addr = (uint64_t)(uintptr_t)host};
	return ioctl(vmm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) ? -errno : 0;
}

static int ms_vmm_install_kick(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = ms_vmm_kick_handler; /* no SA_RESTART: KVM_RUN returns EINTR */
	sigemptyset(&sa.sa_mask);
	return sigaction(MS_VMM_KICK_SIGNAL, &sa, NULL) ? -errno : 0;
}

int ms_vmm_new(const struct ms_vmm_config *config, struct ms_vmm **out)
{
	if (!config->ram || config->ram_size < (64u << 10) || config->ram_size % 4096 ||
	    config->ram_size > MS_VMM_MAX_RAM || config->vcpus < 1 ||
	    config->vcpus > MS_VMM_MAX_VCPUS)
		return -EINVAL;
	struct ms_vmm *vmm = calloc(1, sizeof(*vmm));
	if (!vmm)
		return -ENOMEM;
	int err;
	vmm->vm_fd = -1;
	vmm->ram = config->ram;
	vmm->ram_size = config->ram_size;
	vmm->ports = ms_vmm_devices;
	vmm->nr_ports = sizeof(ms_vmm_devices) / sizeof(ms_vmm_devices[0]);
	pthread_mutex_init(&vmm->lock, NULL);
	pthread_condattr_t attr; /* timed waits on CLOCK_MONOTONIC (ms_clock_deadline) */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&vmm->cond, &attr);
	pthread_condattr_destroy(&attr);
	for (unsigned i = 0; i < MS_VMM_MAX_VCPUS; i++)
		vmm->vcpus[i].fd = -1;
	if ((vmm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0) {
		err = errno == ENOENT || errno == ENXIO || errno == EACCES ? -ENODEV : -errno;
		goto fail;
	}
	if (ioctl(vmm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		err = -ENODEV;
		goto fail;
	}
	if ((vmm->vm_fd = ioctl(vmm->kvm_fd, KVM_CREATE_VM, 0)) < 0 ||
	    ioctl(vmm->vm_fd, KVM_CREATE_IRQCHIP, 0)) {
		err = -errno;
		goto fail;
	}
	struct kvm_pit_config pit = {.flags = 0};
	if (ioctl(vmm->vm_fd, KVM_CREATE_PIT2, &pit)) {
		err = -errno;
		goto fail;
	}
	vmm->sys = mmap(NULL, MS_VMM_SYS_SIZE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vmm->sys == MAP_FAILED) {
		vmm->sys = NULL;
		err = -errno;
		goto fail;
	}
	ms_vmm_sys_build(vmm->sys, vmm->ram_size);
	if ((err = ms_vmm_memslot(vmm, 0, 0, vmm->ram, vmm->ram_size)) ||
	    (err =
		 ms_vmm_memslot(vmm, 1, MS_VMM_SYS_BASE(vmm->ram_size), vmm->sys, MS_VMM_SYS_SIZE)))
		goto fail;
	int run_size = ioctl(vmm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0 || (err = ms_vmm_install_kick())) {
		err = run_size <= 0 ? -errno : err;
		goto fail;
	}
	for (unsigned i = 0; i < config->vcpus; i++) {
		struct ms_vmm_vcpu *vcpu = &vmm->vcpus[i];
		vcpu->vmm = vmm;
		vcpu->index = i;
		if ((vcpu->fd = ioctl(vmm->vm_fd, KVM_CREATE_VCPU, i)) < 0) {
			err = -errno;
			goto fail;
		}
		vmm->nr_vcpus = i + 1;
		vcpu->run_size = (size_t)run_size;
		vcpu->run =
		    mmap(NULL, vcpu->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
		if (vcpu->run == MAP_FAILED) {
			vcpu->run = NULL;
			err = -errno;
			goto fail;
		}
		if ((err = ms_vmm_set_cpuid(vmm, vcpu->fd)))
			goto fail;
		if ((err = pthread_create(&vcpu->thread, NULL, ms_vmm_vcpu_thread, vcpu))) {
			err = -err;
			goto fail;
		}
		vcpu->thread_started = true;
	}
	*out = vmm;
	return 0;
fail:
	ms_vmm_free(vmm);
	return err;
}

void ms_vmm_free(struct ms_vmm *vmm)
{
	if (!vmm)
		return;
	ms_vmm_stop(vmm);
	pthread_mutex_lock(&vmm->lock);
	vmm->quit = true;
	pthread_cond_broadcast(&vmm->cond);
	pthread_mutex_unlock(&vmm->lock);
	for (unsigned i = 0; i < vmm->nr_vcpus; i++) {
		struct ms_vmm_vcpu *vcpu = &vmm->vcpus[i];
		if (vcpu->thread_started)
			pthread_join(vcpu->thread, NULL);
		if (vcpu->run)
			munmap(vcpu->run, vcpu->run_size);
		if (vcpu->fd >= 0)
			close(vcpu->fd);
	}
	if (vmm->vm_fd >= 0)
		close(vmm->vm_fd);
	if (vmm->kvm_fd >= 0)
		close(vmm->kvm_fd);
	if (vmm->sys)
		munmap(vmm->sys, MS_VMM_SYS_SIZE);
	pthread_cond_destroy(&vmm->cond);
	pthread_mutex_destroy(&vmm->lock);
	free(vmm);
}

int ms_vmm_boot(struct ms_vmm *vmm, uint64_t entry, uint64_t stack)
{
	for (unsigned i = 0; i < vmm->nr_vcpus; i++) {
		struct kvm_sregs sregs;
		struct kvm_regs regs;
		int fd = vmm->vcpus[i].fd;
		if (ioctl(fd, KVM_GET_SREGS, &sregs))
			return -errno;
		ms_vmm_boot_state(vmm->ram_size, entry, stack, &sregs, &regs);
		if (ioctl(fd, KVM_SET_SREGS, &sregs) || ioctl(fd, KVM_SET_REGS, &regs))
			return -errno;
		struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + 3 * sizeof(struct kvm_msr_entry));
		if (!msrs)
			return -ENOMEM;
		msrs->nmsrs = 3;
		ms_vmm_boot_msrs(vmm->ram_size, msrs->entries);
		int set = ioctl(fd, KVM_SET_MSRS, msrs);
		free(msrs);
		if (set != 3)
			return -EIO;
	}
	return 0;
}

int ms_vmm_resume(struct ms_vmm *vmm)
{
	pthread_mutex_lock(&vmm->lock);
	int err = vmm->dead ? -ECHILD : 0;
	for (unsigned i = 0; !err && i < vmm->nr_vcpus; i++) {
		struct ms_vmm_vcpu *vcpu = &vmm->vcpus[i];
		if (vcpu->state == MS_VCPU_PARKED || vcpu->state == MS_VCPU_REPORTED)
			vcpu->go = true;
	}
	pthread_cond_broadcast(&vmm->cond);
	/* wait until each is running: a report seen after this is a new one */
	for (unsigned i = 0; !err && i < vmm->nr_vcpus; i++)
		while (vmm->vcpus[i].go)
			pthread_cond_wait(&vmm->cond, &vmm->lock);
	pthread_mutex_unlock(&vmm->lock);
	return err;
}

int ms_vmm_wait_report(struct ms_vmm *vmm, int64_t timeout_ns, uint64_t *rax, uint64_t *rdx)
{
	struct timespec deadline = ms_clock_deadline(timeout_ns);
	struct ms_vmm_vcpu *vcpu = &vmm->vcpus[0];
	int err = 0;
	pthread_mutex_lock(&vmm->lock);
	while (!vmm->dead && vcpu->state != MS_VCPU_REPORTED && !err)
		if (pthread_cond_timedwait(&vmm->cond, &vmm->lock, &deadline) == ETIMEDOUT)
			err = -ETIMEDOUT;
	if (vcpu->state == MS_VCPU_REPORTED) {
		err = 0;
		*rax = vcpu->rax;
		*rdx = vcpu->rdx;
	} else if (vmm->dead) {
		err = -ECHILD;
	}
	pthread_mutex_unlock(&vmm->lock);
	return err;
}

int ms_vmm_stop(struct ms_vmm *vmm)
{
	pthread_mutex_lock(&vmm->lock);
	for (unsigned i = 0; i < vmm->nr_vcpus; i++) {
		struct ms_vmm_vcpu *vcpu = &vmm->vcpus[i];
		while (vcpu->go) /* a resume in flight: let it start first */
			pthread_cond_wait(&vmm->cond, &vmm->lock);
		if (vcpu->state != MS_VCPU_RUNNING)
			continue;
		vcpu->stop = true;
		vcpu->run->immediate_exit = 1;
		pthread_kill(vcpu->thread, MS_VMM_KICK_SIGNAL);
		while (vcpu->state == MS_VCPU_RUNNING) {
			struct timespec soon = ms_clock_deadline(1000000);
			/* re-kick: the signal may have landed just before KVM_RUN */
			if (pthread_cond_timedwait(&vmm->cond, &vmm->lock, &soon) == ETIMEDOUT)
				pthread_kill(vcpu->thread, MS_VMM_KICK_SIGNAL);
		}
	}
	/* complete pending port I/O (the rip moves past the OUT) without running the guest */
	int err = 0;
	for (unsigned i = 0; i < vmm->nr_vcpus; i++) {
		struct ms_vmm_vcpu *vcpu = &vmm->vcpus[i];
		if (!vcpu->io_pending || vcpu->state == MS_VCPU_DEAD)
			continue;
		vcpu->run->immediate_exit = 1;
		if (ioctl(vcpu->fd, KVM_RUN, 0) == 0 || errno != EINTR)
			err = -EIO;
		vcpu->run->immediate_exit = 0;
		vcpu->io_pending = false;
	}
	pthread_mutex_unlock(&vmm->lock);
	return err;
}

const char *ms_vmm_death_cause(struct ms_vmm *vmm)
{
	pthread_mutex_lock(&vmm->lock);
	const char *cause = vmm->dead ? vmm->cause : "";
	pthread_mutex_unlock(&vmm->lock);
	return cause;
}

int ms_vmm_kvm_fd(struct ms_vmm *vmm)
{
	return vmm->kvm_fd;
}

int ms_vmm_vm_fd(struct ms_vmm *vmm)
{
	return vmm->vm_fd;
}

unsigned ms_vmm_vcpu_count(struct ms_vmm *vmm)
{
	return vmm->nr_vcpus;
}

int ms_vmm_vcpu_fd(struct ms_vmm *vmm, unsigned index)
{
	return index < vmm->nr_vcpus ? vmm->vcpus[index].fd : -1;
}

uint8_t *ms_vmm_sys_stack(struct ms_vmm *vmm)
{
	return vmm->sys + MS_VMM_SYS_STACK;
}

void ms_vmm_devices_save(struct ms_vmm *vmm, uint64_t out[2])
{
	pthread_mutex_lock(&vmm->lock);
	out[0] = 1; /* device state version */
	out[1] = vmm->reports;
	pthread_mutex_unlock(&vmm->lock);
}

void ms_vmm_devices_load(struct ms_vmm *vmm, const uint64_t in[2])
{
	pthread_mutex_lock(&vmm->lock);
	vmm->reports = in[1];
	pthread_mutex_unlock(&vmm->lock);
}
