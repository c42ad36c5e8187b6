/*
 * proc.h - the proc backend's core: a guest run as a ptrace-driven process
 * sandbox (docs/design.md §2), for machines without /dev/kvm.
 *
 *   start ──▶ RUNNING ──guest reports (int3)──▶ STOPPED ──continue──▶ RUNNING
 *                │                                 │
 *                └──── guest dies (syscall, crash) ─┴──▶ DEAD (cause kept; RAM intact)
 *
 * Guest RAM is a memfd mapped MAP_SHARED at MS_PROC_RAM_BASE in the sandbox
 * process, which holds no other fd and no other mapping of the node's (its
 * heap, keys, other sandboxes' RAM: the fork's copy is unmapped before the guest
 * runs, leaving one page of the child's own), runs under SECCOMP_MODE_STRICT and
 * executes guest code only (a syscall kills it). The host is its tracer
 * (PTRACE_SEIZE with PTRACE_O_EXITKILL) and maps the same memfd to read and
 * write the guest's mailbox (guest.h). Written pages are tracked exactly with
 * the sandbox's userfaultfd write-protect, async (PAGEMAP_SCAN) or sync (WP
 * faults read by the host, or by the page server when lazy), as memory.h's
 * process-wide mode says (host writes through its own mapping are not
 * tracked: per-PTE tracking).
 *
 * Not thread-safe: one thread drives a sandbox (ptrace's rule).
 */
#ifndef MS_SANDBOX_PROC_H
#define MS_SANDBOX_PROC_H

#include "sandbox/guest.h"
#include "sandbox/sandbox.h"
#include "util/pageset.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define MS_PROC_RAM_BASE 0x567000000000ULL /* app memory for ASan and TSan too; above PIE bases */

struct ms_proc_config {
	enum ms_guest_kind guest;
	uint64_t mem_size; /* bytes, a multiple of 4 KiB, at least 64 KiB */
};

struct ms_proc;

/*
 * Starts a fresh sandbox running guest and waits for its first report.
 * 0, -ENOTSUP (the kernel lacks the tracker mode's features: never silently
 * "every page dirty"), or another negative errno.
 */
int ms_proc_start(const struct ms_proc_config *config, struct ms_proc **out);
/* The host's mapping of guest RAM (reads and writes are not tracked). */
uint8_t *ms_proc_ram(struct ms_proc *p);
uint64_t ms_proc_mem_size(struct ms_proc *p);
pid_t ms_proc_pid(struct ms_proc *p);
/* Resumes a guest stopped at a report. */
int ms_proc_continue(struct ms_proc *p);
/* Waits for the next report: 0, -ETIMEDOUT, or -ECHILD when the guest died (see cause). */
int ms_proc_wait_report(struct ms_proc *p, int64_t timeout_ns);
/* Why the sandbox died ("" while alive). */
const char *ms_proc_death_cause(struct ms_proc *p);
/*
 * The pages written since the last reset (4 KiB indices), exactly: the guest's
 * writes, plus the guest image that ms_proc_start loaded; with reset,
 * write-protects everything again for the next epoch.
 */
int ms_proc_written_pages(struct ms_proc *p, bool reset, struct ms_pageset **out);
/*
 * Pause: stops the guest (interrupting it if it runs), saves its registers and
 * extended state into a snapfile, takes the written-page set (and starts a new
 * epoch), and hands over a new fd of the guest-memory memfd: out is the
 * interface's paused struct (sandbox.h), all the caller's to free
 * (ms_sandbox_paused_fini). The sandbox stays stopped (destroy it, or continue
 * it). timing (may be NULL) gets how long the two steps took. On error out is
 * empty (memfd -1).
 */
struct ms_proc_pause_timing {
	double state_us; /* interrupt -> snapfile written */
	double scan_us;	 /* the written-page scan and re-protect that follow */
};
int ms_proc_pause(struct ms_proc *p, struct ms_sandbox_paused *out,
		  struct ms_proc_pause_timing *timing);

/*
 * Restores a paused sandbox in a new process; it starts stopped (ms_proc_continue).
 * After a lazy restore the host's mapping shows a page only once the page server
 * installed it (a host write before that would hide the page from the guest): let
 * the guest report once before writing its mailbox.
 */
struct ms_proc_restore {
	uint64_t mem_size;
	const void *snapfile;
	size_t snapfile_len;
	int eager_fd;		 /* >= 0: eager, memory image read from this fd (offset 0) */
	const char *lazy_socket; /* else lazy: pages served by the page server at this socket,
				    reached with Firecracker's handshake */
};
int ms_proc_restore(const struct ms_proc_restore *restore, struct ms_proc **out);

/* Kills and reaps the sandbox; frees everything. */
void ms_proc_destroy(struct ms_proc *p);

#endif
