/*
 * log.h - leveled logging with a per-module prefix and optional fields.
 *
 * Lines go to stderr, one write(2) each, or to the sink an embedder set with
 * ms_log_set_sink(). On stderr they have one of two formats:
 *   text  "2026-12-02T00:44:15.123Z memsnap[node] INFO message sandbox_id=... build_id=..."
 *   json  {"ts":"2026-12-02T00:44:15.123Z","level":"info","module":"node",
 *          "msg":"message","sandbox_id":"...","build_id":"..."}
 * Timestamps are RFC 3339, UTC, milliseconds. Fields (name/value pairs, names
 * [a-z_]) follow the message; a NULL value leaves its field out. The format
 * is text unless ms_log_set_format() says otherwise (memsnapd's log_format).
 * The level comes from ms_log_set_level(); the default is info. Nothing here
 * reads the environment (docs/design.md §2): the command line maps MEMSNAP_LOG to a
 * level, memsnapd its log_level setting. Thread-safe.
 */
#ifndef MS_UTIL_LOG_H
#define MS_UTIL_LOG_H

#include <stddef.h>

enum ms_log_level { MS_LOG_ERROR = 0, MS_LOG_WARN, MS_LOG_INFO, MS_LOG_DEBUG };
enum ms_log_format { MS_LOG_TEXT = 0, MS_LOG_JSON };

/* One field of a line; value NULL: the field is left out. */
struct ms_log_field {
	const char *name;
	const char *value;
};

void ms_log_set_level(enum ms_log_level level);
enum ms_log_level ms_log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -EINVAL for anything else. */
int ms_log_parse_level(const char *name, enum ms_log_level *out);
void ms_log_set_format(enum ms_log_format format);
/* Parses "text", "json"; returns -EINVAL for anything else. */
int ms_log_parse_format(const char *name, enum ms_log_format *out);
void ms_log(enum ms_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* ms_log with nfields fields after the message. */
void ms_log_fields(enum ms_log_level level, const char *module, const struct ms_log_field *fields,
		   size_t nfields, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* An info line written whatever the level (a daemon's start and stop lines). */
void ms_log_notice(const char *module, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Receives each line at or above the level instead of stderr: its level, module and
 * message with the fields appended as " name=value" (no timestamp, no newline; valid during
 * the call only). Called from any thread, possibly concurrently; it must not log itself.
 */
typedef void (*ms_log_sink_fn)(void *ctx, enum ms_log_level level, const char *module,
			       const char *message);
/* Sends lines to sink(ctx, ...) from now on; NULL: back to stderr. */
void ms_log_set_sink(ms_log_sink_fn sink, void *ctx);
/* Writes now as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out (at least 25 bytes). */
void ms_log_timestamp(char *out, size_t len);

#define ms_err(mod, ...)   ms_log(MS_LOG_ERROR, mod, __VA_ARGS__)
#define ms_warn(mod, ...)  ms_log(MS_LOG_WARN, mod, __VA_ARGS__)
#define ms_info(mod, ...)  ms_log(MS_LOG_INFO, mod, __VA_ARGS__)
#define ms_debug(mod, ...) ms_log(MS_LOG_DEBUG, mod, __VA_ARGS__)
/* An info line about one sandbox and/or build (either id may be NULL). */
#define ms_info_ids(mod, sandbox_id, build_id, ...)                                                \
	ms_log_fields(                                                                             \
	    MS_LOG_INFO, mod,                                                                      \
	    (const struct ms_log_field[]){{"sandbox_id", (sandbox_id)}, {"build_id", (build_id)}}, \
	    2, __VA_ARGS__)

#endif
