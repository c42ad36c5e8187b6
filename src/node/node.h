/*
 * node.h - the node: sandboxes, the template cache and builds, behind the
 * API's typed requests (api.h). One per daemon; no file-static state.
 *
 * Sandbox lifecycle (one record per sandbox id):
 *
 *   create(guest) ──▶ RUNNING ──pause──▶ PAUSED ──resume──▶ RUNNING ...
 *   create(build) ──┘    │                  │
 *                        └──delete──▶ (gone) ◀──delete──┘
 *   A pause that fails after the VM stopped leaves FAILED (delete only).
 *
 * A sandbox's VM is driven by one worker thread of its own: the proc backend
 * is ptrace'd, and only the thread that seized a process may drive it.
 * Requests on one sandbox are serialized by its op lock; a failed create or
 * resume leaves nothing behind (the record is inserted only on success, and a
 * failed resume keeps the sandbox PAUSED).
 *
 * Templates: every build this node knows, keyed by build id: the layered file
 * a warm resume serves from, the snapfile, and for a pause made here the
 * pipeline, whose figures are read from it (ms_pause_state/_stats), and a
 * follower thread that marks its end. TTL (default 25 h) from insertion,
 * extended by a hit, never shortened; eviction drops the cache's reference,
 * and the last reference (a running sandbox, a child pause) closes the file.
 * A miss fetches the header and snapfile from the store on a detached thread;
 * concurrent misses of one build share that fetch.
 *
 * Recovery (recovery.c): at start, the builds a killed daemon left half
 * uploaded (its upload journal) are resolved: whole, or lost and removed.
 */
#ifndef MS_NODE_NODE_H
#define MS_NODE_NODE_H

#include "node/api.h"
#include "node/config.h"
#include "node/metrics.h"

struct ms_node;

struct ms_node_response {
	unsigned status;
	char *body; /* malloc'd */
	const char *content_type;
	unsigned retry_after; /* seconds, for the Retry-After header (0: none) */
};

/*
 * Opens the store, the diff store and the backend; empties the cache dir of
 * leftovers. cfg is copied. NULL on error with *err set and why filled.
 */
struct ms_node *ms_node_new(const struct ms_node_config *cfg, int *err, char *why, size_t why_len);
/* Handles one request; never fails to fill resp (errors are JSON bodies). */
void ms_node_handle(struct ms_node *node, const struct ms_api_request *req,
		    struct ms_node_response *resp);
/* Counts one answered request by status class. */
void ms_node_count_request(struct ms_node *node, unsigned status);
/*
 * Graceful stop: new requests get 503; running sandboxes are stopped; waits up
 * to shutdown_timeout for every pause's upload. Returns the number of uploads
 * that did not finish (0: all published or failed).
 */
unsigned ms_node_shutdown(struct ms_node *node);
/* Frees everything (after ms_node_shutdown returned 0). */
void ms_node_free(struct ms_node *node);
/* The backend's name ("proc", "kvm"). */
const char *ms_node_backend(struct ms_node *node);
/* "ADDR:PORT" of the peer server as bound, or NULL when it does not run. */
const char *ms_node_peer_address(struct ms_node *node);

#endif
