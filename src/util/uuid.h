/*
 * uuid.h - build ids: 16 raw RFC-4122 bytes, in the order of the canonical string.
 * The all-zero uuid (MS_UUID_NIL) is the nil build: reads as zeros, never fetched.
 */
#ifndef MS_UTIL_UUID_H
#define MS_UTIL_UUID_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ms_uuid {
	uint8_t bytes[16];
} ms_uuid;

#define MS_UUID_NIL	((ms_uuid){{0}})
#define MS_UUID_STR_LEN 37 /* 36 characters + NUL */

void ms_uuid_generate(ms_uuid *out);
bool ms_uuid_is_nil(const ms_uuid *id);
bool ms_uuid_eq(const ms_uuid *a, const ms_uuid *b);
int ms_uuid_cmp(const ms_uuid *a, const ms_uuid *b);
/* Canonical lowercase "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx". */
void ms_uuid_format(const ms_uuid *id, char out[MS_UUID_STR_LEN]);
/* Accepts the canonical form in either case; -EINVAL otherwise (out unchanged). */
int ms_uuid_parse(const char *text, ms_uuid *out);

#endif
