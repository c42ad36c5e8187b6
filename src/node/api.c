/*
 * api.c - the API's request parser and router (api.h has the table).
 *
 * Every input here comes from outside (docs/design.md §5.9): the path is split
 * into at most four segments with fixed spellings, ids must parse as UUIDs,
 * bodies must be JSON objects with only the documented fields, and every
 * number must be an integer in its range. The fuzz target drives this file.
 */
#include "node/api.h"
#include "uffd/prefetch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_API_SEGMENTS 5
#define MS_API_NUM_MAX	9007199254740992.0 /* 2^53: exact in a JSON double */

int ms_api_error_set(struct ms_api_error *err, unsigned status, const char *code, const char *fmt,
		     ...)
{
	err->status = status;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

char *ms_api_error_json(const struct ms_api_error *err)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	char *text = NULL;
	if (cJSON_AddStringToObject(o, "error", err->code) &&
	    cJSON_AddStringToObject(o, "message", err->message))
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

const char *ms_api_op_name(enum ms_api_op op)
{
	static const char *const names[] = {
	    [MS_API_SANDBOX_CREATE] = "sandbox_create",
	    [MS_API_SANDBOX_LIST] = "sandbox_list",
	    [MS_API_SANDBOX_GET] = "sandbox_get",
	    [MS_API_SANDBOX_DELETE] = "sandbox_delete",
	    [MS_API_SANDBOX_PAUSE] = "sandbox_pause",
	    [MS_API_SANDBOX_RESUME] = "sandbox_resume",
	    [MS_API_BUILD_GET] = "build_get",
	    [MS_API_BUILD_METADATA] = "build_metadata",
	    [MS_API_BUILD_LIST] = "build_list",
	    [MS_API_BUILD_DELETE] = "build_delete",
	    [MS_API_METRICS] = "metrics",
	    [MS_API_HEALTHZ] = "healthz",
	};
	return (unsigned)op < sizeof(names) / sizeof(names[0]) ? names[op] : "unknown";
}

/* A JSON number that is an integer in [0, max]. */
static int ms_api_uint(const cJSON *item, double max, uint64_t *out)
{
	if (!cJSON_IsNumber(item))
		return -1;
	double v = item->valuedouble;
	if (!isfinite(v) || v < 0 || v > max || floor(v) != v)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static int ms_api_parse_exec(const cJSON *exec, struct ms_api_exec *out, struct ms_api_error *err)
{
	if (!cJSON_IsObject(exec))
		return ms_api_error_set(err, 400, "bad_request", "exec: expected an object");
	bool have_command = false;
	for (const cJSON *f = exec->child; f; f = f->next) {
		if (!f->string)
			return ms_api_error_set(err, 400, "bad_request",
						"exec: a field without a name");
		if (!strcmp(f->string, "command")) {
			have_command = true;
			if (cJSON_IsString(f)) {
				const char *c = f->valuestring;
				if (!strcmp(c, "fill"))
					out->command = MS_PATTERN_FILL;
				else if (!strcmp(c, "verify"))
					out->command = MS_PATTERN_VERIFY;
				else if (!strcmp(c, "zero"))
					out->command = MS_PATTERN_ZERO;
				else
					return ms_api_error_set(
					    err, 400, "bad_request",
					    "exec.command: fill, verify, zero or a number");
			} else if (ms_api_uint(f, MS_API_NUM_MAX, &out->command)) {
				return ms_api_error_set(
				    err, 400, "bad_request",
				    "exec.command: fill, verify, zero or a number");
			}
		} else if (!strcmp(f->string, "arg0") || !strcmp(f->string, "arg1")) {
			uint64_t *dst = f->string[3] == '0' ? &out->arg0 : &out->arg1;
			if (ms_api_uint(f, MS_API_NUM_MAX, dst))
				return ms_api_error_set(err, 400, "bad_request",
							"exec.%s: an integer 0..2^53", f->string);
		} else {
			return ms_api_error_set(err, 400, "bad_request",
						"exec: unknown field '%.64s'", f->string);
		}
	}
	if (!have_command)
		return ms_api_error_set(err, 400, "bad_request", "exec: 'command' is required");
	out->set = true;
	return 0;
}

/* The body: empty, or a JSON object whose fields this op accepts. */
static int ms_api_parse_body(const char *body, size_t len, struct ms_api_request *req,
			     struct ms_api_error *err)
{
	if (len == 0) {
		if (req->op == MS_API_SANDBOX_CREATE)
			return ms_api_error_set(err, 400, "bad_request",
						"a JSON body is required: {\"guest\": ...} or "
						"{\"build_id\": ...}");
		return 0;
	}
	if (len > MS_API_BODY_MAX)
		return ms_api_error_set(err, 413, "too_large", "the body is over %d bytes",
					MS_API_BODY_MAX);
	if (req->op != MS_API_SANDBOX_CREATE && req->op != MS_API_SANDBOX_RESUME &&
	    req->op != MS_API_SANDBOX_PAUSE)
		return ms_api_error_set(err, 400, "bad_request", "this request takes no body");
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
	if (!root)
		return ms_api_error_set(err, 400, "bad_request", "the body is not valid JSON");
	int rc = 0;
	/* nothing but whitespace may follow the object */
	for (const char *c = end; c && c < body + len; c++)
		if (*c != ' ' && *c != '\n' && *c != '\r' && *c != '\t') {
			rc = ms_api_error_set(err, 400, "bad_request",
					      "trailing bytes after the JSON body");
			goto out;
		}
	if (!cJSON_IsObject(root)) {
		rc = ms_api_error_set(err, 400, "bad_request", "the body must be a JSON object");
		goto out;
	}
	bool have_guest = false, have_mem = false, have_prefetch = false;
	for (const cJSON *f = root->child; f; f = f->next) {
		if (!f->string) {
			rc = ms_api_error_set(err, 400, "bad_request", "a field without a name");
			goto out;
		}
		bool create = req->op == MS_API_SANDBOX_CREATE;
		if (create && !strcmp(f->string, "guest")) {
			if (!cJSON_IsString(f) || ms_guest_parse(f->valuestring, &req->guest)) {
				rc =
				    ms_api_error_set(err, 400, "bad_request",
						     "guest: pattern, counter, mutator or workset");
				goto out;
			}
			have_guest = true;
		} else if (create && !strcmp(f->string, "mem_mib")) {
			uint64_t mib;
			if (ms_api_uint(f, 65536, &mib) || mib == 0) {
				rc = ms_api_error_set(err, 400, "bad_request",
						      "mem_mib: an integer 1..65536");
				goto out;
			}
			req->mem_size = mib << 20;
			have_mem = true;
		} else if ((create || req->op == MS_API_SANDBOX_PAUSE) &&
			   !strcmp(f->string, "build_id")) {
			if (!cJSON_IsString(f) || ms_uuid_parse(f->valuestring, &req->build_id) ||
			    ms_uuid_is_nil(&req->build_id)) {
				rc = ms_api_error_set(err, 400, "bad_request",
						      "build_id: a build's UUID");
				goto out;
			}
			req->from_build = create;
			req->named_build = !create;
		} else if ((create || req->op == MS_API_SANDBOX_RESUME) &&
			   !strcmp(f->string, "prefetch")) {
			enum ms_uffd_prefetch_source source;
			if (!cJSON_IsString(f) ||
			    ms_uffd_prefetch_source_parse(f->valuestring, &source)) {
				rc = ms_api_error_set(err, 400, "bad_request",
						      "prefetch: init, last-cycle, both or off");
				goto out;
			}
			req->prefetch = (int)source;
			have_prefetch = true;
		} else if ((create || req->op == MS_API_SANDBOX_RESUME) &&
			   !strcmp(f->string, "exec")) {
			if ((rc = ms_api_parse_exec(f, &req->exec, err)))
				goto out;
		} else {
			rc = ms_api_error_set(err, 400, "bad_request", "unknown field '%.64s'",
					      f->string);
			goto out;
		}
	}
	if (req->op == MS_API_SANDBOX_CREATE && have_guest == req->from_build)
		rc = ms_api_error_set(err, 400, "bad_request",
				      "give exactly one of 'guest' and 'build_id'");
	else if (req->op == MS_API_SANDBOX_CREATE && !req->from_build && have_prefetch)
		rc = ms_api_error_set(err, 400, "bad_request",
				      "prefetch is for a resume: give it with build_id");
	else if (req->from_build && have_mem)
		rc = ms_api_error_set(err, 400, "bad_request",
				      "mem_mib comes from the build; do not give it with build_id");
out:
	cJSON_Delete(root);
	return rc;
}

static int ms_api_id(const char *seg, size_t len, ms_uuid *out, struct ms_api_error *err)
{
	char text[MS_UUID_STR_LEN];
	if (len != MS_UUID_STR_LEN - 1)
		return ms_api_error_set(err, 400, "bad_request", "not an id (a UUID): '%.*s'",
					(int)(len > 40 ? 40 : len), seg);
	memcpy(text, seg, len);
	text[len] = '\0';
	if (ms_uuid_parse(text, out) || ms_uuid_is_nil(out))
		return ms_api_error_set(err, 400, "bad_request", "not an id (a UUID): '%s'", text);
	return 0;
}

const struct ms_api_route ms_api_routes[] = {
    {"POST", "/v1/sandboxes", MS_API_SANDBOX_CREATE},
    {"GET", "/v1/sandboxes", MS_API_SANDBOX_LIST},
    {"GET", "/v1/sandboxes/{id}", MS_API_SANDBOX_GET},
    {"DELETE", "/v1/sandboxes/{id}", MS_API_SANDBOX_DELETE},
    {"POST", "/v1/sandboxes/{id}/pause", MS_API_SANDBOX_PAUSE},
    {"POST", "/v1/sandboxes/{id}/resume", MS_API_SANDBOX_RESUME},
    {"GET", "/v1/builds", MS_API_BUILD_LIST},
    {"GET", "/v1/builds/{id}", MS_API_BUILD_GET},
    {"DELETE", "/v1/builds/{id}", MS_API_BUILD_DELETE},
    {"GET", "/v1/builds/{id}/scheduling-metadata", MS_API_BUILD_METADATA},
    {"GET", "/metrics", MS_API_METRICS},
    {"GET", "/healthz", MS_API_HEALTHZ},
    {NULL, NULL, 0},
};

/*
 * Whether the request's segments match a route's pattern; *id_seg gets the
 * index of its "{id}" segment (-1: none). "{id}" matches any one segment (the
 * id is checked after the method, so that 405 wins over 400).
 */
static bool ms_api_route_match(const char *pattern, const char *const *seg, const size_t *seg_len,
			       size_t nseg, int *id_seg)
{
	*id_seg = -1;
	size_t i = 0;
	for (const char *p = pattern; *p == '/'; i++) {
		const char *word = ++p;
		size_t len = strcspn(word, "/");
		p = word + len;
		if (i == nseg)
			return false;
		if (len == 4 && !memcmp(word, "{id}", 4))
			*id_seg = (int)i;
		else if (len != seg_len[i] || memcmp(word, seg[i], len))
			return false;
	}
	return i == nseg;
}

int ms_api_parse(const char *method, const char *path, const char *body, size_t body_len,
		 struct ms_api_request *req, struct ms_api_error *err)
{
	memset(req, 0, sizeof(*req));
	req->prefetch = -1;
	err->allow[0] = '\0';
	req->guest = MS_GUEST_PATTERN;
	req->mem_size = 64u << 20;
	if (!method || !path || (body_len && !body))
		return ms_api_error_set(err, 400, "bad_request", "no method or path");
	/* split the path into segments (no empty one, no query) */
	size_t path_len = strcspn(path, "?");
	if (path_len == 0 || path[0] != '/')
		return ms_api_error_set(err, 400, "bad_request", "the path must start with '/'");
	const char *seg[MS_API_SEGMENTS];
	size_t seg_len[MS_API_SEGMENTS], nseg = 0;
	for (size_t i = 1; i <= path_len;) {
		size_t j = i;
		while (j < path_len && path[j] != '/')
			j++;
		if (j == i) {
			if (j == path_len && nseg > 0)
				break; /* one trailing slash */
			return ms_api_error_set(err, 404, "not_found", "no such path");
		}
		if (nseg == MS_API_SEGMENTS)
			return ms_api_error_set(err, 404, "not_found", "no such path");
		seg[nseg] = path + i;
		seg_len[nseg++] = j - i;
		i = j + 1;
	}
	/* route: the path's pattern, then the method among those it allows */
	const struct ms_api_route *route = NULL;
	bool known = false;
	int id_seg = -1;
	for (const struct ms_api_route *r = ms_api_routes; r->method; r++) {
		int idx;
		if (!ms_api_route_match(r->pattern, seg, seg_len, nseg, &idx))
			continue;
		size_t used = strlen(err->allow);
		snprintf(err->allow + used, sizeof(err->allow) - used, "%s%s", known ? ", " : "",
			 r->method);
		known = true;
		if (!strcmp(r->method, method)) {
			route = r;
			id_seg = idx;
		}
	}
	if (!known)
		return ms_api_error_set(err, 404, "not_found", "no such path");
	if (!route)
		return ms_api_error_set(err, 405, "method_not_allowed",
					"%.16s is not allowed here (allowed: %s)", method,
					err->allow);
	err->allow[0] = '\0';
	req->op = route->op;
	if (id_seg >= 0 && ms_api_id(seg[id_seg], seg_len[id_seg], &req->id, err))
		return -1;
	return ms_api_parse_body(body, body_len, req, err);
}
