/* backoff.c - exponential backoff with equal jitter. */
#include "util/backoff.h"
#include "util/clock.h"

#include <pthread.h>

void ms_backoff_init(struct ms_backoff *b, int64_t initial_ns, int64_t max_ns,
		     unsigned max_attempts)
{
	b->initial_ns = initial_ns > 0 ? initial_ns : 1;
	b->max_ns = max_ns >= b->initial_ns ? max_ns : b->initial_ns;
	b->max_attempts = max_attempts;
	b->attempt = 0;
	b->rng =
	    (uint64_t)ms_clock_now_ns() ^ ((uint64_t)(uintptr_t)b << 17) ^ (uint64_t)pthread_self();
	if (b->rng == 0)
		b->rng = 0x9e3779b97f4a7c15ULL;
}

static uint64_t ms_backoff_rand(struct ms_backoff *b)
{
	uint64_t x = b->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	b->rng = x;
	return x;
}

bool ms_backoff_next(struct ms_backoff *b, int64_t *delay_ns)
{
	b->attempt++;
	if (b->max_attempts && b->attempt >= b->max_attempts)
		return false;
	int64_t delay = b->initial_ns;
	for (unsigned i = 1; i < b->attempt && delay < b->max_ns; i++)
		delay *= 2;
	if (delay > b->max_ns)
		delay = b->max_ns;
	int64_t half = delay / 2;
	*delay_ns = half + (int64_t)(ms_backoff_rand(b) % (uint64_t)(delay - half + 1));
	return true;
}
