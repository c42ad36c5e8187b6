/*
 * memory.h - guest-memory plumbing shared by the backends: the written-page
 * tracker, the VMM side of Firecracker's userfaultfd handshake, and filling
 * guest memory from an image.
 *
 * The tracker has two modes, chosen once per process (ms_tracker_pick):
 *   async - userfaultfd WP_ASYNC + PAGEMAP_SCAN (Linux >= 6.7): the kernel
 *           resolves write faults itself, a pause scans the page tables.
 *   sync  - plain userfaultfd write-protect (Linux >= 5.19 for shmem): every
 *           first write to a page of an epoch is a fault message; its reader
 *           records the page and lifts the protection (util/wpset.h). The
 *           reader is the sandbox's tracker thread (fresh, eager) or the
 *           page server's session in this process (lazy).
 * Either is per page-table entry of the tracked mapping: writes through
 * another mapping of the same memfd (the host's view) are not seen.
 */
#ifndef MS_SANDBOX_MEMORY_H
#define MS_SANDBOX_MEMORY_H

#include "util/pageset.h"
#include "util/wpset.h"

#include <pthread.h>
#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ms_tracker_mode { MS_TRACKER_AUTO = 0, MS_TRACKER_ASYNC, MS_TRACKER_SYNC };

/* "auto", "async", "sync" -> mode: 0 or -EINVAL. */
int ms_tracker_mode_parse(const char *name, enum ms_tracker_mode *out);
const char *ms_tracker_mode_name(enum ms_tracker_mode mode);
/*
 * Probes the kernel (UFFDIO_API's features, PAGEMAP_SCAN on /proc/self/pagemap)
 * and picks the mode for want: auto = async where the kernel has it, else sync.
 * probe_none (a test hook) makes the probe report no feature at all. 0 with
 * *out and why (one line: the mode and the kernel feature behind it);
 * -ENOTSUP with why when the kernel has neither, or lacks the forced one.
 */
int ms_tracker_pick(enum ms_tracker_mode want, bool probe_none, enum ms_tracker_mode *out,
		    char *why, size_t why_len);
/* The process-wide mode new sandboxes use (async until set; set it once, at start). */
void ms_tracker_set_mode(enum ms_tracker_mode mode);
enum ms_tracker_mode ms_tracker_mode(void);

/*
 * Creates a userfaultfd for mode (async: WP_ASYNC; plus EVENT_REMOVE when lazy)
 * and registers [base, base + size) for WP (plus MISSING when lazy). The fd, or
 * -ENOTSUP when the kernel lacks the mode's features, or another negative errno.
 */
int ms_guestmem_uffd(uint64_t base, uint64_t size, bool lazy, enum ms_tracker_mode mode);

/*
 * One sandbox's written-page tracker:
 *   ms_wtracker_init (mode, range) -> [lazy: ms_wtracker_publish(memfd), then the
 *   handshake] -> ms_wtracker_attach(uffd) -> ms_wtracker_scan ... -> ms_wtracker_fini.
 * Driven by the sandbox's thread; the sync reader thread touches only wpset.
 */
struct ms_wtracker {
	enum ms_tracker_mode mode; /* ASYNC or SYNC */
	uint64_t base, size;
	int uffd;		/* borrowed from the sandbox */
	int pagemap;		/* async: /proc/PID/pagemap, owned */
	int published_memfd;	/* sync, lazy: borrowed, until attach */
	struct ms_wpset *wpset; /* sync */
	int stop_efd;		/* sync, not lazy: stops the reader thread */
	pthread_t thread;
	bool thread_started;
	bool initialized; /* a zeroed struct (never init) is fine to fini */
};
/* 0 or -ENOMEM. mode: ms_tracker_mode() unless the caller knows better. */
int ms_wtracker_init(struct ms_wtracker *t, enum ms_tracker_mode mode, uint64_t base,
		     uint64_t size);
/* Sync: hands the set to the page server that will receive memfd (call before the handshake). */
int ms_wtracker_publish(struct ms_wtracker *t, int memfd);
/*
 * Starts tracking through uffd (borrowed; lives until fini) of process pid (0: this one):
 * write-protects the range (the first epoch), then async opens the pagemap, sync
 * starts the reader thread (not lazy) or waits for the page server's claim (lazy:
 * -ENOTSUP when no page server in this process took it).
 */
int ms_wtracker_attach(struct ms_wtracker *t, int uffd, pid_t pid, bool lazy);
/* Adds the pages written since the last reset (4 KiB indices from base) to set; with
 * reset, a new epoch (all write-protected again). */
int ms_wtracker_scan(struct ms_wtracker *t, bool reset, struct ms_pageset *set);
/* Stops the reader thread; call before the uffd is closed. Idempotent. */
void ms_wtracker_fini(struct ms_wtracker *t);
/* Write-protects the range: the start of an epoch. */
int ms_guestmem_protect(int uffd, uint64_t base, uint64_t size);
/*
 * Adds the pages written in [base, base + size) (as 4 KiB indices from base) to
 * set, through PAGEMAP_SCAN on pagemap (/proc/PID/pagemap); with reset they are
 * write-protected again. -ENOTSUP when the kernel lacks PAGEMAP_SCAN.
 */
int ms_guestmem_scan(int pagemap, uint64_t base, uint64_t size, bool reset, struct ms_pageset *set);
/* Sends payload with fds (1 or 2) as SCM_RIGHTS in one sendmsg. */
int ms_guestmem_send_fds(int sock, const void *payload, size_t len, const int *fds, int nfds);
/*
 * Firecracker's handshake, VMM side: connects to the page server's socket and
 * sends the JSON region list of one region (base, size, offset 0, 4 KiB pages)
 * with the uffd and the memfd. The connected socket (kept open, as Firecracker
 * does, so a hang-up never overtakes the message), or a negative errno.
 * Async-signal-safe enough for a forked child: no allocation.
 */
int ms_guestmem_handshake(const char *socket_path, uint64_t base, uint64_t size, int uffd,
			  int memfd);
/* Copies size bytes of src (from offset 0) into dst: copy_file_range, else read/write. */
int ms_guestmem_fill(int dst, int src, uint64_t size);

#endif
