/*
 * lib_pageserver.c - the public page server (memsnap/pageserver.h) over uffd/: the
 * caller's source behind the internal page-source interface.
 */
#include "lib/lib_int.h"
#include "memsnap/pageserver.h"
#include "uffd/pageserver.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#define MS_LIB_WAIT_NS 1000000000ll /* one step of a wait without a timeout */

struct memsnap_pageserver {
	struct ms_pageserver *server;
	struct memsnap_page_source source; /* the caller's, copied */
	void *ctx;
};

static int memsnap_source_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	struct memsnap_pageserver *ps = ctx;
	return ps->source.read(ps->ctx, dst, off, len);
}

static uint64_t memsnap_source_size(void *ctx)
{
	struct memsnap_pageserver *ps = ctx;
	return ps->source.size(ps->ctx);
}

static const struct ms_page_source_ops memsnap_source_ops = {
    .read = memsnap_source_read,
    .size = memsnap_source_size,
};

/* ops + ctx, or (ops NULL) the caller's source + source_ctx. */
static memsnap_pageserver *
ms_lib_pageserver_start(const char *socket_path, const struct ms_page_source_ops *ops, void *ctx,
			const struct memsnap_page_source *source, void *source_ctx,
			const struct memsnap_pageserver_options *options, int *err)
{
	struct memsnap_pageserver *ps = calloc(1, sizeof(*ps));
	if (!ps) {
		*err = -ENOMEM;
		return NULL;
	}
	if (!ops) { /* set before the server starts: its threads read them */
		ps->source = *source;
		ps->ctx = source_ctx;
		ops = &memsnap_source_ops;
		ctx = ps;
	}
	struct ms_pageserver_options opts = {
	    .workers = options ? options->workers : 0,
	    .batch_bytes = options ? options->batch_bytes : 0,
	};
	ps->server = ms_pageserver_new(socket_path, ops, ctx, &opts, err);
	if (!ps->server) {
		free(ps);
		return NULL;
	}
	*err = 0;
	return ps;
}

memsnap_pageserver *memsnap_pageserver_new(const char *socket_path,
					   const struct memsnap_page_source *source, void *ctx,
					   const struct memsnap_pageserver_options *options,
					   int *err)
{
	*err = -EINVAL;
	if (!socket_path || !source || !source->read || !source->size)
		return NULL;
	return ms_lib_pageserver_start(socket_path, NULL, NULL, source, ctx, options, err);
}

memsnap_pageserver *ms_lib_pageserver_new(const char *socket_path,
					  const struct ms_page_source_ops *ops, void *ctx,
					  const struct memsnap_pageserver_options *options,
					  int *err)
{
	return ms_lib_pageserver_start(socket_path, ops, ctx, NULL, NULL, options, err);
}

void memsnap_pageserver_free(memsnap_pageserver *ps)
{
	if (!ps)
		return;
	ms_pageserver_free(ps->server);
	free(ps);
}

/* The public session is the internal one. */
int memsnap_pageserver_next_session(memsnap_pageserver *ps, int64_t timeout_ns,
				    memsnap_session **out)
{
	struct ms_uffd_session *s = NULL;
	*out = NULL;
	int err;
	do /* the internals take a deadline: "forever" is one second at a time */
		err = ms_pageserver_next_session(ps->server,
						 timeout_ns < 0 ? MS_LIB_WAIT_NS : timeout_ns, &s);
	while (err == -ETIMEDOUT && timeout_ns < 0);
	if (!err)
		*out = (memsnap_session *)s;
	return err;
}

int memsnap_session_wait(memsnap_session *session, int64_t timeout_ns)
{
	struct ms_uffd_session *s = (struct ms_uffd_session *)session;
	int err;
	do
		err = ms_uffd_session_wait(s, timeout_ns < 0 ? MS_LIB_WAIT_NS : timeout_ns);
	while (err == -ETIMEDOUT && timeout_ns < 0);
	if (err)
		return err;
	return ms_uffd_session_state(s) == MS_UFFD_SESSION_FAILED ? ms_uffd_session_error(s, NULL)
								  : 0;
}

uint64_t memsnap_session_pages_served(memsnap_session *session)
{
	const struct ms_uffd_metrics *m =
	    ms_uffd_session_metrics((struct ms_uffd_session *)session);
	return atomic_load(&m->pages_source) + atomic_load(&m->pages_zero);
}

uint64_t memsnap_session_faults(memsnap_session *session)
{
	const struct ms_uffd_metrics *m =
	    ms_uffd_session_metrics((struct ms_uffd_session *)session);
	return atomic_load(&m->faults_read) + atomic_load(&m->faults_write) +
	       atomic_load(&m->faults_wp);
}

void memsnap_session_free(memsnap_session *session)
{
	ms_uffd_session_unref((struct ms_uffd_session *)session);
}
