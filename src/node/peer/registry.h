/*
 * registry.h - peer discovery through the shared object store: the object
 * "peers/{build_id}" says which node serves a build that is not uploaded yet
 * (E2B's orchestrator does this with a Redis key; memsnap needs no extra
 * service). Written when a pause starts, removed when its upload finishes
 * (published or failed); a TTL covers a node that died before removing it.
 *
 * Object format (JSON, at most MS_PEER_RECORD_MAX bytes):
 *
 *   field          | type   | meaning
 *   ---------------+--------+------------------------------------------------
 *   build_id       | string | canonical uuid; must match the key
 *   address        | string | "ADDR:PORT" of the node's peer server
 *   written_at_ms  | number | Unix ms when written (informational)
 *   expires_at_ms  | number | Unix ms after which the record means nothing
 *
 * Lookup ignores (MS_ENOTFOUND) a missing, expired or malformed record: a
 * record is a hint, and the reader falls back to the store without it.
 * Times are wall-clock (CLOCK_REALTIME): records are read by other nodes.
 *
 * Thread-safety: stateless; the store is thread-safe.
 */
#ifndef MS_PEER_REGISTRY_H
#define MS_PEER_REGISTRY_H

#include "storage/store.h"
#include "util/uuid.h"

#include <stdint.h>

#define MS_PEER_ADDRESS_MAX 64
#define MS_PEER_RECORD_MAX  1024
/* e2b: the upload budget + 2 min */
#define MS_PEER_TTL_DEFAULT_MS ((2LL * 3600 + 120) * 1000)

struct ms_peer_record {
	ms_uuid build_id;
	char address[MS_PEER_ADDRESS_MAX];
	int64_t written_at_ms, expires_at_ms;
};

/* Unix time in ms (CLOCK_REALTIME). */
int64_t ms_peer_registry_now_ms(void);
/* "peers/{build_id}" into key (MS_STORE_KEY_MAX bytes). */
int ms_peer_registry_key(const ms_uuid *build_id, char *key, size_t size);
/* Writes the record (ttl_ms <= 0: the default), atomically replacing an old one. */
int ms_peer_registry_put(struct ms_store *store, const ms_uuid *build_id, const char *address,
			 int64_t ttl_ms, int64_t now_ms);
/* Removes the record; a missing one is fine (0). */
int ms_peer_registry_remove(struct ms_store *store, const ms_uuid *build_id);
/* The live record: 0, MS_ENOTFOUND (missing, expired, malformed), or a store error. */
int ms_peer_registry_lookup(struct ms_store *store, const ms_uuid *build_id, int64_t now_ms,
			    struct ms_peer_record *out);
/* Parses a record's bytes (pure; for lookup and the tests). 0 or MS_ECORRUPT. */
int ms_peer_record_parse(const void *buf, size_t len, struct ms_peer_record *out);

#endif
