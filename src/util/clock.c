/* clock.c - monotonic clock helpers, and durations as people write them. */
#include "util/clock.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

int ms_duration_parse(const char *text, int64_t *ns)
{
	/* digits with at most one '.', then the unit: strtod alone takes hex and exponents */
	const char *end = text;
	bool dot = false;
	if (!isdigit((unsigned char)*text))
		return -EINVAL;
	while (isdigit((unsigned char)*end) || (*end == '.' && !dot))
		dot |= *end++ == '.';
	double n = strtod(text, NULL);
	double unit;
	if (!strcmp(end, "ms"))
		unit = 1e6;
	else if (!strcmp(end, "s") || !*end)
		unit = 1e9;
	else if (!strcmp(end, "m"))
		unit = 60e9;
	else if (!strcmp(end, "h"))
		unit = 3600e9;
	else if (!strcmp(end, "d"))
		unit = 86400e9;
	else
		return -EINVAL;
	double v = n * unit;
	if (v < 0 || v > 9e18)
		return -EINVAL;
	*ns = (int64_t)v;
	return 0;
}
