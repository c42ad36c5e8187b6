/*
 * log.c - leveled logging to stderr (text or JSON lines, see log.h), one
 * write(2) per line so threads never interleave. A message longer than its
 * buffer is cut at a whole character, so a JSON line always parses. Or to an
 * embedder's sink: the sink and its context change together under ms_sink_lock
 * (a reader lock per line), so a line never goes to one sink with another's
 * context.
 */
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MS_LOG_MSG_MAX	 1024 /* escaped message, with its NUL */
#define MS_LOG_FIELD_MAX 160  /* escaped field name or value, with its NUL */
#define MS_LOG_FIELDS	 4

static atomic_int ms_level = MS_LOG_INFO;
static atomic_int ms_format = MS_LOG_TEXT;
static pthread_rwlock_t ms_sink_lock = PTHREAD_RWLOCK_INITIALIZER;
static ms_log_sink_fn ms_sink;	/* guarded by ms_sink_lock */
static void *ms_sink_ctx;	/* guarded by ms_sink_lock */
static atomic_bool ms_sink_set; /* a sink is set: skip the lock when not */

int ms_log_parse_level(const char *name, enum ms_log_level *out)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	for (int i = 0; i < 4; i++) {
		if (strcmp(name, names[i]) == 0) {
			*out = (enum ms_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void ms_log_set_level(enum ms_log_level level)
{
	atomic_store(&ms_level, (int)level);
}

enum ms_log_level ms_log_get_level(void)
{
	return (enum ms_log_level)atomic_load(&ms_level);
}

void ms_log_set_sink(ms_log_sink_fn sink, void *ctx)
{
	pthread_rwlock_wrlock(&ms_sink_lock);
	ms_sink = sink;
	ms_sink_ctx = ctx;
	atomic_store(&ms_sink_set, sink != NULL);
	pthread_rwlock_unlock(&ms_sink_lock);
}

/* Gives the line to the sink; false when there is none (the line goes to stderr). */
static bool ms_log_to_sink(enum ms_log_level level, const char *module, const char *raw,
			   const struct ms_log_field *fields, size_t nfields)
{
	if (!atomic_load(&ms_sink_set))
		return false;
	char message[MS_LOG_MSG_MAX + MS_LOG_FIELDS * (2 * MS_LOG_FIELD_MAX + 8)];
	int len = snprintf(message, sizeof(message), "%s", raw);
	for (size_t i = 0; i < nfields && i < MS_LOG_FIELDS && len > 0; i++)
		if (fields[i].value && (size_t)len < sizeof(message))
			len += snprintf(message + len, sizeof(message) - (size_t)len, " %s=%s",
					fields[i].name, fields[i].value);
	pthread_rwlock_rdlock(&ms_sink_lock);
	bool sent = ms_sink != NULL;
	if (sent)
		ms_sink(ms_sink_ctx, level, module, message);
	pthread_rwlock_unlock(&ms_sink_lock);
	return sent;
}

int ms_log_parse_format(const char *name, enum ms_log_format *out)
{
	if (!strcmp(name, "text"))
		*out = MS_LOG_TEXT;
	else if (!strcmp(name, "json"))
		*out = MS_LOG_JSON;
	else
		return -EINVAL;
	return 0;
}

void ms_log_set_format(enum ms_log_format format)
{
	atomic_store(&ms_format, (int)format);
}

void ms_log_timestamp(char *out, size_t len)
{
	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
}

/*
 * Copies src into dst[cap] (NUL-terminated), JSON-escaped when json; stops at
 * a whole character or escape, so a cut string is still a valid one.
 */
static void ms_log_escape(char *dst, size_t cap, const char *src, bool json)
{
	size_t n = 0;
	for (; *src; src++) {
		unsigned char c = (unsigned char)*src;
		char esc[8] = {(char)c, 0};
		if (json && (c == '"' || c == '\\'))
			snprintf(esc, sizeof(esc), "\\%c", c);
		else if (json && (c < 0x20 || c == 0x7f))
			snprintf(esc, sizeof(esc), "\\u%04x", c);
		size_t k = strlen(esc);
		if (n + k >= cap)
			break;
		memcpy(dst + n, esc, k);
		n += k;
	}
	dst[n] = '\0';
}

static void ms_log_write(enum ms_log_level level, const char *module,
			 const struct ms_log_field *fields, size_t nfields, const char *fmt,
			 va_list ap)
{
	static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	static const char *const names[] = {"error", "warn", "info", "debug"};
	char raw[MS_LOG_MSG_MAX], msg[MS_LOG_MSG_MAX], mod[64], ts[32];
	/* every piece is bounded, so the line always fits: no cut in the middle of JSON */
	char line[MS_LOG_MSG_MAX + 64 + 32 + 64 + MS_LOG_FIELDS * (2 * MS_LOG_FIELD_MAX + 8)];
	if (vsnprintf(raw, sizeof(raw), fmt, ap) < 0)
		return;
	if (ms_log_to_sink(level, module, raw, fields, nfields))
		return;
	bool json = atomic_load(&ms_format) == MS_LOG_JSON;
	ms_log_escape(msg, sizeof(msg), raw, json);
	ms_log_escape(mod, sizeof(mod), module, json);
	ms_log_timestamp(ts, sizeof(ts));
	int len =
	    json ? snprintf(line, sizeof(line),
			    "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"", ts,
			    names[level], mod, msg)
		 : snprintf(line, sizeof(line), "%s memsnap[%s] %s %s", ts, mod, tags[level], msg);
	if (nfields > MS_LOG_FIELDS)
		nfields = MS_LOG_FIELDS;
	for (size_t i = 0; i < nfields && len > 0; i++) {
		if (!fields[i].value)
			continue;
		char name[MS_LOG_FIELD_MAX], value[MS_LOG_FIELD_MAX];
		ms_log_escape(name, sizeof(name), fields[i].name, json);
		ms_log_escape(value, sizeof(value), fields[i].value, json);
		len += snprintf(line + len, sizeof(line) - (size_t)len,
				json ? ",\"%s\":\"%s\"" : " %s=%s", name, value);
	}
	if (len <= 0 || (size_t)len + 2 >= sizeof(line))
		return; /* cannot happen: the pieces are bounded above */
	if (json)
		line[len++] = '}';
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)len);
	(void)w;
}

void ms_log(enum ms_log_level level, const char *module, const char *fmt, ...)
{
	if ((int)level > (int)ms_log_get_level())
		return;
	va_list ap;
	va_start(ap, fmt);
	ms_log_write(level, module, NULL, 0, fmt, ap);
	va_end(ap);
}

void ms_log_fields(enum ms_log_level level, const char *module, const struct ms_log_field *fields,
		   size_t nfields, const char *fmt, ...)
{
	if ((int)level > (int)ms_log_get_level())
		return;
	va_list ap;
	va_start(ap, fmt);
	ms_log_write(level, module, fields, nfields, fmt, ap);
	va_end(ap);
}

void ms_log_notice(const char *module, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ms_log_write(MS_LOG_INFO, module, NULL, 0, fmt, ap);
	va_end(ap);
}
