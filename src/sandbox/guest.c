/* guest.c - access to the assembled guests (guests.S). */
#include "sandbox/guest.h"

#include <errno.h>
#include <string.h>

extern const uint8_t ms_guest_pattern_start[], ms_guest_pattern_end[];
extern const uint8_t ms_guest_counter_start[], ms_guest_counter_end[];
extern const uint8_t ms_guest_mutator_start[], ms_guest_mutator_end[];

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
	}
	return -EINVAL;
}

static const char *const ms_guest_names[] = {"pattern", "counter", "mutator"};
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
