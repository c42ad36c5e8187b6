/*
 * memsnap/pageserver.h - a userfaultfd page server over the caller's memory source
 * (libmemsnap-uffd; no curl, no microhttpd).
 *
 * A VMM (Firecracker, or anything speaking its page-fault handshake: a unix socket, one
 * message of JSON regions with the userfaultfd attached) connects to socket_path; every
 * page it faults on is read from the source at its image offset and installed. Several
 * VMMs may connect in turn; each is a session.
 */
#ifndef MEMSNAP_PAGESERVER_H
#define MEMSNAP_PAGESERVER_H

#include "memsnap/memsnap.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The caller's memory image. read() fills dst completely or fails (the server retries a
 * failure 4 times, backing off); it is called from several threads at once. size() is
 * constant. Both must stay valid until memsnap_pageserver_free.
 */
struct memsnap_page_source {
	int (*read)(void *ctx, void *dst, uint64_t offset, size_t len);
	uint64_t (*size)(void *ctx);
};

struct memsnap_pageserver_options {
	unsigned workers;     /* fetch threads per session; 0: 4 */
	uint64_t batch_bytes; /* bytes a fault may install around it (power of two); 0: a page */
};

typedef struct memsnap_pageserver memsnap_pageserver;
typedef struct memsnap_session memsnap_session;

/*
 * Listens on socket_path (mode 0600; a stale socket there is replaced). options may be
 * NULL. NULL on error with *err.
 */
memsnap_pageserver *memsnap_pageserver_new(const char *socket_path,
					   const struct memsnap_page_source *source, void *ctx,
					   const struct memsnap_pageserver_options *options,
					   int *err);
/* Stops every session, removes the socket, frees. */
void memsnap_pageserver_free(memsnap_pageserver *server);

/*
 * The next VMM that completed the handshake (timeout_ns < 0: wait forever), served in the
 * background from now on. 0 with *out, -ETIMEDOUT, or an error.
 */
int memsnap_pageserver_next_session(memsnap_pageserver *server, int64_t timeout_ns,
				    memsnap_session **out);
/* Waits until the VMM went away (0) or serving failed (its error); -ETIMEDOUT. */
int memsnap_session_wait(memsnap_session *session, int64_t timeout_ns);
uint64_t memsnap_session_pages_served(memsnap_session *session); /* with data or zeros */
uint64_t memsnap_session_faults(memsnap_session *session);
void memsnap_session_free(memsnap_session *session);

#endif
