/*
 * header.h - the layer map of one device: metadata, mappings, builds table.
 *
 * A header tells, for every page of a device (guest memory or rootfs), which
 * build holds it and where in that build's data (as in E2B's orchestrator). Headers
 * are immutable once built: a new snapshot makes a new header (diff header),
 * and readers swap whole header pointers (build/).
 *
 * Builds table (V4+): per build id, the uncompressed data size, SHA-256 (all
 * zero = unknown) and frame table (NULL = uncompressed). Kept sorted by raw
 * uuid bytes. A header parsed from V3 has no builds table (has_builds false).
 *
 * Invariants: mappings valid for meta.size (mapping.h); a diff header is
 * marked incomplete until its upload finishes, and an incomplete header is
 * never persisted (serialize.h).
 */
#ifndef MS_HEADER_HEADER_H
#define MS_HEADER_HEADER_H

#include "storage/frametable.h"
#include "header/mapping.h"
#include "util/pageset.h"
#include "util/uuid.h"

#include <stdbool.h>
#include <stdint.h>

#define MS_HEADER_V3 3
#define MS_HEADER_V4 4
#define MS_HEADER_V5 5

/* The 64-byte metadata, field for field as serialized (little-endian). */
struct ms_header_meta {
	uint64_t version;
	uint64_t block_size;
	uint64_t size;
	uint64_t generation;
	ms_uuid build_id;
	ms_uuid base_build_id;
};

struct ms_build_data {
	ms_uuid build_id;
	int64_t size;		       /* uncompressed data size in bytes */
	uint8_t checksum[32];	       /* SHA-256 of the uncompressed data; zero = unknown */
	struct ms_frame_table *frames; /* NULL: uncompressed; owned */
};

struct ms_header {
	struct ms_header_meta meta;
	struct ms_mappings mappings;
	struct ms_build_data *builds; /* sorted by build id; owned */
	size_t build_count;
	bool has_builds; /* a builds table exists (V4+); false for V3 */
	bool incomplete; /* pending upload: must not be persisted */
};

/*
 * A base header: [0, size) maps to the nil build, header build id = build_id,
 * generation 0, base build = build_id (e2b's block.Empty). With identity true
 * the whole range maps to build_id itself at identity offsets (a full base file).
 */
struct ms_header *ms_header_new_base(const ms_uuid *build_id, uint64_t version, uint64_t block_size,
				     uint64_t size, bool identity);
void ms_header_free(struct ms_header *header);
struct ms_header *ms_header_copy(const struct ms_header *header);

/*
 * The diff header of a new snapshot over parent (E2B's merge):
 * dirty pages map to build_id (packed storage; identity offsets when provisional),
 * empty pages to nil, parent mappings elsewhere; dirty and empty are made
 * disjoint first (dirty wins). Set indices are in units of block_size.
 * generation + 1; version and base build inherited; builds filtered to those
 * still referenced; incomplete = true; validated. On error nothing is returned.
 */
int ms_header_new_diff(const struct ms_header *parent, const ms_uuid *build_id,
		       const struct ms_pageset *dirty, const struct ms_pageset *empty,
		       uint64_t block_size, bool provisional, struct ms_header **out);

/*
 * Shifted lookup: the build holding device offset off, the offset inside that
 * build's data, and the bytes left in the entry from off. Errors (-ERANGE,
 * -EINVAL) for off outside [0, size), unaligned, or not covered.
 */
int ms_header_lookup(const struct ms_header *header, uint64_t off, ms_uuid *build_id,
		     uint64_t *offset_in_build, uint64_t *bytes_left);

/* The builds-table entry of id, or NULL (unknown: must be resolved elsewhere). */
const struct ms_build_data *ms_header_build(const struct ms_header *header, const ms_uuid *id);
/* Adds or replaces the entry of data->build_id (frames copied). 0 or -ENOMEM. */
int ms_header_set_build(struct ms_header *header, const struct ms_build_data *data);
/* Checks mappings against meta.size, metadata sanity, and every frame table. */
int ms_header_validate(const struct ms_header *header);

#endif
