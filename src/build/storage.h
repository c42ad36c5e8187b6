/*
 * storage.h - where a device file's builds come from: the object store, through
 * the node's diff store (E2B's StorageDiff + DiffStore).
 *
 * ms_build_storage_resolve() is the layered file's resolver
 * (ms_layered_resolve_fn): build X of a memfile becomes the diff-store entry
 * "X/memfile", created on first use as a chunked, disk-cached fetch of
 * "X/memfile" (uncompressed) or "X/memfile.zstd|.lz4" (compressed, per the
 * header's builds table); an uncompressed object the store keeps as a local file
 * (ms_store_local: the file store) is read in place instead (cache/objsource.h),
 * never copied into the cache. Entries registered by others (a local diff file, a
 * memfd during a pause) under the same key are used as they are.
 *
 * A compressed ancestor's frame table in a child header may be trimmed
 * (serialize.h): when it does not cover the whole build, the build's own
 * header is fetched for its complete table.
 *
 * Thread-safety: resolve may be called from many threads; the diff store makes
 * one creator per key.
 */
#ifndef MS_BUILD_STORAGE_H
#define MS_BUILD_STORAGE_H

#include "cache/chunker.h"
#include "cache/diffstore.h"
#include "header/header.h"
#include "storage/artifact.h"
#include "storage/checksums.h"
#include "storage/store.h"

#include <stdatomic.h>

struct ms_build_storage {
	struct ms_store *store;		  /* borrowed; outlives this */
	struct ms_diffstore *diffs;	  /* borrowed; outlives this */
	const char *cache_dir;		  /* borrowed; chunk cache files go here */
	enum ms_artifact data;		  /* MS_ARTIFACT_MEMFILE or MS_ARTIFACT_ROOTFS */
	struct ms_chunker_config chunker; /* zero fields: defaults */
	atomic_uint serial;		  /* unique cache file names */
};

/* Diff-store key of a build's data: "{build_id}/memfile" (or rootfs.ext4). */
int ms_build_storage_key(const struct ms_build_storage *bs, const ms_uuid *build_id, char *key,
			 size_t size);
/* Loads and parses "{build_id}/{artifact}" (a header artifact) from store. */
int ms_build_storage_load_header(struct ms_store *store, const ms_uuid *build_id,
				 enum ms_artifact artifact, struct ms_header **out);
/*
 * Opens build_id's data as a chunked source of its own, outside the diff store
 * (for a source that wraps the store and is itself the diff store entry, e.g.
 * peer/'s routing source); sized and framed as resolve does, from header's
 * builds entry. 0 with *out (one reference), or an error.
 */
int ms_build_storage_open(struct ms_build_storage *bs, const ms_uuid *build_id,
			  const struct ms_header *header, struct ms_source **out);
/*
 * Completes a pause's checksum table (storage/checksums.h), which holds the data
 * and snapfile already: adds "{build_id}/metadata.json" when a caller put one in
 * store before the header, and the serialized header about to be put. *out
 * (malloc'd) is the table to put at "{build_id}/checksums" before the header.
 */
int ms_build_storage_sums_finish(struct ms_store *store, const ms_uuid *build_id,
				 struct ms_sums *sums, const void *header, size_t header_len,
				 uint8_t **out, size_t *out_len);
/* One object of ms_build_storage_verify: what it found. */
enum ms_verify_status {
	MS_VERIFY_OK,	   /* every block matches its checksum */
	MS_VERIFY_BAD,	   /* a block does not match, or the object's size differs */
	MS_VERIFY_NONE,	   /* not in the build's checksum table (or there is no table) */
	MS_VERIFY_MISSING, /* listed in the table, not in the store */
};

struct ms_verify_row {
	ms_uuid build_id;
	char name[64];	/* object name after "{build_id}/" */
	uint64_t bytes; /* in the store */
	enum ms_verify_status status;
	int err;	     /* the store's error, if reading failed (status BAD) */
	uint64_t bad_offset; /* BAD: where the first block that does not match starts */
};

/* "ok", "bad", "none", "missing". */
const char *ms_verify_status_name(enum ms_verify_status status);

/*
 * Checks every object of build_id and of every build its header maps (its
 * ancestors) in store against their checksum tables, reading past any checking
 * wrapper (storage/verified.h) so that nothing is fetched twice or counted.
 * Calls fn once per object, builds in header order, objects in key order. 0 when
 * every object is ok or none, MS_ECHECKSUM when one is bad or missing, or the
 * error that stopped it (the build's header cannot be read: MS_ENOTFOUND, ...).
 */
typedef void (*ms_verify_fn)(const struct ms_verify_row *row, void *ctx);
int ms_build_storage_verify(struct ms_store *store, const ms_uuid *build_id, ms_verify_fn fn,
			    void *ctx);

/* ms_layered_resolve_fn over a struct ms_build_storage. */
int ms_build_storage_resolve(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
			     struct ms_source **out);

#endif
