/*
 * api.h - memsnapd's HTTP/JSON API as data: a pure parser from (method, path,
 * body) to a typed request or an error with its HTTP status. No sockets, no
 * state: the HTTP server (http.c) and the fuzz target (fuzz/fuzz_api.c) both
 * call it.
 *
 *   method  path                                        op
 *   POST    /v1/sandboxes                               SANDBOX_CREATE
 *   GET     /v1/sandboxes                               SANDBOX_LIST
 *   GET     /v1/sandboxes/{id}                          SANDBOX_GET
 *   DELETE  /v1/sandboxes/{id}                          SANDBOX_DELETE
 *   POST    /v1/sandboxes/{id}/pause                    SANDBOX_PAUSE
 *   POST    /v1/sandboxes/{id}/resume                   SANDBOX_RESUME
 *   GET     /v1/builds                                  BUILD_LIST
 *   GET     /v1/builds/{id}                             BUILD_GET
 *   DELETE  /v1/builds/{id}                             BUILD_DELETE
 *   GET     /v1/builds/{id}/scheduling-metadata         BUILD_METADATA
 *   GET     /metrics                                    METRICS
 *   GET     /healthz                                    HEALTHZ
 *
 * Ids are UUIDs (36 characters). Bodies are JSON objects; unknown fields are
 * errors (a typo must not be silently ignored):
 *   create: {"guest": "pattern"|"counter"|"mutator"|"workset", "mem_mib": 1..65536 (64)}
 *           or {"build_id": UUID}; optional "exec".
 *   resume: {} or no body; optional "exec".
 *   pause:  {} or no body; optional "build_id": the new build's id (the caller's
 *           choice, as E2B's API allows; refused when it is taken).
 *   deletes, GETs: no body.
 *   exec:   {"command": "fill"|"verify"|"zero"|N, "arg0": N, "arg1": N}: the
 *           guest mailbox (sandbox/guest.h) is set and the guest is run to its
 *           next report; N are integers 0..2^53.
 * Errors: 400 malformed (path id, JSON, field), 404 unknown path, 405 a known
 * path with another method (err.allow lists the methods it takes, for the
 * Allow header), 413 a body over MS_API_BODY_MAX.
 *
 * The table above is ms_api_routes[], the one the parser routes by;
 * docs/openapi.yaml describes the same routes (tests/node/test_openapi.sh
 * checks both ways).
 */
#ifndef MS_NODE_API_H
#define MS_NODE_API_H

#include "sandbox/guest.h"
#include "util/uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_API_BODY_MAX (64 * 1024)

enum ms_api_op {
	MS_API_SANDBOX_CREATE,
	MS_API_SANDBOX_LIST,
	MS_API_SANDBOX_GET,
	MS_API_SANDBOX_DELETE,
	MS_API_SANDBOX_PAUSE,
	MS_API_SANDBOX_RESUME,
	MS_API_BUILD_GET,
	MS_API_BUILD_METADATA,
	MS_API_BUILD_LIST,
	MS_API_BUILD_DELETE,
	MS_API_METRICS,
	MS_API_HEALTHZ,
};

struct ms_api_exec {
	bool set;
	uint64_t command, arg0, arg1;
};

struct ms_api_request {
	enum ms_api_op op;
	ms_uuid id; /* the path's sandbox or build id */
	/* SANDBOX_CREATE */
	bool from_build;
	ms_uuid build_id;
	enum ms_guest_kind guest;
	uint64_t mem_size; /* bytes */
	/* SANDBOX_CREATE, SANDBOX_RESUME */
	struct ms_api_exec exec;
	/* SANDBOX_CREATE from a build, SANDBOX_RESUME: "prefetch" (enum
	 * ms_uffd_prefetch_source), or -1: the node's prefetch_source */
	int prefetch;
	/* SANDBOX_PAUSE: the caller names the new build (build_id) */
	bool named_build;
};

struct ms_api_error {
	unsigned status;  /* HTTP status */
	const char *code; /* "bad_request", "not_found", ... (static) */
	char message[256];
	char allow[64]; /* 405: the path's methods, "GET, DELETE"; else empty */
};

/* One route: method, path pattern ("{id}" is one UUID segment), op. */
struct ms_api_route {
	const char *method;
	const char *pattern;
	enum ms_api_op op;
};

/* Every route the API answers, terminated by an entry with method == NULL. */
extern const struct ms_api_route ms_api_routes[];

/*
 * Parses one request. method and path are NUL-terminated (path may carry a
 * "?query", ignored); body is body_len bytes (any bytes, may be NULL when 0).
 * 0 with *req filled, or -1 with *err filled. Never crashes on any input.
 */
int ms_api_parse(const char *method, const char *path, const char *body, size_t body_len,
		 struct ms_api_request *req, struct ms_api_error *err);
/* Fills err (printf-style message); returns -1. */
int ms_api_error_set(struct ms_api_error *err, unsigned status, const char *code, const char *fmt,
		     ...) __attribute__((format(printf, 4, 5)));
/* The JSON body {"error": code, "message": message}; malloc'd, NULL on -ENOMEM. */
char *ms_api_error_json(const struct ms_api_error *err);
const char *ms_api_op_name(enum ms_api_op op);

#endif
