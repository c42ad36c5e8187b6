/* registry.c - peer records in the shared object store (registry.h). */
#include "node/peer/registry.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t ms_peer_registry_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ms_peer_registry_key(const ms_uuid *build_id, char *key, size_t size)
{
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(build_id, id);
	int n = snprintf(key, size, "peers/%s", id);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* "ADDR:PORT": printable, no space, a colon followed by 1..5 digits. */
static bool ms_peer_address_valid(const char *address)
{
	size_t len = strnlen(address, MS_PEER_ADDRESS_MAX);
	const char *colon = strrchr(address, ':');
	if (len == 0 || len >= MS_PEER_ADDRESS_MAX || !colon || colon == address)
		return false;
	for (const char *p = address; *p; p++)
		if (*p <= ' ' || *p > '~' || *p == '/' || *p == '@')
			return false;
	size_t digits = strlen(colon + 1);
	if (digits == 0 || digits > 5)
		return false;
	for (const char *p = colon + 1; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	return atoi(colon + 1) <= 65535;
}

int ms_peer_registry_put(struct ms_store *store, const ms_uuid *build_id, const char *address,
			 int64_t ttl_ms, int64_t now_ms)
{
	if (!address || !ms_peer_address_valid(address) || ms_uuid_is_nil(build_id))
		return -EINVAL;
	char key[MS_STORE_KEY_MAX], id[MS_UUID_STR_LEN];
	int err = ms_peer_registry_key(build_id, key, sizeof(key));
	if (err)
		return err;
	ms_uuid_format(build_id, id);
	cJSON *o = cJSON_CreateObject();
	char *body = NULL;
	if (o && cJSON_AddStringToObject(o, "build_id", id) &&
	    cJSON_AddStringToObject(o, "address", address) &&
	    cJSON_AddNumberToObject(o, "written_at_ms", (double)now_ms) &&
	    cJSON_AddNumberToObject(
		o, "expires_at_ms",
		(double)(now_ms + (ttl_ms > 0 ? ttl_ms : MS_PEER_TTL_DEFAULT_MS))))
		body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!body)
		return -ENOMEM;
	err = ms_store_put_buf(store, key, body, strlen(body), NULL);
	free(body);
	return err;
}

int ms_peer_registry_remove(struct ms_store *store, const ms_uuid *build_id)
{
	char key[MS_STORE_KEY_MAX];
	int err = ms_peer_registry_key(build_id, key, sizeof(key));
	if (!err && (err = ms_store_remove(store, key)) == MS_ENOTFOUND)
		err = 0;
	return err;
}

/* A whole number of ms that a double holds exactly. */
static bool ms_peer_json_ms(const cJSON *o, const char *name, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
	    v->valuedouble > 9007199254740992.0 || floor(v->valuedouble) != v->valuedouble)
		return false;
	*out = (int64_t)v->valuedouble;
	return true;
}

int ms_peer_record_parse(const void *buf, size_t len, struct ms_peer_record *out)
{
	if (len == 0 || len > MS_PEER_RECORD_MAX)
		return MS_ECORRUPT;
	cJSON *o = cJSON_ParseWithLength(buf, len);
	struct ms_peer_record rec = {0};
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "build_id");
	const cJSON *address = cJSON_GetObjectItemCaseSensitive(o, "address");
	bool ok = cJSON_IsObject(o) && cJSON_IsString(id) && cJSON_IsString(address) &&
		  ms_uuid_parse(id->valuestring, &rec.build_id) == 0 &&
		  !ms_uuid_is_nil(&rec.build_id) && ms_peer_address_valid(address->valuestring) &&
		  ms_peer_json_ms(o, "written_at_ms", &rec.written_at_ms) &&
		  ms_peer_json_ms(o, "expires_at_ms", &rec.expires_at_ms);
	if (ok)
		snprintf(rec.address, sizeof(rec.address), "%s", address->valuestring);
	cJSON_Delete(o);
	if (!ok)
		return MS_ECORRUPT;
	*out = rec;
	return 0;
}

int ms_peer_registry_lookup(struct ms_store *store, const ms_uuid *build_id, int64_t now_ms,
			    struct ms_peer_record *out)
{
	char key[MS_STORE_KEY_MAX];
	void *buf = NULL;
	size_t len;
	int err = ms_peer_registry_key(build_id, key, sizeof(key));
	if (err || (err = ms_store_read_all(store, key, MS_PEER_RECORD_MAX, &buf, &len)))
		return err == MS_ETOOBIG ? MS_ENOTFOUND : err;
	struct ms_peer_record rec;
	err = ms_peer_record_parse(buf, len, &rec);
	free(buf);
	if (err || !ms_uuid_eq(&rec.build_id, build_id) || now_ms >= rec.expires_at_ms)
		return MS_ENOTFOUND;
	*out = rec;
	return 0;
}
