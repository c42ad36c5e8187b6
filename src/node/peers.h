/*
 * peers.h - the daemon's side of peer transfer (as E2B's orchestrator does it):
 * the peer library (peer/server.h, peer/client.h, peer/registry.h) as one
 * node uses it. node.c calls these at the points of a build's life:
 *
 *   pause started ──▶ ms_node_peers_serve      the peer server has it and
 *                                              peers/{id} names this node
 *   upload ended  ──▶ ms_node_peers_uploaded   the record goes; a published
 *                                              build answers use_storage
 *   template freed ─▶ ms_node_peers_forget     the server lets go of it
 *
 *   cold resume ──▶ ms_node_peers_load         header, snapfile and metadata
 *                                              from the live peer that holds
 *                                              the build, else from the store
 *   peer template ─▶ ms_node_peers_check_store until the build is in the
 *                                              store (then its header there)
 *
 * Off switches: without a peer token the node neither serves nor reads peers
 * (builds come from the store only: ms_node_peers_resolve is the plain store
 * resolver); with a token and no peer_listen it reads peers but serves none.
 *
 * Metadata served to peers (GET .../metadata.json): {"build_id", "guest",
 * "mem_bytes"}: the guest kind a resume needs and the store cannot tell.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef MS_NODE_PEERS_H
#define MS_NODE_PEERS_H

#include "build/layered.h"
#include "build/storage.h"
#include "header/header.h"
#include "node/config.h"
#include "node/peer/client.h"
#include "node/peer/server.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ms_node_peers;

/* A scrape's view. */
struct ms_node_peers_live {
	bool serving, reading;
	struct ms_peer_server_stats server;
	uint64_t peer_reads, peer_bytes, storage_reads, misses, peer_failures, moved;
	uint64_t headers_from_peer;
	uint64_t registry_errors;
};

/* Tests: the peer server's on_request hook (peer/server.h). */
typedef int (*ms_node_peers_hook_fn)(void *ctx, const struct ms_peer_request *req);

/*
 * Starts the peer server (peer_listen) and the resolver (peer token) as cfg
 * says. storage is borrowed until ms_node_peers_free; hook may be NULL. NULL
 * on error with *err and why set.
 */
struct ms_node_peers *ms_node_peers_new(const struct ms_node_config *cfg,
					struct ms_build_storage *storage,
					ms_node_peers_hook_fn hook, void *hook_ctx, int *err,
					char *why, size_t why_len);
/* Stops the server (no build is served after it returns); the resolver stays. */
void ms_node_peers_stop_server(struct ms_node_peers *peers);
/* After every layered file that resolves through it is freed. NULL is ignored. */
void ms_node_peers_free(struct ms_node_peers *peers);

/* "ADDR:PORT" of the peer server, or NULL when it does not run. */
const char *ms_node_peers_address(struct ms_node_peers *peers);
/* The resolver for layered files on this node (and its ctx). */
ms_layered_resolve_fn ms_node_peers_resolve(struct ms_node_peers *peers, void **ctx);

/*
 * A build paused on this node: served to peers and recorded in the registry.
 * build is copied (its pointers borrowed until ms_node_peers_forget or
 * ms_node_peers_uploaded(published)). guest < 0: unknown. A registry write
 * that fails is logged and counted, not an error (static peers still find
 * the build); 0 also when the server does not run.
 */
int ms_node_peers_serve(struct ms_node_peers *peers, const struct ms_peer_build *build, int guest,
			uint64_t mem_size);
/* The build's upload ended: its record goes; published: use_storage from now on. */
void ms_node_peers_uploaded(struct ms_node_peers *peers, const ms_uuid *build_id, bool published);
/* The build's template is going: the server lets go of it (waits for its requests). */
void ms_node_peers_forget(struct ms_node_peers *peers, const ms_uuid *build_id);

/* What a cold resume needs; ms_node_peers_load fills it. */
struct ms_node_build_blobs {
	struct ms_header *header; /* owned */
	void *snapfile;		  /* malloc'd */
	size_t snapfile_len;
	char *metadata; /* metadata.json, malloc'd and NUL-terminated, or NULL: none */
	size_t metadata_len;
	int guest;	/* enum ms_guest_kind from the metadata, or -1: unknown */
	bool from_peer; /* header and snapfile came from a peer */
};

/*
 * The header and snapfile of build_id: from the live peer that holds it, else
 * from the store. snapfile_max bounds the snapfile. MS_ENOTFOUND when neither
 * has the build.
 */
int ms_node_peers_load(struct ms_node_peers *peers, const ms_uuid *build_id, size_t snapfile_max,
		       struct ms_node_build_blobs *out);

/*
 * One look at whether a build read from a peer is in the store: 0 with *out
 * (its header there); -EAGAIN while it is not and the registry still names a
 * node for it (or names none but was never asked: static peers); MS_ENOTFOUND
 * when it is not and its record is gone (the upload failed, or its node died
 * and the record expired); a store error.
 */
int ms_node_peers_check_store(struct ms_node_peers *peers, const ms_uuid *build_id,
			      bool *seen_record, struct ms_header **out);

void ms_node_peers_get_live(struct ms_node_peers *peers, struct ms_node_peers_live *out);

#endif
