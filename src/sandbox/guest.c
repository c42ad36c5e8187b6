/* guest.c - access to the assembled guests (guests.S). */
#include "sandbox/guest.h"

#include <errno.h>
#include <string.h>

extern const uint8_t ms_guest_pattern_start[], ms_guest_pattern_end[];
extern const uint8_t ms_guest_counter_start[], ms_guest_counter_end[];
extern const uint8_t ms_guest_mutator_start[], ms_guest_mutator_end[];
extern const uint8_t ms_guest_workset_start[], ms_guest_workset_end[];

int ms_guest_code(enum ms_guest_kind kind, const uint8_t **code, size_t *len)
{
	switch (kind) {
	case MS_GUEST_PATTERN:
		*code = ms_guest_pattern_start;
		*len = (size_t)(ms_guest_pattern_end - ms_guest_pattern_start);
		return 0;
	case MS_GUEST_COUNTER:
		*code = ms_guest_counter_start;
		*len = (size_t)(ms_guest_counter_end - ms_guest_counter_start);
		return 0;
	case MS_GUEST_MUTATOR:
		*code = ms_guest_mutator_start;
		*len = (size_t)(ms_guest_mutator_end - ms_guest_mutator_start);
		return 0;
	case MS_GUEST_WORKSET:
		*code = ms_guest_workset_start;
		*len = (size_t)(ms_guest_workset_end - ms_guest_workset_start);
		return 0;
	}
	return -EINVAL;
}

static const char *const ms_guest_names[] = {"pattern", "counter", "mutator", "workset"};
#define MS_GUEST_KINDS (sizeof(ms_guest_names) / sizeof(ms_guest_names[0]))

const char *ms_guest_name(int kind)
{
	return kind >= 0 && (size_t)kind < MS_GUEST_KINDS ? ms_guest_names[kind] : NULL;
}

int ms_guest_parse(const char *name, enum ms_guest_kind *kind)
{
	for (size_t i = 0; i < MS_GUEST_KINDS; i++)
		if (strcmp(name, ms_guest_names[i]) == 0) {
			*kind = (enum ms_guest_kind)i;
			return 0;
		}
	return -EINVAL;
}

uint64_t ms_guest_pattern_word(uint64_t seed, uint64_t epoch, uint64_t page, uint64_t word)
{
	return (seed + page * 0x9e3779b97f4a7c15ULL + word) ^ epoch;
}

uint64_t ms_guest_workset_steps(uint64_t data_pages)
{
	return data_pages * 42 / 256;
}

uint64_t ms_guest_workset_page(uint64_t seed, uint64_t data_pages, uint64_t *state)
{
	uint64_t x = *state ? *state : 0x2545f4914f6cdd1dULL ^ seed;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return MS_GUEST_DATA_FIRST_PAGE + x % data_pages;
}
