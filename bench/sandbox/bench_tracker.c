/*
 * bench_tracker.c - what the sync written-page tracker (kernels without async
 * WP: sandbox/memory.h) costs against the async one, same run, same sandbox:
 *
 *   tracker.sync_write_ns_per_page  a write epoch: the guest writes each of its
 *       64 MiB of data pages once after a pause (every page write-protected), per
 *       page written. Under sync each first write is a userfaultfd fault that the
 *       tracker's thread records and unprotects; under async the kernel resolves it.
 *       baseline: the async tracker, the same epoch.
 *   tracker.sync_pause_us_64m  the pause's written-set step after that epoch (take
 *       the set, write-protect everything again): sync swaps a set and re-protects
 *       the range; async scans the page tables (PAGEMAP_SCAN). baseline: async.
 *
 * Each round starts a fresh pattern guest, fills its memory (the first touch, not
 * timed), resets the set, then times one FILL epoch and one reset. ROUNDS rounds
 * alternate async and sync; medians are reported, every round printed. The backend
 * is MEMSNAP_BENCH_BACKEND (proc or kvm); unset, proc and then kvm where it opens. No goal (0): the
 * figures say what a kernel without async WP costs, the README quotes them.
 */
#include "bench.h"
#include "bench_guest.h"
#include "sandbox/memory.h"
#include "sandbox/sandbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEM    (64ull << 20)
#define ROUNDS 7
#define WHO    "bench_tracker"

struct round {
	double write_ns_per_page, pause_us;
};

static struct round run_round(const struct ms_sandbox_ops *ops, enum ms_tracker_mode mode,
			      uint64_t epoch)
{
	ms_tracker_set_mode(mode);
	struct ms_sandbox_spec spec = {
	    .guest = MS_GUEST_PATTERN, .mem_size = MEM, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *sb;
	int err = ms_sandbox_create(ops, &spec, &sb);
	if (err)
		ms_bench_die(WHO, "start", err);
	ms_bench_guest_step(WHO, sb, MS_PATTERN_FILL, 7, epoch); /* first touch: allocation */
	struct ms_pageset *set;
	if ((err = ms_sandbox_written(sb, true, &set)))
		ms_bench_die(WHO, "reset", err);
	ms_pageset_free(set);
	double t0 = ms_bench_now();
	ms_bench_guest_step(WHO, sb, MS_PATTERN_FILL, 7, epoch + 1);
	double t1 = ms_bench_now();
	if ((err = ms_sandbox_written(sb, true, &set)))
		ms_bench_die(WHO, "written", err);
	double t2 = ms_bench_now();
	uint64_t pages = ms_pageset_count(set);
	ms_pageset_free(set);
	ms_sandbox_destroy(sb);
	if (pages < MEM / 4096 / 2) {
		fprintf(stderr, "%s: %s: only %llu pages written\n", WHO,
			ms_tracker_mode_name(mode), (unsigned long long)pages);
		exit(1);
	}
	return (struct round){.write_ns_per_page = (t1 - t0) * 1e9 / (double)pages,
			      .pause_us = (t2 - t1) * 1e6};
}

/* One backend's rounds and reports. */
static void bench_backend(const struct ms_sandbox_ops *ops)
{
	double write[2][ROUNDS], pause[2][ROUNDS];
	run_round(ops, MS_TRACKER_ASYNC, 1); /* warm-up */
	for (int r = 0; r < ROUNDS; r++)
		for (int k = 0; k < 2; k++) {
			int m = (r + k) % 2; /* alternate which goes first */
			struct round x = run_round(ops, m ? MS_TRACKER_SYNC : MS_TRACKER_ASYNC,
						   10 + (uint64_t)r);
			write[m][r] = x.write_ns_per_page;
			pause[m][r] = x.pause_us;
			fprintf(stderr, "%s: %s round %d %s: write %.0f ns/page, pause %.0f us\n",
				WHO, ops->name, r, m ? "sync " : "async", x.write_ns_per_page,
				x.pause_us);
		}
	double wa = ms_bench_median(write[0], ROUNDS), ws = ms_bench_median(write[1], ROUNDS);
	double pa = ms_bench_median(pause[0], ROUNDS), ps = ms_bench_median(pause[1], ROUNDS);
	fprintf(stderr,
		"%s: %s, 64 MiB: write epoch %.0f (sync) vs %.0f (async) ns/page; pause %.0f vs "
		"%.0f us\n",
		WHO, ops->name, ws, wa, ps, pa);
	char n1[64], n2[64];
	snprintf(n1, sizeof(n1), "tracker.sync_write_ns_per_page_%s", ops->name);
	snprintf(n2, sizeof(n2), "tracker.sync_pause_us_64m_%s", ops->name);
	ms_bench_report(n1, ws, "ns", "async tracker, same epoch", wa, 0);
	ms_bench_report(n2, ps, "us", "async tracker (PAGEMAP_SCAN)", pa, 0);
}

int main(void)
{
	char why[320];
	enum ms_tracker_mode mode;
	if (ms_tracker_pick(MS_TRACKER_SYNC, false, &mode, why, sizeof(why)) ||
	    ms_tracker_pick(MS_TRACKER_ASYNC, false, &mode, why, sizeof(why))) {
		fprintf(stderr, "%s: SKIP: %s (both trackers are needed)\n", WHO, why);
		return 0;
	}
	/* MEMSNAP_BENCH_BACKEND picks one; unset: proc, then kvm where /dev/kvm opens */
	const char *name = getenv("MEMSNAP_BENCH_BACKEND");
	const char *names[2] = {name ? name : "proc", name ? NULL : "kvm"};
	for (int i = 0; i < 2 && names[i]; i++) {
		const struct ms_sandbox_ops *ops;
		if (ms_sandbox_backend_pick(names[i], &ops, why, sizeof(why))) {
			fprintf(stderr, "%s: %s: %s\n", WHO, names[i], why);
			if (name)
				return 1;
			continue;
		}
		bench_backend(ops);
	}
	return 0;
}
