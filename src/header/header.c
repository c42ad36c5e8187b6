/* header.c - headers: base and diff construction, lookups, the builds table. */
#include "header/header.h"
#include "util/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void ms_build_data_fini(struct ms_build_data *data)
{
	ms_frame_table_free(data->frames);
	data->frames = NULL;
}

void ms_header_free(struct ms_header *header)
{
	if (!header)
		return;
	ms_mappings_fini(&header->mappings);
	for (size_t i = 0; i < header->build_count; i++)
		ms_build_data_fini(&header->builds[i]);
	free(header->builds);
	free(header);
}

struct ms_header *ms_header_new_base(const ms_uuid *build_id, uint64_t version, uint64_t block_size,
				     uint64_t size, bool identity)
{
	if (block_size == 0 || block_size % MS_PAGE_SIZE)
		return NULL;
	struct ms_header *header = calloc(1, sizeof(*header));
	if (!header)
		return NULL;
	header->meta = (struct ms_header_meta){
	    .version = version,
	    .block_size = block_size,
	    .size = size,
	    .build_id = *build_id,
	    .base_build_id = *build_id,
	};
	header->has_builds = version >= MS_HEADER_V4;
	uint64_t cover = (size + MS_PAGE_SIZE - 1) / MS_PAGE_SIZE * MS_PAGE_SIZE;
	if (cover) {
		struct ms_mapping all = {.offset = 0, .length = cover};
		if (identity)
			all.build_id = *build_id;
		if (ms_mappings_push(&header->mappings, &all) ||
		    ms_mappings_validate(&header->mappings, size)) {
			ms_header_free(header);
			return NULL;
		}
	}
	return header;
}

struct ms_header *ms_header_copy(const struct ms_header *header)
{
	struct ms_header *copy = calloc(1, sizeof(*copy));
	if (!copy)
		return NULL;
	copy->meta = header->meta;
	copy->has_builds = header->has_builds;
	copy->incomplete = header->incomplete;
	if (ms_mappings_copy(&header->mappings, &copy->mappings))
		goto fail;
	for (size_t i = 0; i < header->build_count; i++)
		if (ms_header_set_build(copy, &header->builds[i]))
			goto fail;
	return copy;
fail:
	ms_header_free(copy);
	return NULL;
}

static size_t ms_header_build_slot(const struct ms_header *header, const ms_uuid *id, bool *found)
{
	size_t lo = 0, hi = header->build_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int cmp = ms_uuid_cmp(&header->builds[mid].build_id, id);
		if (cmp == 0) {
			*found = true;
			return mid;
		}
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

const struct ms_build_data *ms_header_build(const struct ms_header *header, const ms_uuid *id)
{
	bool found;
	size_t slot = ms_header_build_slot(header, id, &found);
	return found ? &header->builds[slot] : NULL;
}

int ms_header_set_build(struct ms_header *header, const struct ms_build_data *data)
{
	struct ms_build_data entry = *data;
	entry.frames = NULL;
	if (data->frames && !(entry.frames = ms_frame_table_copy(data->frames)))
		return -ENOMEM;
	bool found;
	size_t slot = ms_header_build_slot(header, &data->build_id, &found);
	if (found) {
		ms_build_data_fini(&header->builds[slot]);
		header->builds[slot] = entry;
		return 0;
	}
	struct ms_build_data *grown =
	    realloc(header->builds, (header->build_count + 1) * sizeof(*grown));
	if (!grown) {
		ms_frame_table_free(entry.frames);
		return -ENOMEM;
	}
	header->builds = grown;
	memmove(&grown[slot + 1], &grown[slot], (header->build_count - slot) * sizeof(*grown));
	grown[slot] = entry;
	header->build_count++;
	header->has_builds = true;
	return 0;
}

int ms_header_lookup(const struct ms_header *header, uint64_t off, ms_uuid *build_id,
		     uint64_t *offset_in_build, uint64_t *bytes_left)
{
	if (off >= header->meta.size)
		return -ERANGE;
	if (off % MS_PAGE_SIZE)
		return -EINVAL;
	size_t index;
	if (ms_mappings_find(&header->mappings, off, &index))
		return -ERANGE;
	const struct ms_mapping *e = &header->mappings.entries[index];
	*build_id = e->build_id;
	*offset_in_build = e->storage_offset + (off - e->offset);
	*bytes_left = e->length - (off - e->offset);
	return 0;
}

int ms_header_validate(const struct ms_header *header)
{
	if (header->meta.block_size == 0 || header->meta.block_size % MS_PAGE_SIZE)
		return MS_ECORRUPT;
	int err = ms_mappings_validate(&header->mappings, header->meta.size);
	if (err)
		return err;
	for (size_t i = 0; i < header->build_count; i++) {
		const struct ms_build_data *b = &header->builds[i];
		if (b->size < 0 ||
		    (i && ms_uuid_cmp(&header->builds[i - 1].build_id, &b->build_id) >= 0))
			return MS_ECORRUPT;
		if (b->frames && (err = ms_frame_table_validate(b->frames)))
			return err;
	}
	return 0;
}

/* Keeps the parent's build entries that the new mappings still reference. */
static int ms_header_inherit_builds(struct ms_header *child, const struct ms_header *parent)
{
	child->has_builds = parent->has_builds;
	for (size_t i = 0; i < parent->build_count; i++) {
		const struct ms_build_data *b = &parent->builds[i];
		if (!ms_mappings_bytes_of(&child->mappings, &b->build_id))
			continue;
		int err = ms_header_set_build(child, b);
		if (err)
			return err;
	}
	return 0;
}

int ms_header_new_diff(const struct ms_header *parent, const ms_uuid *build_id,
		       const struct ms_pageset *dirty, const struct ms_pageset *empty,
		       uint64_t block_size, bool provisional, struct ms_header **out)
{
	struct ms_mappings dirty_map = {0}, empty_map = {0}, diff = {0}, merged = {0};
	struct ms_pageset *empty_only = NULL;
	struct ms_header *child = NULL;
	ms_uuid nil = MS_UUID_NIL;
	int err = -EINVAL;
	*out = NULL;
	if (ms_uuid_is_nil(build_id) || block_size == 0 || block_size % MS_PAGE_SIZE)
		return -EINVAL;
	err = -ENOMEM;
	if (!(empty_only = ms_pageset_copy(empty)))
		goto out;
	ms_pageset_subtract(empty_only, dirty); /* dirty wins */
	if ((err = ms_mappings_from_pages(build_id, dirty, block_size, provisional, &dirty_map)) ||
	    (err = ms_mappings_from_pages(&nil, empty_only, block_size, true, &empty_map)) ||
	    (err = ms_mappings_merge(&dirty_map, &empty_map, &diff)) ||
	    (err = ms_mappings_merge(&parent->mappings, &diff, &merged)))
		goto out;
	err = -ENOMEM;
	if (!(child = calloc(1, sizeof(*child))))
		goto out;
	if ((err = ms_mappings_normalize(&merged, &child->mappings)))
		goto out;
	child->meta = parent->meta;
	child->meta.generation = parent->meta.generation + 1;
	child->meta.build_id = *build_id;
	child->incomplete = true;
	if ((err = ms_header_inherit_builds(child, parent)))
		goto out;
	if ((err = ms_mappings_validate(&child->mappings, child->meta.size)))
		goto out;
	*out = child;
	child = NULL;
out:
	ms_header_free(child);
	ms_mappings_fini(&merged);
	ms_mappings_fini(&diff);
	ms_mappings_fini(&empty_map);
	ms_mappings_fini(&dirty_map);
	ms_pageset_free(empty_only);
	return err;
}
