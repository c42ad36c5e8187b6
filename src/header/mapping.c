/*
 * mapping.c - building, merging, normalising and checking mapping lists.
 * See mapping.h for the invariants; E2B's header merge for the cases.
 */
#include "header/mapping.h"
#include "util/interval.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ms_mappings_fini(struct ms_mappings *list)
{
	free(list->entries);
	memset(list, 0, sizeof(*list));
}

int ms_mappings_push(struct ms_mappings *list, const struct ms_mapping *entry)
{
	if (list->count == list->cap) {
		size_t cap = list->cap ? list->cap * 2 : 16;
		struct ms_mapping *grown = realloc(list->entries, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		list->entries = grown;
		list->cap = cap;
	}
	list->entries[list->count++] = *entry;
	return 0;
}

/* Shrinks the array to its count (headers are cached for hours). */
static void ms_mappings_shrink(struct ms_mappings *list)
{
	if (list->count && list->count < list->cap) {
		struct ms_mapping *exact = realloc(list->entries, list->count * sizeof(*exact));
		if (exact) {
			list->entries = exact;
			list->cap = list->count;
		}
	}
}

int ms_mappings_copy(const struct ms_mappings *src, struct ms_mappings *out)
{
	memset(out, 0, sizeof(*out));
	if (!src->count)
		return 0;
	out->entries = malloc(src->count * sizeof(*out->entries));
	if (!out->entries)
		return -ENOMEM;
	memcpy(out->entries, src->entries, src->count * sizeof(*out->entries));
	out->count = out->cap = src->count;
	return 0;
}

int ms_mappings_from_pages(const ms_uuid *build_id, const struct ms_pageset *pages,
			   uint64_t block_size, bool identity, struct ms_mappings *out)
{
	memset(out, 0, sizeof(*out));
	if (block_size == 0 || block_size % MS_PAGE_SIZE)
		return -EINVAL;
	uint64_t cursor = 0, start, len, storage = 0;
	while (ms_pageset_next_run(pages, &cursor, &start, &len)) {
		struct ms_mapping entry = {
		    .offset = start * block_size,
		    .length = len * block_size,
		    .build_id = *build_id,
		    .storage_offset = identity ? start * block_size : storage,
		};
		if ((entry.offset + entry.length) / MS_PAGE_SIZE > MS_MAX_PAGE_INDEX + 1) {
			ms_mappings_fini(out);
			return -ERANGE;
		}
		int err = ms_mappings_push(out, &entry);
		if (err) {
			ms_mappings_fini(out);
			return err;
		}
		storage += entry.length;
	}
	ms_mappings_shrink(out);
	return 0;
}

/* Drops the first cut bytes of an entry: offset and storage move together. */
static struct ms_mapping ms_mapping_trim_left(struct ms_mapping entry, uint64_t cut)
{
	entry.offset += cut;
	entry.storage_offset += cut;
	entry.length -= cut;
	return entry;
}

int ms_mappings_merge(const struct ms_mappings *base, const struct ms_mappings *diff,
		      struct ms_mappings *out)
{
	memset(out, 0, sizeof(*out));
	size_t i = 0, j = 0;
	int err = 0;
	struct ms_mapping cur; /* the current base entry, possibly trimmed on the left */
	bool have_cur = false;
	for (;;) {
		if (!have_cur) {
			while (i < base->count && base->entries[i].length == 0)
				i++;
			if (i < base->count) {
				cur = base->entries[i++];
				have_cur = true;
			}
		}
		while (j < diff->count && diff->entries[j].length == 0)
			j++;
		if (!have_cur || j == diff->count)
			break;
		const struct ms_mapping *d = &diff->entries[j];
		uint64_t cur_end = cur.offset + cur.length, d_end = d->offset + d->length;
		if (cur_end <= d->offset) {
			/* base entirely before diff */
			err = ms_mappings_push(out, &cur);
			have_cur = false;
		} else if (d_end <= cur.offset) {
			/* diff entirely before base */
			err = ms_mappings_push(out, d);
			j++;
		} else if (cur.offset < d->offset) {
			/* base starts first: emit its left part, keep the rest */
			struct ms_mapping left = cur;
			left.length = d->offset - cur.offset;
			err = ms_mappings_push(out, &left);
			cur = ms_mapping_trim_left(cur, left.length);
		} else if (cur_end <= d_end) {
			/* base inside diff: dropped */
			have_cur = false;
		} else {
			/* diff covers base's start, base goes on past it */
			err = ms_mappings_push(out, d);
			j++;
			cur = ms_mapping_trim_left(cur, d_end - cur.offset);
		}
		if (err)
			goto fail;
	}
	if (have_cur && (err = ms_mappings_push(out, &cur)))
		goto fail;
	for (; i < base->count; i++)
		if (base->entries[i].length && (err = ms_mappings_push(out, &base->entries[i])))
			goto fail;
	for (; j < diff->count; j++)
		if (diff->entries[j].length && (err = ms_mappings_push(out, &diff->entries[j])))
			goto fail;
	ms_mappings_shrink(out);
	return 0;
fail:
	ms_mappings_fini(out);
	return err;
}

int ms_mappings_normalize(const struct ms_mappings *in, struct ms_mappings *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < in->count; i++) {
		const struct ms_mapping *next = &in->entries[i];
		if (next->length == 0)
			continue;
		if (out->count) {
			struct ms_mapping *last = &out->entries[out->count - 1];
			bool same = ms_uuid_eq(&last->build_id, &next->build_id);
			bool adjacent = last->offset + last->length == next->offset;
			bool contiguous =
			    ms_uuid_is_nil(&next->build_id) ||
			    last->storage_offset + last->length == next->storage_offset;
			if (same && adjacent && contiguous) {
				last->length += next->length;
				continue;
			}
		}
		struct ms_mapping entry = *next;
		if (ms_uuid_is_nil(&entry.build_id))
			entry.storage_offset = 0; /* meaningless for nil: canonical 0 */
		int err = ms_mappings_push(out, &entry);
		if (err) {
			ms_mappings_fini(out);
			return err;
		}
	}
	ms_mappings_shrink(out);
	return 0;
}

int ms_mappings_validate(const struct ms_mappings *list, uint64_t size)
{
	uint64_t cover = (size + MS_PAGE_SIZE - 1) / MS_PAGE_SIZE * MS_PAGE_SIZE;
	uint64_t expect = 0;
	if (cover / MS_PAGE_SIZE > MS_MAX_PAGE_INDEX + 1) {
		ms_debug("header", "size %llu exceeds 2^32 pages", (unsigned long long)size);
		return MS_ECORRUPT;
	}
	for (size_t i = 0; i < list->count; i++) {
		const struct ms_mapping *e = &list->entries[i];
		if (e->length == 0 || e->offset % MS_PAGE_SIZE || e->length % MS_PAGE_SIZE ||
		    e->storage_offset % MS_PAGE_SIZE) {
			ms_debug("header", "entry %zu: zero-length or unaligned", i);
			return MS_ECORRUPT;
		}
		if (e->offset != expect) {
			ms_debug("header", "entry %zu: offset %llu, expected %llu (gap or overlap)",
				 i, (unsigned long long)e->offset, (unsigned long long)expect);
			return MS_ECORRUPT;
		}
		if (e->length > cover - expect ||
		    e->storage_offset / MS_PAGE_SIZE + e->length / MS_PAGE_SIZE >
			MS_MAX_PAGE_INDEX + 1) {
			ms_debug("header", "entry %zu: past the size or the 32-bit page range", i);
			return MS_ECORRUPT;
		}
		expect += e->length;
	}
	if (expect != cover) {
		ms_debug("header", "mappings cover %llu bytes, size needs %llu",
			 (unsigned long long)expect, (unsigned long long)cover);
		return MS_ECORRUPT;
	}
	return 0;
}

static void ms_mapping_at(const void *table, size_t i, uint64_t *start, uint64_t *length)
{
	const struct ms_mapping *e = &((const struct ms_mapping *)table)[i];
	*start = e->offset;
	*length = e->length;
}

int ms_mappings_find(const struct ms_mappings *list, uint64_t off, size_t *index)
{
	return ms_interval_find(list->entries, list->count, off, ms_mapping_at, index);
}

uint64_t ms_mappings_bytes_of(const struct ms_mappings *list, const ms_uuid *build_id)
{
	uint64_t total = 0;
	for (size_t i = 0; i < list->count; i++)
		if (ms_uuid_eq(&list->entries[i].build_id, build_id))
			total += list->entries[i].length;
	return total;
}
