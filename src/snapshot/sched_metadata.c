/*
 * sched_metadata.c - bytes per build of a durable header (sched_metadata.h).
 *
 * The mappings are copied as (build, bytes) pairs, sorted by build and summed:
 * O(m log m) for m mappings, whatever the number of builds.
 */
#include "snapshot/sched_metadata.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int ms_sched_build_by_id(const void *a, const void *b)
{
	return ms_uuid_cmp(&((const struct ms_sched_build *)a)->build_id,
			   &((const struct ms_sched_build *)b)->build_id);
}

/* Heaviest first, ties by id. */
static int ms_sched_build_by_weight(const void *a, const void *b)
{
	const struct ms_sched_build *x = a, *y = b;
	if (x->bytes != y->bytes)
		return x->bytes > y->bytes ? -1 : 1;
	return ms_uuid_cmp(&x->build_id, &y->build_id);
}

/* Moves the entry of id (if any) to slot at. */
static void ms_sched_move_to(struct ms_sched_build *b, size_t n, const ms_uuid *id, size_t at)
{
	for (size_t j = at; j < n; j++)
		if (ms_uuid_eq(&b[j].build_id, id)) {
			struct ms_sched_build tmp = b[at];
			b[at] = b[j];
			b[j] = tmp;
			return;
		}
}

int ms_sched_metadata_from_header(const struct ms_header *header, const ms_uuid *build_id,
				  struct ms_sched_metadata *out)
{
	memset(out, 0, sizeof(*out));
	out->build_id = *build_id;
	out->base_build_id = header->meta.base_build_id;
	out->mem_bytes = header->meta.size;
	size_t n = 0;
	struct ms_sched_build *b = calloc(header->mappings.count + 2, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < header->mappings.count; i++) {
		const struct ms_mapping *m = &header->mappings.entries[i];
		if (!ms_uuid_is_nil(&m->build_id))
			b[n++] = (struct ms_sched_build){m->build_id, m->length};
	}
	const ms_uuid *always[2] = {&header->meta.base_build_id, build_id};
	for (int k = 0; k < 2; k++)
		if (!ms_uuid_is_nil(always[k]))
			b[n++] = (struct ms_sched_build){*always[k], 0};
	qsort(b, n, sizeof(*b), ms_sched_build_by_id);
	size_t distinct = 0;
	for (size_t i = 0; i < n; i++) {
		if (distinct && ms_uuid_eq(&b[distinct - 1].build_id, &b[i].build_id))
			b[distinct - 1].bytes += b[i].bytes;
		else
			b[distinct++] = b[i];
	}
	n = distinct;
	if (n > MS_SCHED_METADATA_MAX) {
		/* the base and the build first, then the heaviest */
		qsort(b, n, sizeof(*b), ms_sched_build_by_weight);
		size_t kept = 0;
		for (int k = 0; k < 2; k++)
			if (!ms_uuid_is_nil(always[k]) &&
			    (k == 0 || !ms_uuid_eq(always[0], always[1]))) {
				ms_sched_move_to(b, n, always[k], kept);
				kept++;
			}
		qsort(b + kept, n - kept, sizeof(*b), ms_sched_build_by_weight);
		out->dropped_builds = n - MS_SCHED_METADATA_MAX;
		n = MS_SCHED_METADATA_MAX;
		qsort(b, n, sizeof(*b), ms_sched_build_by_id);
	}
	out->builds = b;
	out->build_count = n;
	return 0;
}

int ms_sched_metadata_from_file(struct ms_layered *file, const ms_uuid *build_id,
				struct ms_sched_metadata *out)
{
	struct ms_header_ref *durable = ms_layered_durable_header_now(file); /* never waits */
	if (!durable) {
		memset(out, 0, sizeof(*out));
		out->build_id = *build_id;
		out->pending = true;
		return 0;
	}
	int err = ms_sched_metadata_from_header(durable->header, build_id, out);
	ms_header_ref_unref(durable);
	return err;
}

void ms_sched_metadata_fini(struct ms_sched_metadata *metadata)
{
	free(metadata->builds);
	metadata->builds = NULL;
	metadata->build_count = 0;
}
