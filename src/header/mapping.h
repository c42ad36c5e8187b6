/*
 * mapping.h - mappings: which build holds each page of a device, and where.
 *
 * A mapping entry says: device bytes [offset, offset + length) are stored in
 * build build_id at storage_offset (the build's uncompressed data, "U-space").
 * The nil build (all-zero uuid) reads as zeros and is never fetched. All values
 * are bytes and multiples of MS_PAGE_SIZE (4 KiB), whatever the header's block
 * size (as in E2B's orchestrator).
 *
 * Invariants of a valid mapping list (docs/design.md §5.1), checked by
 * ms_mappings_validate():
 *  1. entries sorted by offset, contiguous from 0, no zero-length entry;
 *  2. they cover [0, roundup(size, MS_PAGE_SIZE)) exactly;
 *  3. every offset, length and storage offset is page aligned, and page indices
 *     fit in 32 bits (16 TiB).
 * merge(): the diff wins on overlap; a split piece shifts its storage offset with
 * its device offset. normalize(): joins neighbours of one build only across
 * contiguous storage; nil entries always join and get storage offset 0.
 * Pure functions: no I/O, inputs never mutated, outputs exactly sized.
 */
#ifndef MS_HEADER_MAPPING_H
#define MS_HEADER_MAPPING_H

#include "util/pageset.h"
#include "util/uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_PAGE_SIZE	  4096ULL
#define MS_HUGE_PAGE_SIZE (2ULL << 20)
#define MS_MAX_PAGE_INDEX 0xffffffffULL

struct ms_mapping {
	uint64_t offset;
	uint64_t length;
	ms_uuid build_id;
	uint64_t storage_offset;
};

/* A growable list; zero-initialised is empty. */
struct ms_mappings {
	struct ms_mapping *entries;
	size_t count;
	size_t cap;
};

void ms_mappings_fini(struct ms_mappings *list);
int ms_mappings_push(struct ms_mappings *list, const struct ms_mapping *entry);
int ms_mappings_copy(const struct ms_mappings *src, struct ms_mappings *out);

/*
 * One entry per run of set bits in pages (indices in units of block_size).
 * Packed: storage offsets are the running sum of lengths (the diff file layout).
 * Identity: storage offset = device offset (provisional headers).
 */
int ms_mappings_from_pages(const ms_uuid *build_id, const struct ms_pageset *pages,
			   uint64_t block_size, bool identity, struct ms_mappings *out);
int ms_mappings_merge(const struct ms_mappings *base, const struct ms_mappings *diff,
		      struct ms_mappings *out);
int ms_mappings_normalize(const struct ms_mappings *in, struct ms_mappings *out);
/* 0 or MS_ECORRUPT (the reason is logged at debug level). */
int ms_mappings_validate(const struct ms_mappings *list, uint64_t size);
/* Index of the entry containing off, or -ERANGE. */
int ms_mappings_find(const struct ms_mappings *list, uint64_t off, size_t *index);
/* Bytes mapped to build_id. */
uint64_t ms_mappings_bytes_of(const struct ms_mappings *list, const ms_uuid *build_id);

#endif
