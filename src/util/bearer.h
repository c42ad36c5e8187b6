/*
 * bearer.h - the check of an HTTP "Authorization: Bearer TOKEN" header, shared
 * by the daemon's API (node/http.c) and its peer server (node/peer/server.c).
 *
 * Invariant: the comparison takes the same time whatever part of a guess was
 * right (it runs over the whole expected token); only the token's length can
 * show. Pure: no state, any thread.
 */
#ifndef MS_UTIL_BEARER_H
#define MS_UTIL_BEARER_H

#include <stdbool.h>

/* true when header (may be NULL) is exactly "Bearer " followed by token. */
bool ms_bearer_ok(const char *header, const char *token);

#endif
