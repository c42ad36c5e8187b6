/*
 * bench.h - the benchmark harness.
 *
 * Each bench_* program measures a value and a baseline in the same run and
 * reports them with ms_bench_report(). Reports are appended as JSON lines to the
 * file named by MEMSNAP_BENCH_OUT (or printed to stdout when unset);
 * scripts/run-bench.sh gathers them into build/bench.json and prints the table.
 * ratio = value / baseline_value, or the caller's own (ms_bench_report_ratio); goal is the
 * target ratio from the issue.
 */
#ifndef MS_BENCH_H
#define MS_BENCH_H

#include <stddef.h>
#include <stdint.h>

void ms_bench_report(const char *name, double value, const char *unit, const char *baseline,
		     double baseline_value, double goal);
/*
 * The same, with the ratio measured by the caller: the median of paired rounds' ratios,
 * where the value and baseline are the medians of each side (their quotient differs).
 */
void ms_bench_report_ratio(const char *name, double value, const char *unit, const char *baseline,
			   double baseline_value, double ratio, double goal);
/*
 * ms_bench_report_ratio with the spread of n (> 0) paired rounds: rounds[r] is round r's
 * own ratio (its value over its baseline). The JSON also carries ratio_min, ratio_max
 * and rounds, and the table prints them: on a shared machine one figure moves by 2x
 * from run to run, and a median alone does not say so.
 */
void ms_bench_report_spread(const char *name, double value, const char *unit, const char *baseline,
			    double baseline_value, double ratio, const double *rounds, int n,
			    double goal);
/* The median of v[0, n) (0 < n <= MS_BENCH_ROUNDS_MAX; the mean of the middle two for an even
 * n); v is left as it was. */
#define MS_BENCH_ROUNDS_MAX 64
double ms_bench_median(const double *v, int n);
/*
 * Touches bytes of fresh anonymous memory and frees it, just before a measured step
 * that allocates about as much: this machine's memory is backed by its host on first
 * touch and handed back some seconds after it is freed (virtio-balloon free page
 * reporting), so without it a step's time depends on whether the kernel gives it pages
 * the host still backs. Best effort: an mmap failure only skips it.
 */
void ms_bench_warm_memory(size_t bytes);
/* Monotonic seconds, for timing loops. */
double ms_bench_now(void);

#endif
