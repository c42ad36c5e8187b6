/* log.c - leveled logging to stderr, one write(2) per line so threads never interleave. */
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_int ms_level = -1;

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
	int level = atomic_load(&ms_level);
	if (level < 0) {
		enum ms_log_level parsed = MS_LOG_INFO;
		const char *env = getenv("MEMSNAP_LOG");
		if (env)
			(void)ms_log_parse_level(env, &parsed);
		level = (int)parsed;
		atomic_store(&ms_level, level);
	}
	return (enum ms_log_level)level;
}

void ms_log(enum ms_log_level level, const char *module, const char *fmt, ...)
{
	static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	if ((int)level > (int)ms_log_get_level())
		return;
	char line[1024];
	int n = snprintf(line, sizeof(line), "memsnap[%s] %s ", module, tags[level]);
	if (n < 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}
