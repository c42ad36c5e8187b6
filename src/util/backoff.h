/*
 * backoff.h - retry delays: exponential with jitter, capped.
 *
 * The default for source reads (docs/design.md §4): 50 ms doubling to 500 ms, 4 attempts.
 * Jitter draws uniformly from [delay/2, delay] ("equal jitter") so retries of
 * many readers spread out but never collapse to zero.
 */
#ifndef MS_UTIL_BACKOFF_H
#define MS_UTIL_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

struct ms_backoff {
	int64_t initial_ns;
	int64_t max_ns;
	unsigned max_attempts; /* total attempts including the first; 0 = unlimited */
	unsigned attempt;      /* attempts made so far */
	uint64_t rng;	       /* xorshift state, seeded by ms_backoff_init */
};

void ms_backoff_init(struct ms_backoff *b, int64_t initial_ns, int64_t max_ns,
		     unsigned max_attempts);
/* Records one failed attempt. false when no attempt is left; else true with *delay_ns set. */
bool ms_backoff_next(struct ms_backoff *b, int64_t *delay_ns);

#endif
