/*
 * lib_common.c - the public API's common part (memsnap/memsnap.h): errors and logging.
 * Built into each public library; every other symbol of the internals stays hidden
 * (memsnap.map).
 */
#include "memsnap/memsnap.h"
#include "util/err.h"
#include "util/log.h"

#include <assert.h>

static_assert(MEMSNAP_ECORRUPT == MS_ECORRUPT && MEMSNAP_ECHECKSUM == MS_ECHECKSUM &&
		  MEMSNAP_ENOTFOUND == MS_ENOTFOUND && MEMSNAP_ETOOBIG == MS_ETOOBIG &&
		  MEMSNAP_EVERSION == MS_EVERSION && MEMSNAP_EINCOMPLETE == MS_EINCOMPLETE &&
		  MEMSNAP_EPROTO == MS_EPROTO && MEMSNAP_EREMOTE == MS_EREMOTE,
	      "public error codes are the internal ones");
static_assert((int)MEMSNAP_LOG_ERROR == (int)MS_LOG_ERROR &&
		  (int)MEMSNAP_LOG_DEBUG == (int)MS_LOG_DEBUG,
	      "public log levels are the internal ones");

const char *memsnap_strerror(int err)
{
	return ms_strerror(err);
}

/* The caller's sink and context, behind the internal sink's signature. */
static memsnap_log_fn memsnap_sink; /* set under util/log's lock, with the context */

static void memsnap_log_forward(void *ctx, enum ms_log_level level, const char *module,
				const char *message)
{
	memsnap_sink(ctx, (enum memsnap_log_level)level, module, message);
}

void memsnap_log_set_sink(memsnap_log_fn sink, void *ctx)
{
	ms_log_set_sink(NULL, NULL); /* no line reaches the old forwarder while it changes */
	memsnap_sink = sink;
	if (sink)
		ms_log_set_sink(memsnap_log_forward, ctx);
}

void memsnap_log_set_level(enum memsnap_log_level level)
{
	ms_log_set_level((enum ms_log_level)level);
}
