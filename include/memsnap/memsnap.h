/*
 * memsnap.h - the public API's common part: version, error codes, logging.
 *
 * The public API is a set of small headers with opaque handles and the memsnap_ prefix
 * (the library's internals use ms_, and none of them is visible to an embedder):
 *   memsnap/header.h      the snapshot header codec               libmemsnap-header
 *   memsnap/pageserver.h  a userfaultfd page server over a caller's source  libmemsnap-uffd
 *   memsnap/store.h       object stores (file://, s3://)           libmemsnap
 *   memsnap/build.h       a build opened from a store, its layered file    libmemsnap
 *   memsnap/pause.h       the pause pipeline                       libmemsnap
 * Each library has a pkg-config file of its name; libmemsnap holds all of the API.
 *
 * Errors: functions return 0 or a negative errno, or one of the MEMSNAP_E* codes below;
 * constructors return NULL and say why through an int *err. memsnap_strerror() names both.
 */
#ifndef MEMSNAP_H
#define MEMSNAP_H

#define MEMSNAP_VERSION "0.1.0"

#define MEMSNAP_ECORRUPT    (-4097) /* malformed or hostile input (header, snapfile, frame) */
#define MEMSNAP_ECHECKSUM   (-4098) /* data does not match its checksum */
#define MEMSNAP_ENOTFOUND   (-4099) /* object or build does not exist */
#define MEMSNAP_ETOOBIG	    (-4100) /* over a documented size cap */
#define MEMSNAP_EVERSION    (-4101) /* unsupported format version */
#define MEMSNAP_EINCOMPLETE (-4102) /* header still pending upload */
#define MEMSNAP_EPROTO	    (-4104) /* protocol violation by a peer (handshake, HTTP) */
#define MEMSNAP_EREMOTE	    (-4105) /* remote store answered with an error status */

/* A message for 0, a negative errno or a MEMSNAP_E* code; static storage, never NULL. */
const char *memsnap_strerror(int err);

enum memsnap_log_level {
	MEMSNAP_LOG_ERROR = 0,
	MEMSNAP_LOG_WARN,
	MEMSNAP_LOG_INFO,
	MEMSNAP_LOG_DEBUG,
};
/*
 * Receives every log line at or above the level: its module ("uffd", "s3", ...) and the
 * message (no newline; valid during the call). Called from the library's threads,
 * possibly concurrently; must not call back into the library.
 */
typedef void (*memsnap_log_fn)(void *ctx, enum memsnap_log_level level, const char *module,
			       const char *message);
/* Lines go to sink(ctx, ...) from now on; NULL: back to stderr (the default). */
void memsnap_log_set_sink(memsnap_log_fn sink, void *ctx);
/* The default is MEMSNAP_LOG_INFO; the library reads no environment. */
void memsnap_log_set_level(enum memsnap_log_level level);

#endif
