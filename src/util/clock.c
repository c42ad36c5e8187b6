/* clock.c - monotonic clock helpers. */
#include "util/clock.h"

#include <errno.h>

int64_t ms_clock_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * MS_NSEC_PER_SEC + ts.tv_nsec;
}

struct timespec ms_clock_deadline(int64_t timeout_ns)
{
	int64_t at = ms_clock_now_ns() + timeout_ns;
	return (struct timespec){.tv_sec = at / MS_NSEC_PER_SEC, .tv_nsec = at % MS_NSEC_PER_SEC};
}

void ms_clock_sleep_ns(int64_t ns)
{
	if (ns <= 0)
		return;
	struct timespec req = {.tv_sec = ns / MS_NSEC_PER_SEC, .tv_nsec = ns % MS_NSEC_PER_SEC};
	while (nanosleep(&req, &req) != 0 && errno == EINTR)
		;
}
