/* registry.c - peer records in the shared object store (registry.h): leases of the
 * peers/ kind (storage/lease.h) whose holder is the node's peer server address. */
#include "node/peer/registry.h"
#include "storage/lease.h"
#include "util/err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t ms_peer_registry_now_ms(void)
{
	return ms_lease_now_ms();
}

int ms_peer_registry_key(const ms_uuid *build_id, char *key, size_t size)
{
	return ms_lease_key(MS_LEASE_PEERS, build_id, key, size);
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
	if (!address || !ms_peer_address_valid(address))
		return -EINVAL;
	return ms_lease_put(store, MS_LEASE_PEERS, "address", build_id, address,
			    ttl_ms > 0 ? ttl_ms : MS_PEER_TTL_DEFAULT_MS, now_ms);
}

int ms_peer_registry_remove(struct ms_store *store, const ms_uuid *build_id)
{
	return ms_lease_remove(store, MS_LEASE_PEERS, build_id);
}

/* A lease of the peers/ kind whose holder is a peer server's address. */
static int ms_peer_record_of(const struct ms_lease *lease, struct ms_peer_record *out)
{
	if (!ms_peer_address_valid(lease->holder))
		return MS_ECORRUPT;
	struct ms_peer_record rec = {.build_id = lease->build_id,
				     .written_at_ms = lease->written_at_ms,
				     .expires_at_ms = lease->expires_at_ms};
	snprintf(rec.address, sizeof(rec.address), "%s", lease->holder);
	*out = rec;
	return 0;
}

int ms_peer_record_parse(const void *buf, size_t len, struct ms_peer_record *out)
{
	struct ms_lease lease;
	if (len > MS_PEER_RECORD_MAX || ms_lease_parse(buf, len, "address", &lease))
		return MS_ECORRUPT;
	return ms_peer_record_of(&lease, out);
}

int ms_peer_registry_lookup(struct ms_store *store, const ms_uuid *build_id, int64_t now_ms,
			    struct ms_peer_record *out)
{
	char key[MS_STORE_KEY_MAX];
	struct ms_lease lease;
	struct ms_peer_record rec;
	int err = ms_peer_registry_key(build_id, key, sizeof(key));
	if (!err)
		err = ms_lease_read(store, key, "address", &lease);
	if (err)
		return err == MS_ECORRUPT ? MS_ENOTFOUND : err;
	if (ms_peer_record_of(&lease, &rec) || !ms_uuid_eq(&rec.build_id, build_id) ||
	    now_ms >= rec.expires_at_ms)
		return MS_ENOTFOUND;
	*out = rec;
	return 0;
}
