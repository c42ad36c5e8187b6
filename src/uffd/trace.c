/*
 * trace.c - first-touch traces: the recorder and the metadata.json codec
 * (trace.h has the format and the validation rules).
 *
 * Invariants:
 *  1. A recorded trace holds each block at most once, in first-touch order.
 *  2. A parsed trace passed every rule of trace.h; a refused one leaves *out
 *     empty and nothing allocated.
 */
#include "uffd/trace.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACE_JSON_MAX_INT 9007199254740992.0 /* 2^53: larger doubles are not exact */

void ms_uffd_trace_fini(struct ms_uffd_trace *trace)
{
	free(trace->indices);
	free(trace->access);
	memset(trace, 0, sizeof(*trace));
}

static int trace_refuse(char *why, size_t why_len, const char *fmt, ...)
{
	if (why && why_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return MS_EPROTO;
}

/* A non-negative integer below 2^53, or false. */
static bool trace_json_u64(const cJSON *item, uint64_t *out)
{
	if (!cJSON_IsNumber(item))
		return false;
	double v = item->valuedouble;
	if (!(v >= 0 && v < TRACE_JSON_MAX_INT) || v != (double)(uint64_t)v)
		return false;
	*out = (uint64_t)v;
	return true;
}

/* Checks and copies the memory object's arrays into out. */
static int trace_parse_memory(const cJSON *memory, uint64_t image_size, uint64_t block_size,
			      struct ms_uffd_trace *out, char *why, size_t why_len)
{
	const cJSON *bs = cJSON_GetObjectItemCaseSensitive(memory, "block_size");
	const cJSON *indices = cJSON_GetObjectItemCaseSensitive(memory, "indices");
	const cJSON *types = cJSON_GetObjectItemCaseSensitive(memory, "access_types");
	uint64_t got_bs;
	if (!trace_json_u64(bs, &got_bs))
		return trace_refuse(why, why_len, "block_size missing or not an integer");
	if (got_bs != block_size)
		return trace_refuse(why, why_len, "block_size %llu, the memory's is %llu",
				    (unsigned long long)got_bs, (unsigned long long)block_size);
	if (!cJSON_IsArray(indices) || !cJSON_IsArray(types))
		return trace_refuse(why, why_len, "indices or access_types is not an array");
	int n = cJSON_GetArraySize(indices);
	if (n != cJSON_GetArraySize(types))
		return trace_refuse(why, why_len, "%d indices but %d access types", n,
				    cJSON_GetArraySize(types));
	if ((size_t)n > MS_UFFD_TRACE_MAX)
		return trace_refuse(why, why_len, "%d entries (at most %u)", n, MS_UFFD_TRACE_MAX);
	uint64_t blocks = image_size / block_size;
	uint64_t *seen = calloc(blocks / 64 + 1, sizeof(*seen));
	out->indices = malloc(((size_t)n + 1) * sizeof(*out->indices));
	out->access = malloc((size_t)n + 1);
	if (!seen || !out->indices || !out->access) {
		free(seen);
		return -ENOMEM;
	}
	out->block_size = block_size;
	int err = 0, i = 0;
	const cJSON *idx = indices->child, *type = types->child;
	for (; idx && type && !err; idx = idx->next, type = type->next, i++) {
		uint64_t block = 0;
		if (!trace_json_u64(idx, &block))
			err = trace_refuse(why, why_len, "index %d is not an integer", i);
		else if (block >= blocks)
			err = trace_refuse(why, why_len,
					   "index %d is %llu, past the end (%llu blocks)", i,
					   (unsigned long long)block, (unsigned long long)blocks);
		else if (seen[block / 64] >> (block % 64) & 1)
			err = trace_refuse(why, why_len, "index %d repeats block %llu", i,
					   (unsigned long long)block);
		else if (!cJSON_IsString(type) || strlen(type->valuestring) != 1 ||
			 !strchr("rwp", type->valuestring[0]))
			err = trace_refuse(why, why_len,
					   "access type %d is not \"r\", \"w\" or \"p\"", i);
		if (err)
			break;
		seen[block / 64] |= 1ULL << (block % 64);
		out->indices[i] = block;
		out->access[i] = (uint8_t)type->valuestring[0];
	}
	free(seen);
	out->count = (size_t)i;
	return err;
}

int ms_uffd_trace_parse(const char *text, size_t len, uint64_t image_size, uint64_t block_size,
			struct ms_uffd_trace *out, char *why, size_t why_len)
{
	memset(out, 0, sizeof(*out));
	if (why && why_len)
		why[0] = '\0';
	if (block_size == 0 || (block_size & (block_size - 1)))
		return trace_refuse(why, why_len, "block size %llu is not a power of two",
				    (unsigned long long)block_size);
	cJSON *root = cJSON_ParseWithLength(text, len);
	if (!root)
		return trace_refuse(why, why_len, "metadata.json is not JSON (truncated?)");
	int err = 0;
	const cJSON *prefetch = cJSON_GetObjectItemCaseSensitive(root, "prefetch");
	const cJSON *memory = cJSON_GetObjectItemCaseSensitive(prefetch, "memory");
	if (!cJSON_IsObject(root))
		err = trace_refuse(why, why_len, "metadata.json is not an object");
	else if (prefetch && !cJSON_IsObject(prefetch))
		err = trace_refuse(why, why_len, "prefetch is not an object");
	else if (memory && !cJSON_IsObject(memory))
		err = trace_refuse(why, why_len, "prefetch.memory is not an object");
	else if (memory)
		err = trace_parse_memory(memory, image_size, block_size, out, why, why_len);
	cJSON_Delete(root);
	if (err)
		ms_uffd_trace_fini(out);
	return err;
}

int ms_uffd_trace_to_json(const struct ms_uffd_trace *trace, void *root)
{
	cJSON *prefetch = cJSON_AddObjectToObject(root, "prefetch");
	cJSON *memory = prefetch ? cJSON_AddObjectToObject(prefetch, "memory") : NULL;
	cJSON *indices = memory ? cJSON_AddArrayToObject(memory, "indices") : NULL;
	cJSON *types = indices ? cJSON_AddArrayToObject(memory, "access_types") : NULL;
	if (!types || !cJSON_AddNumberToObject(memory, "block_size", (double)trace->block_size))
		return -ENOMEM;
	for (size_t i = 0; i < trace->count; i++) {
		char type[2] = {(char)trace->access[i], 0};
		cJSON *idx = cJSON_CreateNumber((double)trace->indices[i]);
		cJSON *t = cJSON_CreateString(type);
		if (!idx || !t || !cJSON_AddItemToArray(indices, idx) ||
		    !cJSON_AddItemToArray(types, t)) {
			cJSON_Delete(idx);
			cJSON_Delete(t);
			return -ENOMEM;
		}
	}
	return 0;
}

/* ---- the recorder ---- */

int ms_uffd_recorder_init(struct ms_uffd_recorder *r, uint64_t image_size, uint64_t block_size)
{
	memset(r, 0, sizeof(*r));
	r->block_size = block_size;
	r->blocks = image_size / block_size;
	if (!(r->seen = calloc(r->blocks / 64 + 1, sizeof(*r->seen))))
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	return 0;
}

void ms_uffd_recorder_fini(struct ms_uffd_recorder *r)
{
	if (!r->seen)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r->seen);
	free(r->indices);
	free(r->access);
	memset(r, 0, sizeof(*r));
}

/* Makes room for one more entry; lock held. */
static int recorder_reserve_locked(struct ms_uffd_recorder *r)
{
	if (r->count < r->cap)
		return 0;
	size_t cap = r->cap ? r->cap * 2 : 1024;
	uint64_t *indices = realloc(r->indices, cap * sizeof(*indices));
	if (!indices)
		return -ENOMEM;
	r->indices = indices;
	uint8_t *access = realloc(r->access, cap);
	if (!access)
		return -ENOMEM;
	r->access = access;
	r->cap = cap;
	return 0;
}

void ms_uffd_recorder_add(struct ms_uffd_recorder *r, uint64_t block, enum ms_uffd_access access)
{
	if (block >= r->blocks || (r->seen[block / 64] >> (block % 64) & 1) || r->error)
		return;
	r->seen[block / 64] |= 1ULL << (block % 64);
	pthread_mutex_lock(&r->lock);
	if (!(r->error = recorder_reserve_locked(r))) {
		r->indices[r->count] = block;
		r->access[r->count] = (uint8_t)access;
		r->count++;
	}
	pthread_mutex_unlock(&r->lock);
}

int ms_uffd_recorder_copy(struct ms_uffd_recorder *r, struct ms_uffd_trace *out)
{
	memset(out, 0, sizeof(*out));
	out->block_size = r->block_size;
	pthread_mutex_lock(&r->lock);
	size_t n = r->count;
	out->indices = malloc((n + 1) * sizeof(*out->indices));
	out->access = malloc(n + 1);
	if (out->indices && out->access) {
		memcpy(out->indices, r->indices, n * sizeof(*out->indices));
		memcpy(out->access, r->access, n);
		out->count = n;
	}
	pthread_mutex_unlock(&r->lock);
	if (!out->indices || !out->access) {
		ms_uffd_trace_fini(out);
		return -ENOMEM;
	}
	return 0;
}
