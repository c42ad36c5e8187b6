/* clock.h - monotonic time in nanoseconds, and deadlines for timed waits. */
#ifndef MS_UTIL_CLOCK_H
#define MS_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

#define MS_NSEC_PER_SEC	 1000000000LL
#define MS_NSEC_PER_MSEC 1000000LL

/* CLOCK_MONOTONIC now, in nanoseconds. */
int64_t ms_clock_now_ns(void);
/* CLOCK_MONOTONIC now + timeout_ns, as a timespec for condvars made with that clock. */
struct timespec ms_clock_deadline(int64_t timeout_ns);
/* Sleeps for ns nanoseconds, resuming after signals. */
void ms_clock_sleep_ns(int64_t ns);
/*
 * A duration as people write it: N with an optional unit ms, s, m, h or d (no
 * unit: seconds; N may have a fraction). 0 with *ns set, or -EINVAL.
 */
int ms_duration_parse(const char *text, int64_t *ns);

#endif
