/* lease.c - leases in the object store (lease.h). */
#include "storage/lease.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t ms_lease_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ms_lease_key(const char *kind, const ms_uuid *build_id, char *key, size_t size)
{
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(build_id, id);
	int n = snprintf(key, size, "%s/%s", kind, id);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static bool ms_lease_holder_valid(const char *holder)
{
	size_t len = strnlen(holder, MS_LEASE_HOLDER_MAX);
	if (len == 0 || len >= MS_LEASE_HOLDER_MAX)
		return false;
	for (const char *p = holder; *p; p++)
		if (*p < ' ' || *p > '~')
			return false;
	return true;
}

int ms_lease_put(struct ms_store *store, const char *kind, const char *holder_field,
		 const ms_uuid *build_id, const char *holder, int64_t ttl_ms, int64_t now_ms)
{
	if (!holder || !ms_lease_holder_valid(holder) || ms_uuid_is_nil(build_id))
		return -EINVAL;
	char key[MS_STORE_KEY_MAX], id[MS_UUID_STR_LEN];
	int err = ms_lease_key(kind, build_id, key, sizeof(key));
	if (err)
		return err;
	ms_uuid_format(build_id, id);
	cJSON *o = cJSON_CreateObject();
	char *body = NULL;
	if (o && cJSON_AddStringToObject(o, "build_id", id) &&
	    cJSON_AddStringToObject(o, holder_field, holder) &&
	    cJSON_AddNumberToObject(o, "written_at_ms", (double)now_ms) &&
	    cJSON_AddNumberToObject(
		o, "expires_at_ms",
		(double)(now_ms + (ttl_ms > 0 ? ttl_ms : MS_LEASE_TTL_DEFAULT_MS))))
		body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!body)
		return -ENOMEM;
	err = ms_store_put_buf(store, key, body, strlen(body), NULL);
	free(body);
	return err;
}

int ms_lease_remove(struct ms_store *store, const char *kind, const ms_uuid *build_id)
{
	char key[MS_STORE_KEY_MAX];
	int err = ms_lease_key(kind, build_id, key, sizeof(key));
	if (!err && (err = ms_store_remove(store, key)) == MS_ENOTFOUND)
		err = 0;
	return err;
}

/* A whole number of ms that a double holds exactly. */
static bool ms_lease_json_ms(const cJSON *o, const char *name, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
	    v->valuedouble > 9007199254740992.0 || floor(v->valuedouble) != v->valuedouble)
		return false;
	*out = (int64_t)v->valuedouble;
	return true;
}

int ms_lease_parse(const void *buf, size_t len, const char *holder_field, struct ms_lease *out)
{
	if (len == 0 || len > MS_LEASE_MAX)
		return MS_ECORRUPT;
	cJSON *o = cJSON_ParseWithLength(buf, len);
	struct ms_lease lease = {0};
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "build_id");
	const cJSON *holder = cJSON_GetObjectItemCaseSensitive(o, holder_field);
	bool ok = cJSON_IsObject(o) && cJSON_IsString(id) && cJSON_IsString(holder) &&
		  ms_uuid_parse(id->valuestring, &lease.build_id) == 0 &&
		  !ms_uuid_is_nil(&lease.build_id) && ms_lease_holder_valid(holder->valuestring) &&
		  ms_lease_json_ms(o, "written_at_ms", &lease.written_at_ms) &&
		  ms_lease_json_ms(o, "expires_at_ms", &lease.expires_at_ms);
	if (ok)
		snprintf(lease.holder, sizeof(lease.holder), "%s", holder->valuestring);
	cJSON_Delete(o);
	if (!ok)
		return MS_ECORRUPT;
	*out = lease;
	return 0;
}

int ms_lease_read(struct ms_store *store, const char *key, const char *holder_field,
		  struct ms_lease *out)
{
	void *buf = NULL;
	size_t len;
	int err = ms_store_read_all(store, key, MS_LEASE_MAX, &buf, &len);
	if (err)
		return err == MS_ETOOBIG ? MS_ECORRUPT : err;
	err = ms_lease_parse(buf, len, holder_field, out);
	free(buf);
	return err;
}
