/*
 * raw_uffd.h - the baseline of the fault-rate benches: a raw single-thread
 * UFFDIO_COPY handler serving a memory image to one VMM over Firecracker's
 * handshake. It reads every pending event before installing, zero-fills pages
 * a REMOVE zapped, retries on EAGAIN, falls back from a partly present block to
 * the faulting page and then to a WAKE, copies read faults write-protected (as
 * the page server does) and clears WP faults. Nothing else: no batching beyond
 * the block, no spin, no workers. Any unexpected error ends the bench (exit 1).
 */
#ifndef MS_BENCH_RAW_UFFD_H
#define MS_BENCH_RAW_UFFD_H

#include <stdint.h>

struct ms_raw_uffd;

/*
 * Listens on path (replacing what is there) and serves the one VMM that
 * connects: source (size bytes, borrowed) installed block bytes per fault.
 */
struct ms_raw_uffd *ms_raw_uffd_start(const char *path, const uint8_t *source, uint64_t size,
				      uint64_t block);
/* Faults served so far (WP faults not counted). */
uint64_t ms_raw_uffd_faults(struct ms_raw_uffd *r);
/* Stops the handler, removes path, frees. */
void ms_raw_uffd_stop(struct ms_raw_uffd *r, const char *path);

#endif
