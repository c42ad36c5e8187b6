/* frametable.c - frame tables: building, locating, validating (storage/frametable.h). */
#include "storage/frametable.h"
#include "util/interval.h"
#include "util/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const ms_compression_names[] = {"none", "zstd", "lz4"};

const char *ms_compression_name(enum ms_compression type)
{
	if ((unsigned)type > MS_COMPRESS_LZ4)
		return NULL;
	return ms_compression_names[type];
}

int ms_compression_parse(const char *name, enum ms_compression *out)
{
	for (int i = 0; i <= MS_COMPRESS_LZ4; i++) {
		if (strcmp(name, ms_compression_names[i]) == 0) {
			*out = (enum ms_compression)i;
			return 0;
		}
	}
	return -EINVAL;
}

struct ms_frame_table *ms_frame_table_new(enum ms_compression type)
{
	struct ms_frame_table *table = calloc(1, sizeof(*table));
	if (table)
		table->type = type;
	return table;
}

void ms_frame_table_free(struct ms_frame_table *table)
{
	if (!table)
		return;
	free(table->frames);
	free(table);
}

struct ms_frame_table *ms_frame_table_copy(const struct ms_frame_table *table)
{
	struct ms_frame_table *copy = ms_frame_table_new(table->type);
	if (!copy)
		return NULL;
	if (table->count) {
		copy->frames = malloc(sizeof(struct ms_frame) * table->count);
		if (!copy->frames) {
			free(copy);
			return NULL;
		}
		memcpy(copy->frames, table->frames, sizeof(struct ms_frame) * table->count);
	}
	copy->count = table->count;
	return copy;
}

int ms_frame_table_append(struct ms_frame_table *table, int32_t size_u, int32_t size_c)
{
	if (size_u <= 0 || size_c <= 0 || table->count >= MS_FRAMES_MAX ||
	    table->type == MS_COMPRESS_NONE)
		return MS_ECORRUPT;
	struct ms_frame *grown =
	    realloc(table->frames, sizeof(struct ms_frame) * ((size_t)table->count + 1));
	if (!grown)
		return -ENOMEM;
	table->frames = grown;
	grown[table->count] = (struct ms_frame){
	    .start_u = ms_frame_table_size_u(table),
	    .start_c = ms_frame_table_size_c(table),
	    .size_u = size_u,
	    .size_c = size_c,
	};
	table->count++;
	return 0;
}

int64_t ms_frame_table_size_u(const struct ms_frame_table *table)
{
	if (!table->count)
		return 0;
	const struct ms_frame *last = &table->frames[table->count - 1];
	return last->start_u + last->size_u;
}

int64_t ms_frame_table_size_c(const struct ms_frame_table *table)
{
	if (!table->count)
		return 0;
	const struct ms_frame *last = &table->frames[table->count - 1];
	return last->start_c + last->size_c;
}

static void ms_frame_at(const void *table, size_t i, uint64_t *start, uint64_t *length)
{
	const struct ms_frame *f = &((const struct ms_frame *)table)[i];
	*start = (uint64_t)f->start_u;
	*length = (uint64_t)f->size_u;
}

int ms_frame_table_locate(const struct ms_frame_table *table, int64_t off_u, uint32_t *index)
{
	size_t found;
	if (off_u < 0 ||
	    ms_interval_find(table->frames, table->count, (uint64_t)off_u, ms_frame_at, &found))
		return -ERANGE;
	*index = (uint32_t)found;
	return 0;
}

int ms_frame_table_validate(const struct ms_frame_table *table)
{
	if ((unsigned)table->type > MS_COMPRESS_LZ4)
		return MS_ECORRUPT;
	if (table->type == MS_COMPRESS_NONE && table->count > 0)
		return MS_ECORRUPT;
	if (table->count > MS_FRAMES_MAX)
		return MS_ECORRUPT;
	int64_t end_u = 0, end_c = 0;
	for (uint32_t i = 0; i < table->count; i++) {
		const struct ms_frame *f = &table->frames[i];
		if (f->size_u <= 0 || f->size_c <= 0)
			return MS_ECORRUPT;
		/* A trimmed table may skip frames, so starts may jump forward, never back. */
		if (f->start_u < end_u || f->start_c < end_c)
			return MS_ECORRUPT;
		if (f->start_u > INT64_MAX - f->size_u || f->start_c > INT64_MAX - f->size_c)
			return MS_ECORRUPT;
		end_u = f->start_u + f->size_u;
		end_c = f->start_c + f->size_c;
	}
	return 0;
}

bool ms_frame_table_equal(const struct ms_frame_table *a, const struct ms_frame_table *b)
{
	if (!a || !b)
		return a == b;
	return a->type == b->type && a->count == b->count &&
	       (a->count == 0 ||
		memcmp(a->frames, b->frames, sizeof(struct ms_frame) * a->count) == 0);
}
