/*
 * proc.c - the process sandbox: fork, fixed-address memfd RAM, userfaultfd
 * write-protect (async or sync: memory.h), strict seccomp (or its equal as a
 * filter where a filter is already in force), ptrace (state
 * machine in proc.h).
 *
 * Child, before it runs guest code: map RAM, create and register the uffd,
 * send it to the host over a socketpair, close every fd, unmap everything but
 * RAM and one page of its own (the shed, proc_shed.S), enter strict seccomp,
 * spin. Host: write-protect RAM, load the guest, seize, interrupt,
 * set registers (rip, rdi = RAM base, rsp = top of RAM, orig_rax = -1 so no
 * syscall restart moves rip), continue.
 */
#include "sandbox/proc.h"
#include "sandbox/memory.h"
#include "sandbox/snapfile.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <elf.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

struct ms_proc {
	pid_t pid;
	int memfd;
	int uffd;	    /* the sandbox's uffd, received over SCM_RIGHTS */
	int handshake_sock; /* lazy: the page server's connection, open while the sandbox lives */
	struct ms_wtracker wt; /* the written-page tracker (memory.h), async or sync */
	uint8_t *ram;	       /* host mapping */
	uint64_t size;
	bool stopped;			 /* at a report (or interrupt) stop */
	struct ms_pageset *host_written; /* pages the host wrote (the loaded image): unseen by the
					    tracker, part of the next pause */
	bool dead;
	bool host_gated; /* lazy: the host view is PROT_NONE until the first report */
	char cause[160];
	uint32_t guest; /* enum ms_guest_kind, recorded in the snapfile */
};

/*
 * The seal's filter, for where the kernel refuses strict seccomp (EINVAL) to a process
 * that already has a filter - memsnapd under a systemd unit with LockPersonality=,
 * RestrictAddressFamilies= and the like, or in a container whose manager installs one:
 * the calls strict mode allows (read, write, exit and rt_sigreturn), anything else kills
 * the process (SIGSYS). Strict mode kills with SIGKILL. The shed (below) installs it,
 * no_new_privs first, as the kernel requires without CAP_SYS_ADMIN.
 */
#define MS_PROC_FILTER_LEN 10
static void ms_proc_filter(struct sock_filter out[MS_PROC_FILTER_LEN])
{
	const struct sock_filter insns[MS_PROC_FILTER_LEN] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_read, 4, 0),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_write, 3, 0),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit, 2, 0),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigreturn, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	memcpy(out, insns, sizeof(insns));
}

/*
 * The shed (proc_shed.S): the child's last code before the guest's. A fork without exec
 * leaves the child the whole node - its code, heap and stacks, with the store's
 * credentials and the fleet's keys, and the live MAP_SHARED RAM of every other sandbox -
 * where a guest could read it into its own RAM, and so into its snapshot. It also keeps
 * the node's private pages shared copy-on-write for the sandbox's life, so each first
 * write of the node to one is a fault and a copy. The shed unmaps all of it but guest RAM
 * and its own page, then seals the process. Its arguments share its page:
 */
struct ms_proc_shed_args {
	uint64_t nranges;
	const struct sock_fprog *prog;
	uint64_t ranges[3][2]; /* {start, len}: the address space around RAM and the page */
	struct sock_fprog fprog;
	struct sock_filter insns[MS_PROC_FILTER_LEN];
};

extern const uint8_t ms_proc_shed_start[], ms_proc_shed_end[];

#define MS_PROC_SHED_ARGS 2048 /* the arguments' offset in the shed's page */

/*
 * The end of the highest mapping below the kernel's half (the vsyscall page's), or 0.
 * Only the first two fields of each line count, so the file is parsed byte by byte: no
 * line buffer, and no malloc (this runs in the child of a multi-threaded fork).
 */
static uint64_t ms_proc_maps_top(void)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[4096];
	uint64_t top = 0, start = 0, end = 0;
	int field = 0; /* 0: start, 1: end, 2: the rest of the line */
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			char c = buf[i];
			if (c == '\n') {
				if (start < (1ull << 56) && end > top)
					top = end;
				start = end = 0;
				field = 0;
			} else if (field < 2 && (c == '-' || c == ' ')) {
				field++;
			} else if (field < 2) {
				uint64_t digit = c <= '9' ? (uint64_t)(c - '0')
							  : (uint64_t)((c | 32) - 'a' + 10);
				if (field == 0)
					start = start << 4 | digit;
				else
					end = end << 4 | digit;
			}
		}
	}
	close(fd);
	return top;
}

/* Sheds the node and seals the process (proc_shed.S); returns only if it could not start. */
static void ms_proc_shed(uint64_t ram_size)
{
	size_t code_len = (size_t)(ms_proc_shed_end - ms_proc_shed_start);
	if (code_len > MS_PROC_SHED_ARGS ||
	    MS_PROC_SHED_ARGS + sizeof(struct ms_proc_shed_args) > 4096)
		return;
	uint8_t *page =
	    mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return;
	memcpy(page, ms_proc_shed_start, code_len);
	struct ms_proc_shed_args *a = (struct ms_proc_shed_args *)(page + MS_PROC_SHED_ARGS);
	ms_proc_filter(a->insns);
	a->fprog = (struct sock_fprog){.len = MS_PROC_FILTER_LEN, .filter = a->insns};
	a->prog = &a->fprog;
	uint64_t top = ms_proc_maps_top();
	/* what stays, in address order: guest RAM and this page */
	uint64_t ram[2] = {MS_PROC_RAM_BASE, MS_PROC_RAM_BASE + ram_size};
	uint64_t own[2] = {(uint64_t)(uintptr_t)page, (uint64_t)(uintptr_t)page + 4096};
	const uint64_t *keep[2] = {ram, own};
	if (own[0] < ram[0]) {
		keep[0] = own;
		keep[1] = ram;
	}
	if (top < keep[1][1])
		return;
	/* what goes: below the first, between the two, above the second */
	uint64_t bounds[3][2] = {{0, keep[0][0]}, {keep[0][1], keep[1][0]}, {keep[1][1], top}};
	a->nranges = 0;
	for (int i = 0; i < 3; i++) {
		if (bounds[i][1] <= bounds[i][0])
			continue;
		a->ranges[a->nranges][0] = bounds[i][0];
		a->ranges[a->nranges][1] = bounds[i][1] - bounds[i][0];
		a->nranges++;
	}
	if (mprotect(page, 4096, PROT_READ | PROT_EXEC))
		return;
	/* no handler of the node's may run in the guest's process (its code is gone) */
	struct {
		void *handler;
		unsigned long flags;
		void *restorer;
		uint64_t mask;
	} dfl = {.handler = SIG_DFL};
	for (int sig = 1; sig < 65; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
	/*
	 * glibc registered this thread's rseq area (in its TLS, which goes): the kernel would
	 * write it on the next return to user space and kill the process for the fault.
	 */
	if (__rseq_size > 0) {
		char *tp;
		__asm__("movq %%fs:0, %0" : "=r"(tp));
		if (syscall(SYS_rseq, tp + __rseq_offset, __rseq_size, RSEQ_FLAG_UNREGISTER,
			    RSEQ_SIG) &&
		    syscall(SYS_rseq, tp + __rseq_offset, 32, RSEQ_FLAG_UNREGISTER, RSEQ_SIG))
			return;
	}
	syscall(SYS_close_range, 0, ~0U, 0);
	((void (*)(struct ms_proc_shed_args *))(void *)page)(a);
}

static const uint8_t ms_proc_stub[] = {0xcc, 0x41, 0xff, 0xe3}; /* int3; jmp *%r11 */

/*
 * The child side; never returns. With lazy_socket, the uffd also registers
 * MISSING and goes to the page server with Firecracker's handshake: connect,
 * one sendmsg of the JSON region list with the uffd and the memfd. The child
 * then drops every fd and every mapping but RAM before it seals itself, but the handshake's socket
 * must stay open as long as the sandbox lives (Firecracker never closes it, and a handler may take
 * a hang-up for the VMM's exit): it goes to the host with the uffd, and the host closes it when it
 * destroys the sandbox.
 */
static void ms_proc_child(int memfd, uint64_t size, int sock, const char *lazy_socket,
			  enum ms_tracker_mode mode)
{
	void *ram = mmap((void *)MS_PROC_RAM_BASE, size, PROT_READ | PROT_WRITE | PROT_EXEC,
			 MAP_SHARED | MAP_FIXED_NOREPLACE, memfd, 0);
	if (ram != (void *)MS_PROC_RAM_BASE)
		_exit(10);
	int fds[2] = {ms_guestmem_uffd(MS_PROC_RAM_BASE, size, lazy_socket != NULL, mode), -1};
	if (fds[0] < 0)
		_exit(11);
	if (lazy_socket && (fds[1] = ms_guestmem_handshake(lazy_socket, MS_PROC_RAM_BASE, size,
							   fds[0], memfd)) < 0)
		_exit(16);
	/* the host gets its copies; ours are closed with the rest below */
	char byte = 0;
	if (ms_guestmem_send_fds(sock, &byte, 1, fds, lazy_socket ? 2 : 1))
		_exit(13);
	/* wait until the host has the fds, then hold no fd at all */
	if (read(sock, &byte, 1) != 1)
		_exit(14);
	ms_proc_shed(size);
	_exit(15);
}

/* Receives want (1 or 2) fds from the child: 0, or a negative errno. */
static int ms_proc_recv_fds(int sock, int *fds, int want)
{
	char byte, control[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control)};
	if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1)
		return -EIO;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN((size_t)want * sizeof(int))) {
		if (c && c->cmsg_type == SCM_RIGHTS) /* close whatever did come */
			for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				close(fd);
			}
		return -EPROTO;
	}
	memcpy(fds, CMSG_DATA(c), (size_t)want * sizeof(int));
	return 0;
}

static void ms_proc_note_death(struct ms_proc *p, int status)
{
	p->dead = true;
	p->stopped = false;
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
		snprintf(p->cause, sizeof(p->cause),
			 "killed by SIGKILL (a guest syscall under strict seccomp, or killed)");
	else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		snprintf(p->cause, sizeof(p->cause),
			 "killed by SIGSYS (a guest syscall under the seccomp filter)");
	else if (WIFSIGNALED(status))
		snprintf(p->cause, sizeof(p->cause), "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(p->cause, sizeof(p->cause), "exited with status %d", WEXITSTATUS(status));
}

/* Waits for the next stop; true with the stop signal, false when the sandbox died. */
static int ms_proc_waitstop(struct ms_proc *p, int64_t timeout_ns, int *stopsig, int *event)
{
	int64_t deadline = ms_clock_now_ns() + timeout_ns;
	for (;;) {
		int status;
		pid_t r = waitpid(p->pid, &status, WNOHANG | __WALL);
		if (r < 0)
			return -errno;
		if (r == p->pid) {
			if (WIFEXITED(status) || WIFSIGNALED(status)) {
				ms_proc_note_death(p, status);
				return -ECHILD;
			}
			if (WIFSTOPPED(status)) {
				*stopsig = WSTOPSIG(status);
				*event = status >> 16;
				p->stopped = true;
				return 0;
			}
		}
		if (ms_clock_now_ns() > deadline)
			return -ETIMEDOUT;
		ms_clock_sleep_ns(200000);
	}
}

int ms_proc_wait_report(struct ms_proc *p, int64_t timeout_ns)
{
	if (p->dead)
		return -ECHILD;
	for (;;) {
		int sig, event;
		int err = ms_proc_waitstop(p, timeout_ns, &sig, &event);
		if (err)
			return err;
		if (sig == SIGTRAP && event == 0) {
			/*
			 * The report stub's int3. The guest's results are in rax and rdx:
			 * copy them into the mailbox through our mapping, which the
			 * written-page tracker does not see (a report writes no guest RAM).
			 */
			struct user_regs_struct regs;
			if (ptrace(PTRACE_GETREGS, p->pid, 0, &regs))
				return -errno;
			if (p->host_gated) { /* the stub ran: the mailbox page is installed */
				if (mprotect(p->ram, p->size, PROT_READ | PROT_WRITE))
					return -errno;
				p->host_gated = false;
			}
			uint64_t *box = (uint64_t *)p->ram;
			box[MS_GUEST_RESULT0 / 8] = regs.rax;
			box[MS_GUEST_RESULT1 / 8] = regs.rdx;
			box[MS_GUEST_REPORTS / 8]++;
			return 0;
		}
		/* any other stop: pass a real signal on, swallow group/interrupt stops */
		p->stopped = false;
		if (ptrace(PTRACE_CONT, p->pid, 0, event ? 0 : sig))
			return -errno;
	}
}

int ms_proc_continue(struct ms_proc *p)
{
	if (p->dead)
		return -ECHILD;
	if (!p->stopped)
		return -EINVAL;
	if (ptrace(PTRACE_CONT, p->pid, 0, 0))
		return -errno;
	p->stopped = false;
	return 0;
}

int ms_proc_written_pages(struct ms_proc *p, bool reset, struct ms_pageset **out)
{
	struct ms_pageset *set = ms_pageset_new();
	if (!set)
		return -ENOMEM;
	int err = ms_wtracker_scan(&p->wt, reset, set);
	if (err) {
		ms_pageset_free(set);
		return err;
	}
	if (p->host_written) {
		ms_pageset_union(set, p->host_written);
		if (reset)
			ms_pageset_clear(p->host_written);
	}
	*out = set;
	return 0;
}

/* The number after "\nNAME:\t" in a /proc/PID/status text, or -1. */
static long ms_proc_status_field(const char *buf, const char *name)
{
	char key[32];
	snprintf(key, sizeof(key), "\n%s:\t", name);
	const char *at = strstr(buf, key);
	return at ? strtol(at + strlen(key), NULL, 10) : -1;
}

/* Reads /proc/PID/status (or /proc/self/status for pid 0) into buf: 0 or -errno. */
static int ms_proc_read_status(pid_t pid, char *buf, size_t cap)
{
	char path[64];
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/status");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return 0;
}

/*
 * Waits (bounded) until the child's /proc/PID/status shows it sealed: "Seccomp: 1"
 * (strict mode), or, where this process already runs under a seccomp filter
 * (ms_proc_seal), "Seccomp: 2" with one filter more than this process has.
 */
static int ms_proc_wait_sealed(struct ms_proc *p)
{
	char buf[4096];
	int err = ms_proc_read_status(0, buf, sizeof(buf));
	if (err)
		return err;
	long own_mode = ms_proc_status_field(buf, "Seccomp");
	long own_filters = ms_proc_status_field(buf, "Seccomp_filters");
	for (int i = 0; i < 5000; i++) {
		if ((err = ms_proc_read_status(p->pid, buf, sizeof(buf))))
			return err;
		long mode = ms_proc_status_field(buf, "Seccomp");
		bool sealed = own_mode == 2 ? mode == 2 && own_filters >= 0 &&
						  ms_proc_status_field(buf, "Seccomp_filters") ==
						      own_filters + 1
					    : mode == 1;
		if (sealed) {
			/*
			 * Seccomp seals one thread; a second thread (a sanitizer's
			 * background thread after fork) would stay free, and a guest
			 * syscall would kill only the guest's thread.
			 */
			if (ms_proc_status_field(buf, "Threads") != 1) {
				ms_err("sandbox", "the sandbox process has more than one "
						  "thread (a sanitizer runtime?): it cannot "
						  "be sealed");
				return -EPERM;
			}
			return 0;
		}
		int status;
		if (waitpid(p->pid, &status, WNOHANG | __WALL) == p->pid &&
		    (WIFEXITED(status) || WIFSIGNALED(status))) {
			ms_proc_note_death(p, status);
			return -ECHILD;
		}
		ms_clock_sleep_ns(200000);
	}
	return -ETIMEDOUT;
}

/*
 * Creates the sandbox process over p->memfd (already sized and, unless lazy,
 * filled), receives its uffd, seizes it and stops it: ready for registers.
 */
static int ms_proc_spawn(struct ms_proc *p, const char *lazy_socket)
{
	int sv[2] = {-1, -1}, err;
	/* sync, lazy: the page server learns whose writes it records before the handshake */
	if (lazy_socket && (err = ms_wtracker_publish(&p->wt, p->memfd)))
		return err;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	p->pid = fork();
	if (p->pid < 0) {
		err = -errno;
		goto out;
	}
	if (p->pid == 0) {
		close(sv[0]);
		ms_proc_child(p->memfd, p->size, sv[1], lazy_socket, p->wt.mode);
	}
	close(sv[1]);
	sv[1] = -1;
	int fds[2] = {-1, -1};
	if ((err = ms_proc_recv_fds(sv[0], fds, lazy_socket ? 2 : 1)))
		goto out;
	p->uffd = fds[0];
	p->handshake_sock = fds[1];
	if (ptrace(PTRACE_SEIZE, p->pid, 0, PTRACE_O_EXITKILL)) {
		err = -errno;
		goto out;
	}
	/*
	 * Every epoch starts write-protected, a lazy restore's too: its pages come
	 * write-protected from the page server (COPY_MODE_WP), and the holes must be
	 * protected as well (PTE markers) or PAGEMAP_SCAN counts every page never
	 * touched since the restore as written, and sync WP misses the first write to
	 * them. The guest has not run yet.
	 */
	if ((err = ms_wtracker_attach(&p->wt, p->uffd, p->pid, lazy_socket != NULL)))
		goto out;
	char go = 1;
	if (write(sv[0], &go, 1) != 1) { /* the child may now drop its fds and seal itself */
		err = -EIO;
		goto out;
	}
	/* take it over only once it is sealed: its seccomp shows in its status */
	if ((err = ms_proc_wait_sealed(p)))
		goto out;
	int sig, event;
	if (ptrace(PTRACE_INTERRUPT, p->pid, 0, 0)) {
		err = -errno;
		goto out;
	}
	err = ms_proc_waitstop(p, 5 * MS_NSEC_PER_SEC, &sig, &event);
out:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	return err;
}

static struct ms_proc *ms_proc_alloc(uint64_t size, int *err)
{
	struct ms_proc *p = calloc(1, sizeof(*p));
	if (!p) {
		*err = -ENOMEM;
		return NULL;
	}
	p->uffd = p->handshake_sock = -1;
	p->size = size;
	if ((*err = ms_wtracker_init(&p->wt, ms_tracker_mode(), MS_PROC_RAM_BASE, size))) {
		free(p);
		return NULL;
	}
	p->memfd = memfd_create("memsnap-guest", MFD_CLOEXEC);
	if (p->memfd < 0 || ftruncate(p->memfd, (off_t)size)) {
		*err = -errno;
		ms_proc_destroy(p);
		return NULL;
	}
	p->ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, p->memfd, 0);
	if (p->ram == MAP_FAILED) {
		p->ram = NULL;
		*err = -errno;
		ms_proc_destroy(p);
		return NULL;
	}
	return p;
}

int ms_proc_start(const struct ms_proc_config *config, struct ms_proc **out)
{
	const uint8_t *code;
	size_t code_len;
	uint64_t size = config->mem_size;
	int err;
	if (size < (64u << 10) || size % 4096 || ms_guest_code(config->guest, &code, &code_len) ||
	    code_len > MS_GUEST_CODE_MAX)
		return -EINVAL;
	struct ms_proc *p = ms_proc_alloc(size, &err);
	if (!p)
		return err;
	p->guest = (uint32_t)config->guest;
	/* the guest image: mailbox, report stub, code; written by us, so recorded here */
	memcpy(p->ram + MS_GUEST_STUB, ms_proc_stub, sizeof(ms_proc_stub));
	memcpy(p->ram + MS_GUEST_CODE, code, code_len);
	*(uint64_t *)(p->ram + MS_GUEST_PAGES) = size / 4096;
	if (!(p->host_written = ms_pageset_new())) {
		err = -ENOMEM;
		goto fail;
	}
	ms_pageset_add_range(p->host_written, 0, (MS_GUEST_CODE + code_len + 4095) / 4096);
	if ((err = ms_proc_spawn(p, NULL)))
		goto fail;
	struct user_regs_struct regs;
	if (ptrace(PTRACE_GETREGS, p->pid, 0, &regs)) {
		err = -errno;
		goto fail;
	}
	regs.rip = MS_PROC_RAM_BASE + MS_GUEST_CODE;
	regs.rdi = MS_PROC_RAM_BASE;
	regs.rsp = MS_PROC_RAM_BASE + size - 64;
	regs.orig_rax = (unsigned long long)-1;
	if (ptrace(PTRACE_SETREGS, p->pid, 0, &regs)) {
		err = -errno;
		goto fail;
	}
	p->stopped = true;
	if ((err = ms_proc_continue(p)) || (err = ms_proc_wait_report(p, 10 * MS_NSEC_PER_SEC)))
		goto fail;
	*out = p;
	return 0;
fail:
	if (p->dead)
		ms_warn("sandbox", "proc sandbox died while starting: %s", p->cause);
	ms_proc_destroy(p);
	return err;
}

#define MS_XSTATE_MAX 16384

int ms_proc_pause(struct ms_proc *p, struct ms_sandbox_paused *out,
		  struct ms_proc_pause_timing *timing)
{
	ms_sandbox_paused_init(out);
	if (p->dead)
		return -ECHILD;
	int err;
	int64_t t0 = ms_clock_now_ns();
	if (!p->stopped) {
		int sig, event;
		if (ptrace(PTRACE_INTERRUPT, p->pid, 0, 0))
			return -errno;
		if ((err = ms_proc_waitstop(p, 5 * MS_NSEC_PER_SEC, &sig, &event)))
			return err;
	}
	struct user_regs_struct regs;
	uint8_t *xstate = malloc(MS_XSTATE_MAX);
	struct iovec iov = {.iov_base = xstate, .iov_len = MS_XSTATE_MAX};
	if (!xstate)
		return -ENOMEM;
	if (ptrace(PTRACE_GETREGS, p->pid, 0, &regs) ||
	    ptrace(PTRACE_GETREGSET, p->pid, (void *)NT_X86_XSTATE, &iov)) {
		err = -errno;
		free(xstate);
		return err;
	}
	struct ms_snap_part parts[] = {
	    {MS_SNAP_REGS, sizeof(regs), &regs},
	    {MS_SNAP_XSTATE, (uint32_t)iov.iov_len, xstate},
	    {MS_SNAP_GUEST, sizeof(p->guest), &p->guest},
	};
	err = ms_snapfile_build(MS_BACKEND_PROC, p->size, parts, 3, &out->snapfile,
				&out->snapfile_len);
	free(xstate);
	int64_t t1 = ms_clock_now_ns();
	if (!err)
		err = ms_proc_written_pages(p, true, &out->written);
	if (timing) {
		timing->state_us = (double)(t1 - t0) / 1e3;
		timing->scan_us = (double)(ms_clock_now_ns() - t1) / 1e3;
	}
	return ms_sandbox_paused_end(out, p->memfd, err);
}

int ms_proc_restore(const struct ms_proc_restore *r, struct ms_proc **out)
{
	struct ms_snap_part parts[MS_SNAPFILE_MAX_SECTIONS];
	unsigned count;
	int err = ms_snapfile_parse(r->snapfile, r->snapfile_len, MS_BACKEND_PROC, r->mem_size,
				    parts, &count);
	if (err)
		return err;
	const struct ms_snap_part *saved = ms_snapfile_find(parts, count, MS_SNAP_REGS);
	const struct ms_snap_part *xs = ms_snapfile_find(parts, count, MS_SNAP_XSTATE);
	if (!saved || saved->length != sizeof(struct user_regs_struct) || !xs ||
	    (r->eager_fd < 0 && !r->lazy_socket))
		return saved && xs ? -EINVAL : MS_ECORRUPT;
	struct ms_proc *p = ms_proc_alloc(r->mem_size, &err);
	if (!p)
		return err;
	const struct ms_snap_part *guest = ms_snapfile_find(parts, count, MS_SNAP_GUEST);
	if (guest && guest->length == sizeof(p->guest))
		memcpy(&p->guest, guest->data, sizeof(p->guest));
	if (r->eager_fd >= 0 && (err = ms_guestmem_fill(p->memfd, r->eager_fd, r->mem_size)))
		goto fail;
	if ((err = ms_proc_spawn(p, r->eager_fd >= 0 ? NULL : r->lazy_socket)))
		goto fail;
	/*
	 * Lazy: a host access to a page the page server has not installed would put a
	 * zero page into the memfd, and the guest would later read zeros instead of its
	 * memory. Until the guest's first report (its stub lives in the mailbox page)
	 * any host access faults loudly instead.
	 */
	if (r->eager_fd < 0) {
		if (mprotect(p->ram, p->size, PROT_NONE)) {
			err = -errno;
			goto fail;
		}
		p->host_gated = true;
	}
	struct user_regs_struct regs, own;
	memcpy(&regs, saved->data, sizeof(regs));
	if (ptrace(PTRACE_GETREGS, p->pid, 0, &own)) {
		err = -errno;
		goto fail;
	}
	/* the new process keeps its own segments and thread pointers */
	regs.cs = own.cs;
	regs.ss = own.ss;
	regs.ds = own.ds;
	regs.es = own.es;
	regs.fs = own.fs;
	regs.gs = own.gs;
	regs.fs_base = own.fs_base;
	regs.gs_base = own.gs_base;
	regs.orig_rax = (unsigned long long)-1;
	struct iovec iov = {.iov_base = (void *)xs->data, .iov_len = xs->length};
	if (ptrace(PTRACE_SETREGS, p->pid, 0, &regs) ||
	    ptrace(PTRACE_SETREGSET, p->pid, (void *)NT_X86_XSTATE, &iov)) {
		err = -errno;
		goto fail;
	}
	p->stopped = true;
	*out = p;
	return 0;
fail:
	ms_proc_destroy(p);
	return err;
}

uint8_t *ms_proc_ram(struct ms_proc *p)
{
	return p->ram;
}

uint64_t ms_proc_mem_size(struct ms_proc *p)
{
	return p->size;
}

pid_t ms_proc_pid(struct ms_proc *p)
{
	return p->pid;
}

const char *ms_proc_death_cause(struct ms_proc *p)
{
	return p->cause;
}

void ms_proc_destroy(struct ms_proc *p)
{
	if (!p)
		return;
	if (p->pid > 0 && !p->dead) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, __WALL);
	}
	if (p->ram)
		munmap(p->ram, p->size);
	ms_wtracker_fini(&p->wt); /* its reader uses the uffd */
	if (p->uffd >= 0)
		close(p->uffd);
	if (p->handshake_sock >= 0) /* after the kill: the handler sees the end of the sandbox */
		close(p->handshake_sock);
	if (p->memfd >= 0)
		close(p->memfd);
	ms_pageset_free(p->host_written);
	free(p);
}
