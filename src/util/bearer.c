/*
 * bearer.c - the bearer token check (bearer.h).
 */
#include "util/bearer.h"

#include <stddef.h>
#include <string.h>

bool ms_bearer_ok(const char *header, const char *token)
{
	static const char prefix[] = "Bearer ";
	if (!header || strncmp(header, prefix, sizeof(prefix) - 1) != 0)
		return false;
	const char *given = header + sizeof(prefix) - 1;
	size_t a = strlen(given), b = strlen(token);
	unsigned char diff = (unsigned char)(a != b);
	for (size_t i = 0; i < b; i++)
		diff |= (unsigned char)(token[i] ^ (i < a ? given[i] : 0));
	return diff == 0;
}
