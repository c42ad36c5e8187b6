/*
 * bench_guest.h - what the fault-rate benches share: an in-memory page source
 * (the stand-in for a local diff file: every byte is cached) and a pattern
 * guest filled and paused, its memory mapped as that source.
 *
 * Every helper exits the bench with a message on failure (a bench measures;
 * it has nothing to recover). Not thread-safe to set up; the source may then
 * be read from any thread.
 */
#ifndef MS_BENCH_GUEST_H
#define MS_BENCH_GUEST_H

#include "sandbox/sandbox.h"
#include "uffd/pageserver.h"

#include <stdint.h>

/* An in-memory page source: ctx is a struct ms_bench_memsrc (borrowed). */
struct ms_bench_memsrc {
	const uint8_t *base;
	uint64_t size;
};
extern const struct ms_page_source_ops ms_bench_memsrc_ops;

/* Prints "who: what: error" and exits 1. */
_Noreturn void ms_bench_die(const char *who, const char *what, int err);
/* Sets the guest's mailbox (cmd, a0, a1) and runs it to its next report (120 s at most). */
void ms_bench_guest_step(const char *who, struct ms_sandbox *sb, uint64_t cmd, uint64_t a0,
			 uint64_t a1);
/*
 * A pattern guest of mem bytes on ops fills its memory (seed 42, epoch 1) and
 * is paused into *paused (the mailbox cleared: a resumed guest reports first).
 * Returns its memory mapped read-only and populated; munmap(ret, mem) after.
 */
const uint8_t *ms_bench_guest_snapshot(const char *who, const struct ms_sandbox_ops *ops,
				       uint64_t mem, struct ms_sandbox_paused *paused);

#endif
