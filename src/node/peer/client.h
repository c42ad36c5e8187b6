/*
 * client.h - the reading side of peer transfer (as E2B's orchestrator does it):
 * an HTTP client of peer/server.h, a plain peer source, a routing source that
 * moves a build from its peer to the object store, and a layered-file
 * resolver that picks between them.
 *
 * Routing source states (one per build and file; never goes back):
 *
 *   PEER ──use_storage answer, the peer unreachable after its retries,──▶ STORAGE
 *    │ │   or ms_peer_routing_move_to_store()
 *    │ └─ not_available (a miss) ─▶ this read from the store when the build's
 *    │                               header is there; PEER stays
 *    ├─ available ─▶ bytes from the peer, through the peer side's chunk cache
 *    │  (what was fetched is read locally again, until the move drops it)
 *    └─ bytes that fail the peer's checksum table twice ─▶ MS_ECHECKSUM for this
 *       read, unless the store has the build (then the store); PEER stays
 *
 * The peer side's chunker reads through a checking store (storage/verified.h)
 * over the peer: once the origin's drain has written the diff file, the peer
 * serves "{id}/checksums" and every chunk is checked before it is cached;
 * before that (no table yet, asked again at most every MS_PEER_SUMS_RETRY_NS)
 * the peer's bytes - its in-flight memory - are read unverified.
 *
 * Invariants:
 *  1. A read never fails because the peer died: every peer failure falls back
 *     to the store; while the build is not in the store yet (its upload still
 *     running) the read waits for it with backoff, up to storage_wait_ns.
 *  2. Once in STORAGE, no request goes to the peer again. The store side is
 *     opened from the build's own header in the store (ms_build_storage_load_header):
 *     it may be compressed now; offsets stay those of the uncompressed packed
 *     space, so a read planned on the peer's header reads the same bytes.
 *  3. "In the store" means the build's header object exists: uploads put the
 *     data first, the header last (docs/design.md §5.7), so the data is complete.
 *  4. The routing source's two sides are chunkers of its own, not diff store
 *     entries: the routing source itself is the entry "{id}/{file}". The peer
 *     side's cache file is "peer-{id}-{file}-{nonce}.cache" in the cache dir.
 *
 * Thread-safety: every function may be called from any thread. A client is
 * refcounted; its curl handles are pooled under its lock.
 */
#ifndef MS_PEER_CLIENT_H
#define MS_PEER_CLIENT_H

#include "build/storage.h"
#include "cache/source.h"
#include "header/header.h"
#include "node/peer/proto.h"
#include "node/peer/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_PEER_PIECE_DEFAULT (4u << 20)
/* A routing source's peer side: chunks of 4 MiB fetched in 1 MiB requests (one
 * 64 KiB request measured 0.29 ms on loopback, 1 MiB 0.82 ms: 214 vs 1224 MiB/s) */
#define MS_PEER_CHUNK_DEFAULT (4u << 20)
#define MS_PEER_READ_DEFAULT  (1u << 20)
/* While the drain runs the peer has no checksum table: a routing source asks for
 * it again at most this often meanwhile (its peer reads stay unverified until then) */
#define MS_PEER_SUMS_RETRY_NS (100LL * 1000000LL)

struct ms_peer_client_config {
	const char *address; /* "ADDR:PORT" of the peer server; required (copied) */
	const char *token;   /* bearer token; required (copied) */
	/* NULL: plain HTTP; else HTTPS, presenting this certificate and trusting only this CA
	 * (tls.h; copied by a client, borrowed by a resolver until it is freed) */
	const struct ms_peer_tls_pem *tls;
	int64_t connect_timeout_ms; /* 0: 1000 */
	int64_t timeout_ms;	    /* one request; 0: 40000 (a header waits for the durable one) */
	unsigned attempts;	    /* tries per request on transport failures; 0: 3 */
	int64_t retry_initial_ns;   /* 0: 50 ms, doubling to 500 ms */
	uint32_t piece;		    /* bytes per data request; 0: 4 MiB (<= MS_PEER_RANGE_MAX) */
};

/* One answer: any status. body is malloc'd (NULL when empty); ms_peer_answer_fini frees it. */
struct ms_peer_answer {
	enum ms_peer_status status;
	unsigned http;
	void *body;
	size_t len;
	bool incomplete;    /* X-Memsnap-Incomplete: 1 */
	bool has_data_size; /* X-Memsnap-Data-Size was given */
	uint64_t data_size;
};

struct ms_peer_client;

/* NULL on error with *err set (-EINVAL, -ENOMEM). One reference. */
struct ms_peer_client *ms_peer_client_new(const struct ms_peer_client_config *config, int *err);
struct ms_peer_client *ms_peer_client_ref(struct ms_peer_client *client);
/* NULL is ignored. */
void ms_peer_client_unref(struct ms_peer_client *client);
const char *ms_peer_client_address(const struct ms_peer_client *client);

/*
 * One request, retried on transport failures. 0 with *answer (whatever its
 * status), or, after the attempts: -ECONNREFUSED, -ETIMEDOUT, -EIO, MS_EPROTO
 * (no valid status header, or a data answer of the wrong length).
 */
int ms_peer_client_get(struct ms_peer_client *client, const struct ms_peer_request *req,
		       struct ms_peer_answer *answer);
void ms_peer_answer_fini(struct ms_peer_answer *answer);

/*
 * The build's durable header from the peer. 0 with *status; when available,
 * *out (parsed and validated; incomplete while its upload runs). Transport
 * errors as ms_peer_client_get; MS_ECORRUPT for bytes that do not parse.
 */
int ms_peer_client_header(struct ms_peer_client *client, const ms_uuid *build_id,
			  enum ms_peer_file file, enum ms_peer_status *status,
			  struct ms_header **out);
/* The status endpoint: 0 with *status; when available, the file's data size. */
int ms_peer_client_status(struct ms_peer_client *client, const ms_uuid *build_id,
			  enum ms_peer_file file, enum ms_peer_status *status, uint64_t *data_size);
/*
 * Reads [off, off + len) of the build's data (of data_size bytes) from the peer,
 * in block-aligned pieces. 0 with *status (dst filled only when available).
 */
int ms_peer_client_read(struct ms_peer_client *client, const ms_uuid *build_id,
			enum ms_peer_file file, uint64_t data_size, void *dst, uint64_t off,
			size_t len, enum ms_peer_status *status);

/*
 * A source over a build's data on one peer (a reference on client is taken).
 * Reads: 0, MS_ENOTFOUND for a not_available or use_storage answer (see
 * ms_peer_source_status), or the transport error. NULL on -ENOMEM.
 */
struct ms_source *ms_peer_source_new(struct ms_peer_client *client, const ms_uuid *build_id,
				     enum ms_peer_file file, uint64_t size);
/* The status of the last answer this source got (available before any). */
enum ms_peer_status ms_peer_source_status(struct ms_source *src);

/* ---- routing ---- */

/* Called once when a routing source has moved to the store; header: the build's own
 * header from the store, ownership passed (swap it in, or free it). */
typedef void (*ms_peer_on_storage_fn)(void *ctx, const ms_uuid *build_id, struct ms_header *header);

/*
 * Totals over many routing sources (a resolver's, for metrics): each routing
 * source adds to them as it counts its own.
 */
struct ms_peer_read_totals {
	_Atomic uint64_t peer_reads, peer_bytes; /* reads (and bytes) the peer served */
	_Atomic uint64_t storage_reads;		 /* reads the store served */
	_Atomic uint64_t misses, peer_failures;	 /* as in ms_peer_routing_stats */
	_Atomic uint64_t moved;			 /* builds moved to the store */
	_Atomic uint64_t headers_from_peer;	 /* ms_peer_resolver_load_header from a peer */
};

struct ms_peer_routing_config {
	struct ms_peer_client *client;	  /* a reference is taken; required */
	struct ms_build_storage *storage; /* borrowed: store, cache dir, which file */
	ms_uuid build_id;
	uint64_t size;			  /* the build's data size (ms_peer_client_status) */
	int64_t storage_wait_ns;	  /* 0: 60 s */
	ms_peer_on_storage_fn on_storage; /* may be NULL */
	void *ctx;
	struct ms_peer_read_totals *totals; /* borrowed; may be NULL */
	uint64_t chunk_size;		    /* the peer side's chunks; 0: MS_PEER_CHUNK_DEFAULT */
	uint64_t read_size;		    /* bytes per peer request; 0: MS_PEER_READ_DEFAULT */
	uint32_t readahead; /* peer chunks read ahead of a stream (cache/chunker.h); 0: default */
};

struct ms_peer_routing_stats {
	uint64_t peer_reads;	/* reads served by the peer */
	uint64_t storage_reads; /* reads served by the store */
	uint64_t misses;	/* not_available answers (then the store) */
	uint64_t peer_failures; /* peer unreachable after its retries */
	uint64_t waits;		/* backoffs waiting for the store to have the build */
	bool on_storage;
	bool moved_by_use_storage; /* STORAGE because of a use_storage answer */
};

/* NULL on error with *err set (-EINVAL, -ENOMEM). */
struct ms_source *ms_peer_routing_new(const struct ms_peer_routing_config *config, int *err);
bool ms_peer_routing_is_routing(const struct ms_source *src);
/*
 * The build is in the store (its owner saw its header there): the source moves
 * to the store for good and drops its peer side. Any other source is ignored.
 */
void ms_peer_routing_move_to_store(struct ms_source *src);
void ms_peer_routing_get_stats(struct ms_source *src, struct ms_peer_routing_stats *out);

/* ---- the resolver: which source a build's reads go to ---- */

struct ms_peer_resolver_config {
	struct ms_build_storage
	    *storage;			 /* borrowed: the shared store and this node's diff store */
	const char *token;		 /* for every peer (copied) */
	const char *self_address;	 /* this node's peer address: never asked (may be NULL) */
	const char *const *static_peers; /* asked in order when the registry has no entry */
	size_t static_peer_count;
	struct ms_peer_client_config client; /* timeouts; address and token ignored */
	int64_t storage_wait_ns;	     /* routing sources; 0: 60 s */
	ms_peer_on_storage_fn on_storage;    /* given to every routing source; may be NULL */
	void *ctx;
	uint64_t chunk_size, read_size; /* routing sources' peer sides; 0: the defaults */
	uint32_t readahead;		/* theirs too (MS_CHUNK_READAHEAD_OFF: none); 0: default */
};

struct ms_peer_resolver;

/* NULL on error with *err set. */
struct ms_peer_resolver *ms_peer_resolver_new(const struct ms_peer_resolver_config *config,
					      int *err);
/* No source it made may be read any more (they hold the storage config). */
void ms_peer_resolver_free(struct ms_peer_resolver *resolver);
/* The totals over every routing source this resolver made (and its header loads). */
struct ms_peer_read_totals *ms_peer_resolver_totals(struct ms_peer_resolver *resolver);

/*
 * ms_layered_resolve_fn: the diff store entry "{id}/{file}", created as a
 * routing source when a live peer has the build and it is not uploaded (the
 * registry, then the static list), else as the store's chunked source.
 */
int ms_peer_resolve(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
		    struct ms_source **out);

/*
 * A build's header for a resume on this node: from a live peer that holds it
 * (durable, maybe incomplete; *from_peer true), else from the store.
 */
int ms_peer_resolver_load_header(struct ms_peer_resolver *resolver, const ms_uuid *build_id,
				 enum ms_peer_file file, struct ms_header **out, bool *from_peer);

/*
 * A build's snapfile or metadata (op MS_PEER_OP_SNAPFILE or MS_PEER_OP_METADATA)
 * for a resume on this node: from a live peer that holds the build (*from_peer
 * true), else the store's object (at most max_len bytes). *buf is malloc'd.
 */
int ms_peer_resolver_load_blob(struct ms_peer_resolver *resolver, const ms_uuid *build_id,
			       enum ms_peer_op op, size_t max_len, void **buf, size_t *len,
			       bool *from_peer);

#endif
