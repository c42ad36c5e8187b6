/*
 * bench_proc.c - proc.pause_us_64m and proc.pause_us_1g: interrupt -> snapfile
 * written (registers and xstate) for a pattern guest that wrote all its memory,
 * 64 MiB and 1 GiB. The 1 GiB entry uses the 64 MiB value as its baseline: the
 * stop must not grow with memory. The written-page scan that follows (it grows
 * with the pages written) is reported as proc.scan_us_64m / _1g.
 */
#include "bench.h"
#include "sandbox/proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static double pause_us(uint64_t size, double *scan)
{
	struct ms_proc_config cfg = {.guest = MS_GUEST_PATTERN, .mem_size = size};
	double best = 1e12;
	for (int round = 0; round < 3; round++) {
		struct ms_proc *p;
		if (ms_proc_start(&cfg, &p))
			exit(1);
		uint64_t *box = (uint64_t *)ms_proc_ram(p);
		box[0] = MS_PATTERN_FILL;
		box[1] = 42;
		box[2] = 1;
		/* the guest fills its memory; the pause interrupts it running, the next epoch */
		if (ms_proc_continue(p) || ms_proc_wait_report(p, 120LL * 1000000000))
			exit(1);
		box[0] = MS_PATTERN_FILL;
		if (ms_proc_continue(p))
			exit(1);
		usleep(2000);
		struct ms_sandbox_paused paused;
		struct ms_proc_pause_timing timing;
		if (ms_proc_pause(p, &paused, &timing))
			exit(1);
		if (timing.state_us < best) {
			best = timing.state_us;
			*scan = timing.scan_us;
		}
		ms_sandbox_paused_fini(&paused);
		ms_proc_destroy(p);
	}
	return best;
}

int main(void)
{
	double scan_small, scan_large;
	double small = pause_us(64ull << 20, &scan_small),
	       large = pause_us(1ull << 30, &scan_large);
	fprintf(stderr,
		"proc.pause: stop %.0f us at 64 MiB, %.0f us at 1 GiB; scan %.0f / %.0f us\n",
		small, large, scan_small, scan_large);
	ms_bench_report("proc.pause_us_64m", small, "us", "itself", small, 1);
	ms_bench_report("proc.pause_us_1g", large, "us", "proc.pause_us_64m", small, 2);
	ms_bench_report("proc.scan_us_64m", scan_small, "us", "itself", scan_small, 1);
	ms_bench_report("proc.scan_us_1g", scan_large, "us", "proc.scan_us_64m", scan_small, 16);
	return 0;
}
