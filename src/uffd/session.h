/*
 * session.h - module-internal: starting a restore session from a received
 * handshake (pageserver.c hands every accepted connection to this).
 */
#ifndef MS_UFFD_SESSION_H
#define MS_UFFD_SESSION_H

#include "uffd/handshake.h"
#include "uffd/pageserver.h"

struct ms_uffd_session_config {
	const struct ms_page_source_ops *ops;
	void *ctx;
	const struct ms_pageserver_options *options; /* copied */
	uint64_t id;				     /* for log lines */
};

/*
 * Starts serving. Takes ownership of hs (regions), uffd, memfd (-1 if none) and
 * conn, also on error (they are closed / freed then). Returns 0 with *out
 * holding one reference, or a negative errno.
 */
int ms_uffd_session_start(const struct ms_uffd_session_config *cfg, struct ms_uffd_handshake *hs,
			  int uffd, int memfd, int conn, struct ms_uffd_session **out);

/*
 * Debug builds: asserts the invariants of the session's state (session.c draws
 * the state machine); the caller holds the session's lock. Called at every
 * transition. Compiles to nothing with NDEBUG.
 */
#ifdef NDEBUG
#define ms_uffd_session_check(s) ((void)(s))
#else
void ms_uffd_session_check(struct ms_uffd_session *s);
#endif

#endif
