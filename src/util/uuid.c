/* uuid.c - build ids over libuuid. */
#include "util/uuid.h"

#include <errno.h>
#include <string.h>
#include <uuid/uuid.h>

_Static_assert(sizeof(ms_uuid) == 16, "ms_uuid is 16 raw bytes");

void ms_uuid_generate(ms_uuid *out)
{
	uuid_generate_random(out->bytes);
}

bool ms_uuid_is_nil(const ms_uuid *id)
{
	static const ms_uuid nil;
	return memcmp(id->bytes, nil.bytes, 16) == 0;
}

bool ms_uuid_eq(const ms_uuid *a, const ms_uuid *b)
{
	return memcmp(a->bytes, b->bytes, 16) == 0;
}

int ms_uuid_cmp(const ms_uuid *a, const ms_uuid *b)
{
	return memcmp(a->bytes, b->bytes, 16);
}

void ms_uuid_format(const ms_uuid *id, char out[MS_UUID_STR_LEN])
{
	uuid_unparse_lower(id->bytes, out);
}

int ms_uuid_parse(const char *text, ms_uuid *out)
{
	if (!text || strlen(text) != 36)
		return -EINVAL;
	uuid_t parsed;
	if (uuid_parse(text, parsed) != 0)
		return -EINVAL;
	memcpy(out->bytes, parsed, 16);
	return 0;
}
