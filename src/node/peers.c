/*
 * peers.c - the daemon's side of peer transfer (peers.h).
 */
#include "node/peers.h"
#include "node/peer/registry.h"
#include "sandbox/guest.h"
#include "storage/artifact.h"
#include "util/err.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_MOD	     "peers"
#define METADATA_MAX (32u << 20) /* metadata.json with a prefetch trace (16 B an entry) */

/*
 * Set by ms_node_peers_new, then read-only: no lock. server alone changes, to
 * NULL, in ms_node_peers_stop_server, which the node calls once nothing can
 * serve or forget a build any more (after its shutdown).
 */
struct ms_node_peers {
	struct ms_build_storage *storage;
	struct ms_peer_server *server;	   /* NULL: not serving */
	struct ms_peer_resolver *resolver; /* NULL: not reading peers */
	int64_t ttl_ms;
	struct ms_peer_tls_pem tls; /* peer_tls: the link's certificates; all NULL: plain HTTP */
	char **static_peers;
	size_t npeers;
	_Atomic uint64_t registry_errors;
};

/* Splits "A:P, B:P" into peers->static_peers. */
static int ms_node_peers_parse(struct ms_node_peers *peers, const char *list, char *why,
			       size_t why_len)
{
	char *copy = strdup(list), *save = NULL;
	if (!copy)
		return -ENOMEM;
	int err = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok && !err;
	     tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		size_t n = strlen(tok);
		while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
			tok[--n] = '\0';
		if (!n)
			continue;
		const char *colon = strrchr(tok, ':');
		if (!colon || colon == tok || !colon[1] || n >= MS_PEER_ADDRESS_MAX) {
			snprintf(why, why_len, "peers: '%s' is not ADDR:PORT", tok);
			err = -EINVAL;
			break;
		}
		char **grown = realloc(peers->static_peers, (peers->npeers + 1) * sizeof(char *));
		if (!grown || !(grown[peers->npeers] = strdup(tok))) {
			if (grown)
				peers->static_peers = grown;
			err = -ENOMEM;
			break;
		}
		peers->static_peers = grown;
		peers->npeers++;
	}
	free(copy);
	return err;
}

/*
 * The peer link's TLS (node/peer/tls.h): on unless peer_tls = off, and then it
 * needs the three files. Plain HTTP only when asked for by name; certificate
 * files with peer_tls = off are a contradiction, refused rather than ignored.
 */
static int ms_node_peers_tls(struct ms_node_peers *peers, const struct ms_node_config *cfg,
			     char *why, size_t why_len)
{
	struct ms_peer_tls files = {.ca_file = cfg->peer_tls_ca,
				    .cert_file = cfg->peer_tls_cert,
				    .key_file = cfg->peer_tls_key};
	if (!cfg->peer_tls) {
		if (ms_peer_tls_on(&files)) {
			snprintf(why, why_len,
				 "peer_tls = off, but peer_tls_ca/_cert/_key are set: remove them, "
				 "or turn peer_tls on");
			return -EINVAL;
		}
		ms_warn(MS_MOD, "peer link: plain HTTP (peer_tls = off): the peer token and every "
				"byte a peer reads cross the network in the clear");
		return 0;
	}
	if (!ms_peer_tls_on(&files)) {
		snprintf(why, why_len,
			 "the peer link needs TLS: set peer_tls_ca, peer_tls_cert and peer_tls_key "
			 "(or peer_tls = off for plain HTTP on a network nobody else is on)");
		return -EINVAL;
	}
	return ms_peer_tls_load(&files, &peers->tls, why, why_len);
}

struct ms_node_peers *ms_node_peers_new(const struct ms_node_config *cfg,
					struct ms_build_storage *storage,
					ms_node_peers_hook_fn hook, void *hook_ctx, int *err,
					char *why, size_t why_len)
{
	struct ms_node_peers *peers = calloc(1, sizeof(*peers));
	if (!peers) {
		*err = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	peers->storage = storage;
	peers->ttl_ms = cfg->peer_ttl_ns / 1000000;
	if ((*err = ms_node_peers_parse(peers, cfg->peers, why, why_len))) {
		if (*err == -ENOMEM)
			snprintf(why, why_len, "out of memory");
		goto fail;
	}
	if (!cfg->peer_token[0]) {
		if (cfg->peer_listen[0] || peers->npeers) {
			*err = -EINVAL;
			snprintf(
			    why, why_len,
			    "%s needs the peer token: set peer_token_file or MEMSNAP_PEER_TOKEN",
			    cfg->peer_listen[0] ? "peer_listen" : "peers");
			goto fail;
		}
		return peers; /* peers off: the store only */
	}
	if ((*err = ms_node_peers_tls(peers, cfg, why, why_len)))
		goto fail;
	const struct ms_peer_tls_pem *tls = peers->tls.ca ? &peers->tls : NULL;
	if (cfg->peer_listen[0]) {
		if (!strncmp(cfg->peer_listen, "0.0.0.0:", 8)) {
			*err = -EINVAL;
			snprintf(why, why_len,
				 "peer_listen %s: other nodes dial this address (it goes into the "
				 "registry): give the node's own address, not 0.0.0.0",
				 cfg->peer_listen);
			goto fail;
		}
		struct ms_peer_server_config scfg = {.listen = cfg->peer_listen,
						     .token = cfg->peer_token,
						     .tls = tls,
						     .on_request = hook,
						     .on_request_ctx = hook_ctx};
		if (!(peers->server = ms_peer_server_start(&scfg, err))) {
			snprintf(why, why_len, "peer_listen %s: %s", cfg->peer_listen,
				 *err == -EINVAL ? "not an IPv4 ADDR:PORT"
				 : *err == MS_ECORRUPT
				     ? "TLS did not start: is peer_tls_key the key of "
				       "peer_tls_cert, and are the files PEM?"
				     : ms_strerror(*err));
			goto fail;
		}
	}
	struct ms_peer_resolver_config rcfg = {
	    .storage = storage,
	    .token = cfg->peer_token,
	    .self_address = peers->server ? ms_peer_server_address(peers->server) : NULL,
	    .static_peers = (const char *const *)peers->static_peers,
	    .static_peer_count = peers->npeers,
	    .client = {.tls = tls}, /* borrowed: peers->tls lives as long as the resolver */
	};
	if (!(peers->resolver = ms_peer_resolver_new(&rcfg, err))) {
		snprintf(why, why_len, "peer resolver: %s", ms_strerror(*err));
		goto fail;
	}
	return peers;
fail:
	ms_node_peers_free(peers);
	return NULL;
}

void ms_node_peers_stop_server(struct ms_node_peers *peers)
{
	if (!peers || !peers->server)
		return;
	ms_peer_server_stop(peers->server);
	peers->server = NULL;
}

void ms_node_peers_free(struct ms_node_peers *peers)
{
	if (!peers)
		return;
	ms_node_peers_stop_server(peers);
	ms_peer_resolver_free(peers->resolver);
	for (size_t i = 0; i < peers->npeers; i++)
		free(peers->static_peers[i]);
	free(peers->static_peers);
	ms_peer_tls_pem_fini(&peers->tls);
	free(peers);
}

const char *ms_node_peers_address(struct ms_node_peers *peers)
{
	return peers->server ? ms_peer_server_address(peers->server) : NULL;
}

ms_layered_resolve_fn ms_node_peers_resolve(struct ms_node_peers *peers, void **ctx)
{
	if (peers->resolver) {
		*ctx = peers->resolver;
		return ms_peer_resolve;
	}
	*ctx = peers->storage;
	return ms_build_storage_resolve;
}

/* {"build_id", "guest", "mem_bytes"}: malloc'd text, or NULL. */
static char *ms_node_peers_metadata(const ms_uuid *id, int guest, uint64_t mem_size)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "build_id", text);
	if (ms_guest_name(guest))
		cJSON_AddStringToObject(o, "guest", ms_guest_name(guest));
	cJSON_AddNumberToObject(o, "mem_bytes", (double)mem_size);
	char *s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

int ms_node_peers_serve(struct ms_node_peers *peers, const struct ms_peer_build *build, int guest,
			uint64_t mem_size)
{
	if (!peers->server)
		return 0;
	/* the build's own metadata.json when the caller has one, else the basics */
	char *meta =
	    build->metadata ? NULL : ms_node_peers_metadata(&build->build_id, guest, mem_size);
	if (!build->metadata && !meta)
		return -ENOMEM;
	struct ms_peer_build b = *build;
	if (meta) {
		b.metadata = meta;
		b.metadata_len = strlen(meta);
	}
	int err = ms_peer_server_add(peers->server, &b); /* copies the metadata */
	free(meta);
	if (err)
		return err;
	int rerr = ms_peer_registry_put(peers->storage->store, &build->build_id,
					ms_peer_server_address(peers->server), peers->ttl_ms,
					ms_peer_registry_now_ms());
	if (rerr) {
		char text[MS_UUID_STR_LEN];
		ms_uuid_format(&build->build_id, text);
		ms_warn(MS_MOD,
			"build %s: registry record not written (%s): only static peers "
			"find it before its upload",
			text, ms_strerror(rerr));
		atomic_fetch_add(&peers->registry_errors, 1);
	}
	return 0;
}

void ms_node_peers_uploaded(struct ms_node_peers *peers, const ms_uuid *build_id, bool published)
{
	if (!peers->server)
		return;
	int err = ms_peer_registry_remove(peers->storage->store, build_id);
	if (err) { /* the TTL ends it */
		char text[MS_UUID_STR_LEN];
		ms_uuid_format(build_id, text);
		ms_warn(MS_MOD, "build %s: registry record not removed: %s", text,
			ms_strerror(err));
		atomic_fetch_add(&peers->registry_errors, 1);
	}
	/* a failed upload keeps the build served: this node has its only copy */
	if (published)
		ms_peer_server_remove(peers->server, build_id, true);
}

void ms_node_peers_forget(struct ms_node_peers *peers, const ms_uuid *build_id)
{
	if (peers->server)
		ms_peer_server_remove(peers->server, build_id, false);
}

/* The guest kind in a metadata blob, or -1. */
static int ms_node_peers_guest(const void *buf, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(o, "guest");
	enum ms_guest_kind kind;
	int guest = cJSON_IsString(g) && !ms_guest_parse(g->valuestring, &kind) ? (int)kind : -1;
	cJSON_Delete(o);
	return guest;
}

/* Keeps metadata.json (buf: malloc'd, taken) NUL-terminated in out, and its guest kind. */
static void ms_node_peers_take_metadata(struct ms_node_build_blobs *out, void *buf, size_t len)
{
	char *text = realloc(buf, len + 1);
	if (!text) {
		free(buf);
		return;
	}
	text[len] = '\0';
	out->metadata = text;
	out->metadata_len = len;
	out->guest = ms_node_peers_guest(text, len);
}

/* A build's snapfile or metadata.json (op): through the resolver (a live peer first) when
 * there is one, else from the store. */
static int ms_node_peers_blob(struct ms_node_peers *peers, const ms_uuid *build_id,
			      enum ms_peer_op op, size_t max_len, void **buf, size_t *len)
{
	bool from_peer;
	if (peers->resolver)
		return ms_peer_resolver_load_blob(peers->resolver, build_id, op, max_len, buf, len,
						  &from_peer);
	char key[MS_ARTIFACT_KEY_MAX];
	enum ms_artifact artifact =
	    op == MS_PEER_OP_SNAPFILE ? MS_ARTIFACT_SNAPFILE : MS_ARTIFACT_METADATA;
	int err = ms_artifact_key(key, sizeof(key), build_id, artifact, MS_COMPRESS_NONE);
	return err ? err : ms_store_read_all(peers->storage->store, key, max_len, buf, len);
}

int ms_node_peers_load(struct ms_node_peers *peers, const ms_uuid *build_id, size_t snapfile_max,
		       struct ms_node_build_blobs *out)
{
	*out = (struct ms_node_build_blobs){.guest = -1};
	int err =
	    peers->resolver
		? ms_peer_resolver_load_header(peers->resolver, build_id, MS_PEER_FILE_MEMFILE,
					       &out->header, &out->from_peer)
		: ms_build_storage_load_header(peers->storage->store, build_id,
					       MS_ARTIFACT_MEMFILE_HEADER, &out->header);
	if (!err)
		err = ms_node_peers_blob(peers, build_id, MS_PEER_OP_SNAPFILE, snapfile_max,
					 &out->snapfile, &out->snapfile_len);
	if (err) {
		ms_header_free(out->header);
		out->header = NULL;
		return err;
	}
	/* from the peer, else the store's metadata.json (a build without one: guest unknown) */
	void *meta = NULL;
	size_t len = 0;
	if (!ms_node_peers_blob(peers, build_id, MS_PEER_OP_METADATA, METADATA_MAX, &meta, &len))
		ms_node_peers_take_metadata(out, meta, len);
	return 0;
}

int ms_node_peers_check_store(struct ms_node_peers *peers, const ms_uuid *build_id,
			      bool *seen_record, struct ms_header **out)
{
	struct ms_store *store = peers->storage->store;
	/* the record first: a node writes the header, then removes the record */
	struct ms_peer_record rec;
	int rerr = ms_peer_registry_lookup(store, build_id, ms_peer_registry_now_ms(), &rec);
	if (rerr && rerr != MS_ENOTFOUND)
		return rerr;
	if (!rerr)
		*seen_record = true;
	int err = ms_build_storage_load_header(store, build_id, MS_ARTIFACT_MEMFILE_HEADER, out);
	if (err != MS_ENOTFOUND)
		return err;
	return rerr == MS_ENOTFOUND && *seen_record ? MS_ENOTFOUND : -EAGAIN;
}

void ms_node_peers_get_live(struct ms_node_peers *peers, struct ms_node_peers_live *out)
{
	memset(out, 0, sizeof(*out));
	out->registry_errors = atomic_load(&peers->registry_errors);
	if (peers->server) {
		out->serving = true;
		ms_peer_server_get_stats(peers->server, &out->server);
	}
	if (peers->resolver) {
		out->reading = true;
		struct ms_peer_read_totals *t = ms_peer_resolver_totals(peers->resolver);
		out->peer_reads = atomic_load(&t->peer_reads);
		out->peer_bytes = atomic_load(&t->peer_bytes);
		out->storage_reads = atomic_load(&t->storage_reads);
		out->misses = atomic_load(&t->misses);
		out->peer_failures = atomic_load(&t->peer_failures);
		out->moved = atomic_load(&t->moved);
		out->headers_from_peer = atomic_load(&t->headers_from_peer);
	}
}
