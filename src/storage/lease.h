/*
 * lease.h - leases in the object store: a small object "{kind}/{build_id}"
 * that says a build is in use by a holder until a time, so that a collector
 * (memsnap store gc) leaves the build's objects alone while it lasts. Two kinds:
 *   peers/    a node serves the build to other nodes before its upload lands
 *             (node/peer/registry.h: holder field "address", the peer server)
 *   uploads/  a pause pipeline is uploading the build (data before header:
 *             until the header lands, nothing else names the data)
 * A holder that dies leaves its lease behind; it expires, and the collector
 * removes it then.
 *
 * Object format (JSON, at most MS_LEASE_MAX bytes):
 *
 *   field          | type   | meaning
 *   ---------------+--------+------------------------------------------------
 *   build_id       | string | canonical uuid; must match the key
 *   HOLDER         | string | who holds it, 1..63 printable bytes (the field's
 *                  |        | name is the kind's: "address" for peers/,
 *                  |        | "holder" for uploads/)
 *   written_at_ms  | number | Unix ms when written (informational)
 *   expires_at_ms  | number | Unix ms after which the lease means nothing
 *
 * Times are wall-clock (CLOCK_REALTIME): leases are read by other nodes.
 * Thread-safety: stateless; the store is thread-safe.
 */
#ifndef MS_STORAGE_LEASE_H
#define MS_STORAGE_LEASE_H

#include "storage/store.h"
#include "util/uuid.h"

#include <stddef.h>
#include <stdint.h>

#define MS_LEASE_MAX	    1024
#define MS_LEASE_HOLDER_MAX 64
#define MS_LEASE_PEERS	    "peers"
#define MS_LEASE_UPLOADS    "uploads"
/* E2B's upload budget + 2 min: longer than any upload */
#define MS_LEASE_TTL_DEFAULT_MS ((2LL * 3600 + 120) * 1000)

struct ms_lease {
	ms_uuid build_id;
	char holder[MS_LEASE_HOLDER_MAX];
	int64_t written_at_ms, expires_at_ms;
};

/* Unix time in ms (CLOCK_REALTIME). */
int64_t ms_lease_now_ms(void);
/* "{kind}/{build_id}" into key. 0 or -ENAMETOOLONG. */
int ms_lease_key(const char *kind, const ms_uuid *build_id, char *key, size_t size);
/*
 * Writes the lease (ttl_ms <= 0: the default), replacing an old one; the
 * holder goes into the field holder_field. -EINVAL for a nil id or a holder
 * that is empty, too long or not printable.
 */
int ms_lease_put(struct ms_store *store, const char *kind, const char *holder_field,
		 const ms_uuid *build_id, const char *holder, int64_t ttl_ms, int64_t now_ms);
/* Removes the lease; a missing one is fine (0). */
int ms_lease_remove(struct ms_store *store, const char *kind, const ms_uuid *build_id);
/* Parses a lease's bytes (pure). 0 or MS_ECORRUPT. */
int ms_lease_parse(const void *buf, size_t len, const char *holder_field, struct ms_lease *out);
/*
 * Reads and parses the lease at key (any kind, expired or not). 0,
 * MS_ENOTFOUND (no such object), MS_ECORRUPT (not a lease), or a store error.
 */
int ms_lease_read(struct ms_store *store, const char *key, const char *holder_field,
		  struct ms_lease *out);

#endif
