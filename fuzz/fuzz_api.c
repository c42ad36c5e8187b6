/*
 * fuzz_api.c - libFuzzer target for memsnapd's request parser and router
 * (src/node/api.c). Input: "METHOD\nPATH\nBODY" (missing parts are empty).
 * Whatever the input, the parser must not crash, and its answer must keep its
 * own promises: a parsed request names a known op and, where the path has an
 * id, a non-nil one; an error has a 4xx status, a code, a NUL-terminated
 * message, and renders as JSON that parses back.
 */
#include "node/api.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether op's route has an id in its path (from the route table, so a new route is covered). */
static bool op_has_id(enum ms_api_op op)
{
	for (const struct ms_api_route *r = ms_api_routes; r->method; r++)
		if (r->op == op && strstr(r->pattern, "{id}"))
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	char *method = copy, *path = "", *body = NULL;
	size_t body_len = 0;
	char *nl = memchr(copy, '\n', size);
	if (nl) {
		*nl = '\0';
		path = nl + 1;
		char *nl2 = memchr(path, '\n', size - (size_t)(path - copy));
		if (nl2) {
			*nl2 = '\0';
			body = nl2 + 1;
			body_len = size - (size_t)(body - copy);
		}
	}
	struct ms_api_request req;
	struct ms_api_error err;
	if (ms_api_parse(method, path, body, body_len, &req, &err) == 0) {
		if ((unsigned)req.op > MS_API_HEALTHZ)
			abort();
		if (op_has_id(req.op) && ms_uuid_is_nil(&req.id))
			abort();
		if (req.op == MS_API_SANDBOX_CREATE && !req.from_build &&
		    (req.mem_size == 0 || req.mem_size > (65536ull << 20)))
			abort();
		if (req.from_build && ms_uuid_is_nil(&req.build_id))
			abort();
	} else {
		if (err.status < 400 || err.status > 499 || !err.code ||
		    !memchr(err.message, '\0', sizeof(err.message)))
			abort();
		char *json = ms_api_error_json(&err);
		cJSON *back = json ? cJSON_Parse(json) : NULL;
		if (json && !back)
			abort();
		cJSON_Delete(back);
		free(json);
	}
	free(copy);
	return 0;
}
