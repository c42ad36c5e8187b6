/*
 * bench.h - the benchmark harness.
 *
 * Each bench_* program measures a value and a baseline in the same run and
 * reports them with ms_bench_report(). Reports are appended as JSON lines to the
 * file named by MEMSNAP_BENCH_OUT (or printed to stdout when unset);
 * scripts/run-bench.sh gathers them into build/bench.json and prints the table.
 * ratio = value / baseline_value; goal is the target ratio from the issue.
 */
#ifndef MS_BENCH_H
#define MS_BENCH_H

#include <stdint.h>

void ms_bench_report(const char *name, double value, const char *unit, const char *baseline,
		     double baseline_value, double goal);
/* Monotonic seconds, for timing loops. */
double ms_bench_now(void);

#endif
