/*
 * log.h - leveled logging with a per-module prefix.
 *
 * Lines go to stderr as "memsnap[module] LEVEL message". The level comes from
 * ms_log_set_level() or, at first use, the MEMSNAP_LOG environment variable
 * (error|warn|info|debug); the default is info. Thread-safe: one write(2) per line.
 */
#ifndef MS_UTIL_LOG_H
#define MS_UTIL_LOG_H

enum ms_log_level { MS_LOG_ERROR = 0, MS_LOG_WARN, MS_LOG_INFO, MS_LOG_DEBUG };

void ms_log_set_level(enum ms_log_level level);
enum ms_log_level ms_log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -EINVAL for anything else. */
int ms_log_parse_level(const char *name, enum ms_log_level *out);
void ms_log(enum ms_log_level level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define ms_err(mod, ...)   ms_log(MS_LOG_ERROR, mod, __VA_ARGS__)
#define ms_warn(mod, ...)  ms_log(MS_LOG_WARN, mod, __VA_ARGS__)
#define ms_info(mod, ...)  ms_log(MS_LOG_INFO, mod, __VA_ARGS__)
#define ms_debug(mod, ...) ms_log(MS_LOG_DEBUG, mod, __VA_ARGS__)

#endif
