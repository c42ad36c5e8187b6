/*
 * server.h - the peer server: other nodes read this node's builds from it
 * before (and while) they are uploaded (as E2B's orchestrator does it). The
 * protocol - endpoints, statuses, range rules - is in peer/proto.h.
 *
 * libmicrohttpd on a TCP address ("ADDR:PORT", IPv4 literal, port 0: the
 * kernel picks), one thread per connection (a header request may wait for the
 * durable header), every request bearer-token authenticated; with tls, HTTPS
 * and every request's client certificate checked against the fleet CA first
 * (peer/tls.h).
 *
 * Builds are registered with ms_peer_server_add() and taken back with
 * ms_peer_server_remove(). A registered build is served from:
 *  - its layered file(s): the header answer is the DURABLE header
 *    (ms_layered_durable_header: waits up to header_wait_ns while the
 *    provisional->deduped swap is pending, never the provisional header),
 *    serialized for peers (incomplete flag kept; a V3 header travels as V5 so
 *    the flag can);
 *  - the diff store entry "{id}/{file}" (never created here): the build's own
 *    data in its packed space - the in-flight memfd through the packed index
 *    during the drain, the diff file after it. A data request waits for the
 *    durable header first, since the packed index is in place before it is;
 *  - its published future: once it holds a value the build is uploaded and
 *    every request for it is answered use_storage (an upload that failed
 *    keeps the build served: this node has the only copy);
 *  - its snapfile and metadata bytes (copied at registration);
 *  - its checksums future: "{id}/checksums", the table of the diff file.
 * After ms_peer_server_remove(uploaded = true) the build keeps answering
 * use_storage for tombstone_ns (a reader that resolved it late is told where
 * to go instead of "unknown").
 *
 * Invariants:
 *  1. The provisional build id never leaves the node: headers come only from
 *     ms_layered_durable_header.
 *  2. Outside input never reaches a handler unparsed: ms_peer_request_parse
 *     first, then the build's own bounds; every refusal is a clean JSON error.
 *  3. A registered build's layered files, diff store and future stay valid
 *     until ms_peer_server_remove() returns: remove waits for the requests
 *     that hold the build (a header wait is at most header_wait_ns).
 *
 * Thread-safety: every function may be called from any thread. lock guards
 * the build table; each build's refcount and the server's counters are atomic.
 */
#ifndef MS_PEER_SERVER_H
#define MS_PEER_SERVER_H

#include "build/layered.h"
#include "cache/diffstore.h"
#include "node/peer/proto.h"
#include "node/peer/tls.h"
#include "util/future.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_PEER_HEADER_WAIT_DEFAULT (30LL * 1000000000LL)
#define MS_PEER_TOMBSTONE_DEFAULT   (3600LL * 1000000000LL)

struct ms_peer_server;

struct ms_peer_server_config {
	const char *listen;		   /* "127.0.0.1:0"; required */
	const char *token;		   /* bearer token; required, non-empty (copied) */
	const struct ms_peer_tls_pem *tls; /* NULL: plain HTTP; else HTTPS (copied) */
	int64_t header_wait_ns;		   /* 0: 30 s */
	int64_t tombstone_ns;		   /* 0: 1 h */
	/*
	 * Tests: called for each parsed, authenticated request before it is served;
	 * a non-zero return drops the connection without an answer (a peer that
	 * dies mid-read). May be NULL.
	 */
	int (*on_request)(void *ctx, const struct ms_peer_request *req);
	void *on_request_ctx;
	/* Tests: the first this many checksum tables served have one byte changed. */
	unsigned test_damage_checksums;
};

/* One build as the server sees it; every pointer borrowed until remove returns. */
struct ms_peer_build {
	ms_uuid build_id;
	struct ms_layered *memfile;  /* required */
	struct ms_layered *rootfs;   /* may be NULL */
	struct ms_diffstore *diffs;  /* required: holds "{id}/memfile" (and rootfs) */
	struct ms_future *published; /* may be NULL: never uploaded by this node */
	/* its data's checksum table (a struct ms_sums *) once the drain wrote the diff
	 * (ms_pause_data_checksums); 503 not_available before; may be NULL (404) */
	struct ms_future *checksums;
	const void *snapfile; /* copied; may be NULL */
	size_t snapfile_len;
	const void *metadata; /* copied; may be NULL (404 not_available) */
	size_t metadata_len;
};

struct ms_peer_server_stats {
	uint64_t requests;				/* every request answered or dropped */
	uint64_t available, not_available, use_storage; /* answers by status */
	uint64_t bad_requests;				/* 400/405 */
	uint64_t unauthorized;				/* 401 */
	uint64_t uncertified;	 /* 403: TLS, and no client certificate the fleet CA signed */
	uint64_t data_bytes;	 /* data bytes served */
	uint64_t dropped;	 /* connections dropped by on_request */
	uint64_t connections;	 /* TCP connections accepted (requests share them: keep-alive) */
	uint64_t data_zero_copy; /* data answers sent from a zero-copy view (plain HTTP) */
};

/* Starts listening. NULL on error with *err set (-EINVAL for the config, -errno). */
struct ms_peer_server *ms_peer_server_start(const struct ms_peer_server_config *config, int *err);
/* The bound port. */
unsigned ms_peer_server_port(const struct ms_peer_server *server);
/* "ADDR:PORT" as bound (for the registry). Valid until ms_peer_server_stop. */
const char *ms_peer_server_address(const struct ms_peer_server *server);
/*
 * Stops: closes the listening socket and every connection, waits for the
 * handlers. Registered builds are dropped (no wait beyond the handlers). NULL
 * is ignored.
 */
void ms_peer_server_stop(struct ms_peer_server *server);

/* Registers build (copied; -EEXIST when its id is there, -EINVAL, -ENOMEM). */
int ms_peer_server_add(struct ms_peer_server *server, const struct ms_peer_build *build);
/*
 * Unregisters build_id and waits for the requests that hold it. uploaded: keep
 * answering use_storage for tombstone_ns. MS_ENOTFOUND when not registered.
 */
int ms_peer_server_remove(struct ms_peer_server *server, const ms_uuid *build_id, bool uploaded);

void ms_peer_server_get_stats(struct ms_peer_server *server, struct ms_peer_server_stats *out);

#endif
