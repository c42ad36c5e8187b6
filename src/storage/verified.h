/*
 * verified.h - a store wrapper that checks every read against the build's
 * checksum table (storage/checksums.h) before it returns a byte.
 *
 * A read of "{build_id}/{name}" is widened to the blocks it touches, checked
 * block by block, and copied out only when every block matches. A block that
 * does not match is counted (ms_integrity_count, once per read) and fetched once more; if it
 * still does not match, the read fails with MS_ECHECKSUM and the log names the
 * object, the block and both fetches. A truncated object does not match either.
 * So a chunker over this store caches and serves only checked bytes, and a
 * snapfile or header read through it is checked whole (docs/design.md §5.8).
 *
 * Keys that are not a build's object (peers/...), the table itself, objects
 * the table does not list, and builds without a table pass through unchecked.
 * A build has no table when its header is in the store but its table is not
 * (written before checksums, or by another tool): that is said once per build
 * in the log. A build with neither is not published yet; nothing is remembered.
 * Tables are cached (immutable once written: a put or remove of one drops it).
 * ms_store_local passes through with the table that lists the object, for a
 * reader in place (cache/objsource.h) to check each block itself.
 *
 * ms_store_open() wraps every store it opens in one. Thread-safe.
 */
#ifndef MS_STORAGE_VERIFIED_H
#define MS_STORAGE_VERIFIED_H

#include "storage/store.h"

#include <stdbool.h>

/* Wraps inner; with own, inner is freed with the wrapper. NULL on -ENOMEM. */
struct ms_store *ms_store_verified_new(struct ms_store *inner, bool own);
/* The store under a verifying wrapper, or store itself when it is none. */
struct ms_store *ms_store_unverified(struct ms_store *store);

#endif
