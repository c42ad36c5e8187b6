/*
 * memory.h - guest-memory plumbing shared by the backends: the written-page
 * tracker (userfaultfd async write-protect + PAGEMAP_SCAN, research/vmm.md §9),
 * the VMM side of Firecracker's userfaultfd handshake, and filling guest
 * memory from an image.
 *
 * The tracker is per page-table entry of the tracked mapping: writes through
 * another mapping of the same memfd (the host's view) are not seen.
 */
#ifndef MS_SANDBOX_MEMORY_H
#define MS_SANDBOX_MEMORY_H

#include "util/pageset.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Creates a userfaultfd with WP_ASYNC (plus EVENT_REMOVE when lazy) and
 * registers [base, base + size) for WP (plus MISSING when lazy). The fd, or
 * -ENOTSUP when the kernel lacks WP_ASYNC, or another negative errno.
 */
int ms_guestmem_uffd(uint64_t base, uint64_t size, bool lazy);
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
