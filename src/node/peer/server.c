// Over 800 lines: the glue, the build table and one handler per endpoint of proto.h read best
// together.
/*
 * server.c - the peer server (server.h): libmicrohttpd glue, the build table,
 * and one handler per endpoint of proto.h.
 *
 * A request's life: the URI log callback keeps the raw request URI (path and
 * query exactly as sent: the parser sees what the client sent, not MHD's
 * unescaped path); the access handler checks the client's certificate (TLS:
 * tls.h), then the token, parses, takes a
 * reference on the build (the table's lock is held only for that), answers,
 * and drops the reference; ms_peer_server_remove waits for the last one.
 *
 * Build entry states:
 *
 *   add ──▶ LIVE ──remove(uploaded=false)──▶ (gone: 404 not_available)
 *             └────remove(uploaded=true)───▶ TOMBSTONE (410 use_storage) ──tombstone_ns──▶ (gone)
 */
#include "node/peer/server.h"
#include "header/serialize.h"
#include "storage/artifact.h"
#include "storage/checksums.h"
#include "util/clock.h"
#include "util/bearer.h"
#include "util/err.h"
#include "util/log.h"
#include "util/nofork.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS_MOD "peer"
/* a header wait is cut in slices so that stop is not held up by a long wait */
#define MS_PEER_WAIT_SLICE (50LL * MS_NSEC_PER_MSEC)
#define MS_PEER_READ_TRIES 4

struct ms_peer_entry {
	struct ms_peer_build build; /* snapfile and metadata: owned copies */
	unsigned holders;	    /* requests using it; guarded by server->lock */
	bool tombstone;		    /* removed after its upload; guarded by server->lock */
	bool removing;		    /* remove waits for its holders; guarded by server->lock */
	int64_t tombstone_until;    /* CLOCK_MONOTONIC ns */
	struct ms_peer_entry *next;
};

struct ms_peer_server {
	struct MHD_Daemon *daemon;
	int fd;
	unsigned port;
	char address[64];
	char *token;
	struct ms_peer_tls_pem tls; /* all NULL: plain HTTP; kept while the daemon runs */
	int64_t header_wait_ns, tombstone_ns;
	int (*on_request)(void *ctx, const struct ms_peer_request *req);
	void *on_request_ctx;
	_Atomic unsigned damage_checksums; /* tests: tables still to damage */
	atomic_bool stopping;

	pthread_mutex_t lock;	 /* guards entries and every entry's holders/tombstone */
	pthread_cond_t released; /* an entry's holders went down */
	struct ms_peer_entry *entries;

	_Atomic uint64_t requests, available, not_available, use_storage, bad_requests,
	    unauthorized, uncertified, data_bytes, dropped, connections;
	_Atomic uint64_t data_zero_copy; /* data answers sent from a view, not a copy */
};

/*
 * A connection's buffer for the data answers it does not send from a view
 * (TLS: ms_peer_serve_data), reused request after request, as large as the
 * largest answer so far (<= MS_PEER_RANGE_MAX) while the connection lives. A
 * malloc'd MiB per answer cost page faults, and after a proc sandbox's fork
 * (the child does not exec) a copy-on-write fault with a TLB shootdown for
 * each heap page it touched (do_wp_page under the server's memcpy in perf);
 * this one comes from util/nofork.h, so no child shares it. refs: the socket's
 * and the answer's in flight; busy while an answer uses it (a request that
 * finds it busy mallocs, as before).
 */
struct ms_peer_abuf {
	atomic_uint refs;
	atomic_bool busy;
	void *mem; /* NULL: none yet */
	size_t cap;
};

/* One TCP connection (libmicrohttpd's socket context; its own thread): the client
 * certificate is checked once per connection, not per request. */
struct ms_peer_socket {
	int certified;		   /* -1: not checked yet; else 0 or 1 */
	struct ms_peer_abuf *abuf; /* data answers not sent from a view; NULL: none yet */
};

static void ms_peer_abuf_unref(struct ms_peer_abuf *b)
{
	if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	ms_nofork_free(b->mem, b->cap);
	free(b);
}

/* An answer is sent: the buffer may serve the next one. */
static void ms_peer_abuf_done(void *cls)
{
	struct ms_peer_abuf *b = cls;
	atomic_store(&b->busy, false);
	ms_peer_abuf_unref(b);
}

/*
 * The connection's buffer of at least len bytes, busy and with a reference for
 * the answer; NULL (the caller mallocs) when it is busy or cannot be mapped.
 */
static struct ms_peer_abuf *ms_peer_abuf_take(struct MHD_Connection *conn, size_t len)
{
	const union MHD_ConnectionInfo *sock =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct ms_peer_socket *k = sock ? sock->socket_context : NULL;
	if (!k || !len)
		return NULL;
	if (!k->abuf) {
		if (!(k->abuf = calloc(1, sizeof(*k->abuf))))
			return NULL;
		atomic_init(&k->abuf->refs, 1);
	}
	struct ms_peer_abuf *b = k->abuf;
	bool idle = false;
	if (!atomic_compare_exchange_strong(&b->busy, &idle, true))
		return NULL;
	if (b->cap < len) {
		ms_nofork_free(b->mem, b->cap);
		b->cap = (b->mem = ms_nofork_alloc(len)) ? len : 0;
		if (!b->mem) {
			atomic_store(&b->busy, false);
			return NULL;
		}
	}
	atomic_fetch_add(&b->refs, 1);
	return b;
}

/* One connection's request: the raw URI from the log callback. */
struct ms_peer_conn {
	char *uri;
	bool headers_done; /* the access handler's first call is over */
};

/* ---- answers ---- */

static enum MHD_Result ms_peer_send(struct ms_peer_server *s, struct MHD_Connection *conn,
				    unsigned http, enum ms_peer_status status,
				    const char *content_type, void *body, size_t len,
				    bool must_free)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    len, body ? body : (void *)"",
	    must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		if (must_free)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MS_PEER_STATUS_HDR, ms_peer_status_name(status));
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	if (http == 401)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	switch (status) {
	case MS_PEER_AVAILABLE:
		atomic_fetch_add(&s->available, 1);
		break;
	case MS_PEER_USE_STORAGE:
		atomic_fetch_add(&s->use_storage, 1);
		break;
	default:
		atomic_fetch_add(&s->not_available, 1);
		break;
	}
	enum MHD_Result ret = MHD_queue_response(conn, http, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result ms_peer_send_error(struct ms_peer_server *s, struct MHD_Connection *conn,
					  unsigned http, enum ms_peer_status status,
					  const char *why)
{
	if (http == 400 || http == 405)
		atomic_fetch_add(&s->bad_requests, 1);
	else if (http == 401)
		atomic_fetch_add(&s->unauthorized, 1);
	else if (http == 403)
		atomic_fetch_add(&s->uncertified, 1);
	cJSON *o = cJSON_CreateObject();
	char *body = NULL;
	if (o && cJSON_AddStringToObject(o, "status", ms_peer_status_name(status)) &&
	    cJSON_AddStringToObject(o, "error", why))
		body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!body)
		return MHD_NO;
	return ms_peer_send(s, conn, http, status, "application/json", body, strlen(body), true);
}

/*
 * TLS: whether the client presented a certificate that the fleet CA (the trust
 * list libmicrohttpd was given) signed and that is valid now. libmicrohttpd only
 * asks for the certificate; checking it is ours.
 */
static bool ms_peer_certified(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *sock =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct ms_peer_socket *k = sock ? sock->socket_context : NULL;
	if (k && k->certified >= 0)
		return k->certified;
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	unsigned status = 0;
	bool ok = ci && ci->tls_session &&
		  gnutls_certificate_verify_peers2((gnutls_session_t)ci->tls_session, &status) ==
		      GNUTLS_E_SUCCESS &&
		  status == 0;
	if (k)
		k->certified = ok;
	return ok;
}

static void ms_peer_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
			   enum MHD_ConnectionNotificationCode toe)
{
	struct ms_peer_server *s = cls;
	(void)conn;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		atomic_fetch_add(&s->connections, 1);
		struct ms_peer_socket *k = malloc(sizeof(*k));
		if (k)
			*k = (struct ms_peer_socket){.certified =
							 -1}; /* else: every request checked */
		*socket_context = k;
	} else {
		struct ms_peer_socket *k = *socket_context;
		if (k)
			ms_peer_abuf_unref(k->abuf); /* an answer in flight keeps it */
		free(k);
		*socket_context = NULL;
	}
}

/* ---- the build table ---- */

static struct ms_peer_entry **ms_peer_find(struct ms_peer_server *s, const ms_uuid *id)
{
	struct ms_peer_entry **pp = &s->entries;
	for (; *pp; pp = &(*pp)->next)
		if (ms_uuid_eq(&(*pp)->build.build_id, id))
			return pp;
	return NULL;
}

static void ms_peer_entry_free(struct ms_peer_entry *e)
{
	free((void *)e->build.snapfile);
	free((void *)e->build.metadata);
	free(e);
}

/* Drops expired tombstones. Caller holds lock. */
static void ms_peer_sweep(struct ms_peer_server *s, int64_t now)
{
	struct ms_peer_entry **pp = &s->entries;
	while (*pp) {
		struct ms_peer_entry *e = *pp;
		if (e->tombstone && !e->removing && !e->holders && now >= e->tombstone_until) {
			*pp = e->next;
			ms_peer_entry_free(e);
		} else {
			pp = &e->next;
		}
	}
}

/*
 * A live entry with a reference (release it), or NULL with *status:
 * use_storage for a tombstone, not_available for an unknown build.
 */
static struct ms_peer_entry *ms_peer_acquire(struct ms_peer_server *s, const ms_uuid *id,
					     enum ms_peer_status *status)
{
	pthread_mutex_lock(&s->lock);
	ms_peer_sweep(s, ms_clock_now_ns());
	struct ms_peer_entry **pp = ms_peer_find(s, id);
	struct ms_peer_entry *e = pp ? *pp : NULL;
	if (e && e->tombstone) {
		*status = MS_PEER_USE_STORAGE;
		e = NULL;
	} else if (e) {
		e->holders++;
	} else {
		*status = MS_PEER_NOT_AVAILABLE;
	}
	pthread_mutex_unlock(&s->lock);
	return e;
}

static void ms_peer_release(struct ms_peer_server *s, struct ms_peer_entry *e)
{
	pthread_mutex_lock(&s->lock);
	e->holders--;
	pthread_cond_broadcast(&s->released);
	pthread_mutex_unlock(&s->lock);
}

int ms_peer_server_add(struct ms_peer_server *s, const struct ms_peer_build *build)
{
	if (!build || ms_uuid_is_nil(&build->build_id) || !build->memfile || !build->diffs)
		return -EINVAL;
	struct ms_peer_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->build = *build;
	e->build.snapfile = NULL;
	e->build.metadata = NULL;
	if (build->snapfile && build->snapfile_len) {
		void *copy = malloc(build->snapfile_len);
		if (!copy)
			goto nomem;
		memcpy(copy, build->snapfile, build->snapfile_len);
		e->build.snapfile = copy;
	}
	if (build->metadata) {
		void *copy = malloc(build->metadata_len + 1);
		if (!copy)
			goto nomem;
		memcpy(copy, build->metadata, build->metadata_len);
		e->build.metadata = copy;
	}
	pthread_mutex_lock(&s->lock);
	ms_peer_sweep(s, ms_clock_now_ns());
	struct ms_peer_entry **pp = ms_peer_find(s, &build->build_id);
	if (pp && !(*pp)->tombstone) {
		pthread_mutex_unlock(&s->lock);
		ms_peer_entry_free(e);
		return -EEXIST;
	}
	if (pp) { /* a tombstone with no holder (the sweep left it: holders) is replaced */
		struct ms_peer_entry *old = *pp;
		if (old->holders || old->removing) {
			pthread_mutex_unlock(&s->lock);
			ms_peer_entry_free(e);
			return -EBUSY;
		}
		*pp = old->next;
		ms_peer_entry_free(old);
	}
	e->next = s->entries;
	s->entries = e;
	pthread_mutex_unlock(&s->lock);
	return 0;
nomem:
	ms_peer_entry_free(e);
	return -ENOMEM;
}

int ms_peer_server_remove(struct ms_peer_server *s, const ms_uuid *build_id, bool uploaded)
{
	pthread_mutex_lock(&s->lock);
	struct ms_peer_entry **pp = ms_peer_find(s, build_id);
	if (!pp || (*pp)->tombstone) {
		pthread_mutex_unlock(&s->lock);
		return MS_ENOTFOUND;
	}
	struct ms_peer_entry *e = *pp;
	/* new requests see a tombstone (use_storage) or nothing from here on */
	e->tombstone = true;
	e->tombstone_until = ms_clock_now_ns() + (uploaded ? s->tombstone_ns : 0);
	e->removing = true; /* neither a sweep nor an add frees it under this wait */
	while (e->holders)
		pthread_cond_wait(&s->released, &s->lock);
	e->removing = false;
	/* the borrowed pointers are the caller's again */
	e->build.memfile = e->build.rootfs = NULL;
	e->build.diffs = NULL;
	e->build.published = NULL;
	e->build.checksums = NULL;
	if (!uploaded) {
		pp = ms_peer_find(s, build_id);
		*pp = e->next;
		ms_peer_entry_free(e);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- handlers ---- */

static bool ms_peer_uploaded(const struct ms_peer_entry *e)
{
	void *value;
	int err = 0;
	/* settled with a value: uploaded; settled with an error: this node keeps the only copy */
	return e->build.published && ms_future_peek(e->build.published, &value, &err) && !err;
}

static struct ms_layered *ms_peer_file_of(const struct ms_peer_entry *e, enum ms_peer_file file)
{
	return file == MS_PEER_FILE_ROOTFS ? e->build.rootfs : e->build.memfile;
}

/* The durable header, waiting up to header_wait_ns in slices (stop cuts the wait). */
static int ms_peer_durable(struct ms_peer_server *s, struct ms_layered *file,
			   struct ms_header_ref **out)
{
	int64_t deadline = ms_clock_now_ns() + s->header_wait_ns;
	for (;;) {
		int64_t left = deadline - ms_clock_now_ns();
		int64_t slice = left < MS_PEER_WAIT_SLICE ? left : MS_PEER_WAIT_SLICE;
		int err = ms_layered_durable_header(file, slice > 0 ? slice : 0, out);
		if (err != -ETIMEDOUT || left <= 0 || atomic_load(&s->stopping))
			return err;
	}
}

static int ms_peer_data_source(const struct ms_peer_entry *e, enum ms_peer_file file,
			       struct ms_source **out)
{
	char key[MS_ARTIFACT_KEY_MAX];
	int err =
	    ms_artifact_key(key, sizeof(key), &e->build.build_id,
			    file == MS_PEER_FILE_ROOTFS ? MS_ARTIFACT_ROOTFS : MS_ARTIFACT_MEMFILE,
			    MS_COMPRESS_NONE);
	return err ? err : ms_diffstore_get(e->build.diffs, key, out);
}

/*
 * The durable header of the file a request names, with a reference; NULL when
 * there is none, after queueing the refusal (*refused: what to return).
 */
static struct ms_header_ref *
ms_peer_durable_of(struct ms_peer_server *s, struct MHD_Connection *conn, struct ms_peer_entry *e,
		   const struct ms_peer_request *req, enum MHD_Result *refused)
{
	struct ms_layered *file = ms_peer_file_of(e, req->file);
	if (!file) {
		*refused = ms_peer_send_error(s, conn, 404, MS_PEER_NOT_AVAILABLE,
					      "this build has no such file");
		return NULL;
	}
	struct ms_header_ref *durable;
	if (ms_peer_durable(s, file, &durable)) {
		*refused = ms_peer_send_error(s, conn, 503, MS_PEER_NOT_AVAILABLE,
					      "the durable header is not ready");
		return NULL;
	}
	return durable;
}

/* Sends the durable header (the reference is dropped). */
static enum MHD_Result ms_peer_serve_header(struct ms_peer_server *s, struct MHD_Connection *conn,
					    struct ms_header_ref *durable)
{
	const struct ms_header *h = durable->header;
	/* the incomplete flag travels in V4/V5 only: a V3 header goes out as V5 */
	uint64_t version = (h->meta.version & 0xffff) >= MS_HEADER_V4 ? 0 : MS_HEADER_V5;
	uint8_t *bytes;
	size_t len;
	int err = ms_header_serialize(h, version, true, &bytes, &len);
	bool incomplete = h->incomplete;
	ms_header_ref_unref(durable);
	if (err) {
		ms_warn(MS_MOD, "cannot serialize a durable header: %s", ms_strerror(err));
		return ms_peer_send_error(s, conn, 503, MS_PEER_NOT_AVAILABLE,
					  "the header cannot be serialized");
	}
	struct MHD_Response *r = MHD_create_response_from_buffer(len, bytes, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(bytes);
		return MHD_NO;
	}
	MHD_add_response_header(r, MS_PEER_STATUS_HDR, "available");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	if (incomplete)
		MHD_add_response_header(r, MS_PEER_INCOMPLETE_HDR, "1");
	atomic_fetch_add(&s->available, 1);
	enum MHD_Result ret = MHD_queue_response(conn, 200, r);
	MHD_destroy_response(r);
	return ret;
}

/* libmicrohttpd is done with a zero-copy answer: the view may go. */
static void ms_peer_view_done(void *hold)
{
	ms_source_unref(hold);
}

static enum MHD_Result ms_peer_serve_data(struct ms_peer_server *s, struct MHD_Connection *conn,
					  struct ms_peer_entry *e,
					  const struct ms_peer_request *req)
{
	uint8_t *buf = NULL;
	struct ms_peer_abuf *abuf = NULL; /* buf is the connection's buffer (ms_peer_abuf) */
	const void *view = NULL;
	struct ms_source *view_hold = NULL; /* keeps view mapped until the answer is sent */
	uint64_t size = 0;
	int err = 0;
	for (int attempt = 0; attempt < MS_PEER_READ_TRIES; attempt++) {
		struct ms_source *src;
		if ((err = ms_peer_data_source(e, req->file, &src)))
			break;
		size = ms_source_size(src);
		if (req->offset > size || req->length > size - req->offset ||
		    (req->length % MS_PEER_ALIGN && req->offset + req->length != size)) {
			ms_source_unref(src);
			err = -ERANGE;
			break;
		}
		/*
		 * Plain HTTP sends straight from a zero-copy view (the kernel copies it
		 * to the socket: a fault there is EFAULT, not SIGBUS). TLS encrypts in
		 * this process, so it reads a faultsafe copy (cache/source.h, 3), into
		 * the connection's buffer (ms_peer_abuf).
		 */
		if (!req->head && !s->tls.ca && req->length &&
		    !ms_source_borrow(src, req->offset, req->length, &view, &view_hold)) {
			ms_source_unref(src);
			break;
		}
		if (!buf && !req->head && (abuf = ms_peer_abuf_take(conn, (size_t)req->length)))
			buf = abuf->mem;
		if (!buf && !req->head && !(buf = malloc(req->length))) {
			ms_source_unref(src);
			return MHD_NO;
		}
		err = req->head ? 0 : ms_source_read(src, buf, req->offset, req->length);
		ms_source_unref(src);
		if (err != MS_ECLOSED) /* closed: the drain replaced the packed source; again */
			break;
	}
	if (err || view_hold) { /* an earlier attempt's buffer is not sent either */
		if (abuf)
			ms_peer_abuf_done(abuf);
		else
			free(buf);
		abuf = NULL;
		buf = NULL;
	}
	if (err) {
		if (err == -ERANGE)
			return ms_peer_send_error(s, conn, 400, MS_PEER_NOT_AVAILABLE,
						  "range outside the build's data");
		if (err == MS_ENOTFOUND)
			return ms_peer_send_error(s, conn, 404, MS_PEER_NOT_AVAILABLE,
						  "this node does not hold the data");
		ms_warn(MS_MOD, "peer read failed: %s", ms_strerror(err));
		return ms_peer_send_error(s, conn, 503, MS_PEER_NOT_AVAILABLE, "read failed");
	}
	size_t len = req->head ? 0 : req->length;
	struct MHD_Response *r = view_hold ? MHD_create_response_from_buffer_with_free_callback_cls(
						 len, (void *)view, ms_peer_view_done, view_hold)
				 : abuf ? MHD_create_response_from_buffer_with_free_callback_cls(
					      len, buf, ms_peer_abuf_done, abuf)
					: MHD_create_response_from_buffer(
					      len, buf ? (void *)buf : (void *)"",
					      buf ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		if (abuf)
			ms_peer_abuf_done(abuf);
		else
			free(buf);
		ms_source_unref(view_hold);
		return MHD_NO;
	}
	if (view_hold)
		atomic_fetch_add(&s->data_zero_copy, 1);
	char size_text[24];
	snprintf(size_text, sizeof(size_text), "%" PRIu64, size);
	MHD_add_response_header(r, MS_PEER_STATUS_HDR, "available");
	MHD_add_response_header(r, MS_PEER_SIZE_HDR, size_text);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	atomic_fetch_add(&s->available, 1);
	atomic_fetch_add(&s->data_bytes, len);
	enum MHD_Result ret = MHD_queue_response(conn, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result ms_peer_serve_status(struct ms_peer_server *s, struct MHD_Connection *conn,
					    struct ms_peer_entry *e)
{
	struct ms_header_ref *durable;
	if (ms_peer_durable(s, e->build.memfile, &durable))
		return ms_peer_send_error(s, conn, 503, MS_PEER_NOT_AVAILABLE,
					  "the durable header is not ready");
	bool incomplete = durable->header->incomplete;
	ms_header_ref_unref(durable);
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&e->build.build_id, id);
	cJSON *o = cJSON_CreateObject();
	bool ok = o && cJSON_AddStringToObject(o, "status", "available") &&
		  cJSON_AddStringToObject(o, "build_id", id) &&
		  cJSON_AddBoolToObject(o, "incomplete", incomplete);
	for (int f = MS_PEER_FILE_MEMFILE; ok && f <= MS_PEER_FILE_ROOTFS; f++) {
		struct ms_source *src;
		if (!ms_peer_file_of(e, (enum ms_peer_file)f) ||
		    ms_peer_data_source(e, (enum ms_peer_file)f, &src))
			continue;
		char name[32];
		snprintf(name, sizeof(name), "%s_size",
			 f == MS_PEER_FILE_ROOTFS ? "rootfs" : "memfile");
		/* sizes are < 2^53: a JSON number holds them exactly */
		ok = cJSON_AddNumberToObject(o, name, (double)ms_source_size(src)) != NULL;
		ms_source_unref(src);
	}
	char *body = ok ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (!body)
		return MHD_NO;
	return ms_peer_send(s, conn, 200, MS_PEER_AVAILABLE, "application/json", body, strlen(body),
			    true);
}

static enum MHD_Result ms_peer_serve_blob(struct ms_peer_server *s, struct MHD_Connection *conn,
					  const void *blob, size_t len)
{
	if (!blob)
		return ms_peer_send_error(s, conn, 404, MS_PEER_NOT_AVAILABLE,
					  "this build has no such file");
	void *copy = malloc(len ? len : 1);
	if (!copy)
		return MHD_NO;
	memcpy(copy, blob, len);
	return ms_peer_send(s, conn, 200, MS_PEER_AVAILABLE, "application/octet-stream", copy, len,
			    true);
}

/* The data's checksum table, once the drain has written the diff file. */
static enum MHD_Result ms_peer_serve_checksums(struct ms_peer_server *s,
					       struct MHD_Connection *conn,
					       const struct ms_peer_entry *e)
{
	void *value = NULL;
	int err = 0;
	if (!e->build.checksums)
		return ms_peer_send_error(s, conn, 404, MS_PEER_NOT_AVAILABLE,
					  "this build has no such file");
	if (!ms_future_peek(e->build.checksums, &value, &err) || err || !value)
		return ms_peer_send_error(s, conn, 503, MS_PEER_NOT_AVAILABLE,
					  "no checksums yet: the drain is still running");
	uint8_t *table = NULL;
	size_t len = 0;
	if (ms_sums_serialize(value, &table, &len))
		return MHD_NO;
	unsigned damage = atomic_load(&s->damage_checksums);
	while (damage && !atomic_compare_exchange_weak(&s->damage_checksums, &damage, damage - 1))
		;
	if (damage)
		table[len / 2] ^= 0x10;
	return ms_peer_send(s, conn, 200, MS_PEER_AVAILABLE, "application/octet-stream", table, len,
			    true);
}

static enum MHD_Result ms_peer_access(void *cls, struct MHD_Connection *conn, const char *url,
				      const char *method, const char *version,
				      const char *upload_data, size_t *upload_data_size,
				      void **con_cls)
{
	struct ms_peer_server *s = cls;
	(void)url;
	(void)version;
	(void)upload_data;
	struct ms_peer_conn *c = *con_cls;
	if (*upload_data_size) { /* no endpoint takes a body: drop it */
		*upload_data_size = 0;
		return MHD_YES;
	}
	/*
	 * Answer on the second call, once the request is read: libmicrohttpd closes the
	 * connection after an answer queued in the first call ("Connection: close"), and
	 * every request would pay a new connection (with TLS, a new handshake).
	 */
	if (c && !c->headers_done) {
		c->headers_done = true;
		return MHD_YES;
	}
	atomic_fetch_add(&s->requests, 1);
	if (!c || !c->uri)
		return MHD_NO;
	if (atomic_load(&s->stopping))
		return ms_peer_send_error(s, conn, 503, MS_PEER_NOT_AVAILABLE, "stopping");
	if (s->tls.ca && !ms_peer_certified(conn))
		return ms_peer_send_error(
		    s, conn, 403, MS_PEER_NOT_AVAILABLE,
		    "a client certificate signed by the fleet CA is required");
	if (!ms_bearer_ok(
		MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
		s->token))
		return ms_peer_send_error(s, conn, 401, MS_PEER_NOT_AVAILABLE,
					  "a valid bearer token is required");
	struct ms_peer_request req;
	unsigned http;
	const char *why;
	if (ms_peer_request_parse(method, c->uri, &req, &http, &why))
		return ms_peer_send_error(s, conn, http, MS_PEER_NOT_AVAILABLE, why);
	if (s->on_request && s->on_request(s->on_request_ctx, &req)) {
		atomic_fetch_add(&s->dropped, 1);
		return MHD_NO;
	}
	enum ms_peer_status status;
	struct ms_peer_entry *e = ms_peer_acquire(s, &req.build_id, &status);
	if (!e)
		return status == MS_PEER_USE_STORAGE
			   ? ms_peer_send_error(s, conn, 410, status, "uploaded: read the store")
			   : ms_peer_send_error(s, conn, 404, status, "unknown build");
	enum MHD_Result ret = MHD_NO;
	if (ms_peer_uploaded(e)) {
		ret = ms_peer_send_error(s, conn, 410, MS_PEER_USE_STORAGE,
					 "uploaded: read the store");
	} else {
		switch (req.op) {
		case MS_PEER_OP_HEADER:
		case MS_PEER_OP_DATA: {
			/* data too: the packed index is registered before the durable header */
			struct ms_header_ref *durable = ms_peer_durable_of(s, conn, e, &req, &ret);
			if (durable && req.op == MS_PEER_OP_HEADER) {
				ret = ms_peer_serve_header(s, conn, durable);
			} else if (durable) {
				ms_header_ref_unref(durable);
				ret = ms_peer_serve_data(s, conn, e, &req);
			}
			break;
		}
		case MS_PEER_OP_SNAPFILE:
			ret = ms_peer_serve_blob(s, conn, e->build.snapfile, e->build.snapfile_len);
			break;
		case MS_PEER_OP_METADATA:
			ret = ms_peer_serve_blob(s, conn, e->build.metadata, e->build.metadata_len);
			break;
		case MS_PEER_OP_CHECKSUMS:
			ret = ms_peer_serve_checksums(s, conn, e);
			break;
		case MS_PEER_OP_STATUS:
		default:
			ret = ms_peer_serve_status(s, conn, e);
			break;
		}
	}
	ms_peer_release(s, e);
	return ret;
}

static void *ms_peer_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
	(void)cls;
	(void)conn;
	struct ms_peer_conn *c = calloc(1, sizeof(*c));
	if (c && uri && !(c->uri = strndup(uri, MS_PEER_URI_MAX + 1))) {
		free(c);
		c = NULL;
	}
	return c;
}

static void ms_peer_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			      enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct ms_peer_conn *c = *con_cls;
	if (c) {
		free(c->uri);
		free(c);
		*con_cls = NULL;
	}
}

/* "A.B.C.D:PORT" -> a listening socket; -errno. */
static int ms_peer_listen(const char *listen_at, struct sockaddr_in *addr)
{
	const char *colon = strrchr(listen_at, ':');
	char host[INET_ADDRSTRLEN];
	char *end;
	if (!colon || (size_t)(colon - listen_at) >= sizeof(host) || !colon[1])
		return -EINVAL;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || errno || port > 65535 || colon[1] == '-' || colon[1] == '+')
		return -EINVAL;
	memcpy(host, listen_at, (size_t)(colon - listen_at));
	host[colon - listen_at] = '\0';
	*addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &addr->sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	socklen_t len = sizeof(*addr);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)addr, sizeof(*addr)) || listen(fd, 128) ||
	    getsockname(fd, (struct sockaddr *)addr, &len)) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

struct ms_peer_server *ms_peer_server_start(const struct ms_peer_server_config *config, int *err)
{
	if (!config || !config->listen || !config->token || !config->token[0]) {
		*err = -EINVAL;
		return NULL;
	}
	const struct ms_peer_tls_pem *tls = config->tls;
	if (tls && (!tls->ca || !tls->cert || !tls->key)) {
		*err = -EINVAL;
		return NULL;
	}
	struct ms_peer_server *s = calloc(1, sizeof(*s));
	if (!s || !(s->token = strdup(config->token)) ||
	    (tls && (!(s->tls.ca = strdup(tls->ca)) || !(s->tls.cert = strdup(tls->cert)) ||
		     !(s->tls.key = strdup(tls->key))))) {
		if (s) {
			free(s->token);
			ms_peer_tls_pem_fini(&s->tls);
		}
		free(s);
		*err = -ENOMEM;
		return NULL;
	}
	s->fd = -1;
	s->header_wait_ns =
	    config->header_wait_ns > 0 ? config->header_wait_ns : MS_PEER_HEADER_WAIT_DEFAULT;
	s->tombstone_ns =
	    config->tombstone_ns > 0 ? config->tombstone_ns : MS_PEER_TOMBSTONE_DEFAULT;
	s->on_request = config->on_request;
	s->on_request_ctx = config->on_request_ctx;
	atomic_init(&s->damage_checksums, config->test_damage_checksums);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->released, NULL);
	struct sockaddr_in addr;
	if ((s->fd = ms_peer_listen(config->listen, &addr)) < 0) {
		*err = s->fd;
		goto fail;
	}
	s->port = ntohs(addr.sin_port);
	char host[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &addr.sin_addr, host, sizeof(host));
	snprintf(s->address, sizeof(s->address), "%s:%u", host, s->port);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_ITC | MHD_USE_AUTO;
	if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		ms_err(MS_MOD, "peer server: this libmicrohttpd has no TLS support");
		*err = -ENOTSUP;
		goto fail;
	}
	/* with TLS: our certificate and key, and the CA that client certificates must
	 * chain to (HTTPS_MEM_TRUST also makes the server ask for one) */
	struct MHD_OptionItem tls_opts[] = {
	    {tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, s->tls.key},
	    {MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls.cert},
	    {MHD_OPTION_HTTPS_MEM_TRUST, 0, s->tls.ca},
	    {MHD_OPTION_END, 0, NULL},
	};
	s->daemon = MHD_start_daemon(
	    flags | (tls ? MHD_USE_TLS : 0), 0, NULL, NULL, ms_peer_access, s,
	    MHD_OPTION_LISTEN_SOCKET, s->fd, MHD_OPTION_URI_LOG_CALLBACK, ms_peer_uri_log, s,
	    MHD_OPTION_NOTIFY_COMPLETED, ms_peer_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
	    ms_peer_notify, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_ARRAY,
	    tls_opts, MHD_OPTION_END);
	if (!s->daemon) {
		if (tls)
			ms_err(MS_MOD, "peer server: TLS did not start (is the key the "
				       "certificate's, and are both PEM?)");
		*err = tls ? MS_ECORRUPT : -EIO;
		goto fail;
	}
	ms_info(MS_MOD, "peer server on %s (%s)", s->address,
		tls ? "TLS, client certificates checked against the fleet CA" : "plain HTTP");
	return s;
fail:
	ms_peer_server_stop(s);
	return NULL;
}

unsigned ms_peer_server_port(const struct ms_peer_server *s)
{
	return s->port;
}

const char *ms_peer_server_address(const struct ms_peer_server *s)
{
	return s->address;
}

void ms_peer_server_stop(struct ms_peer_server *s)
{
	if (!s)
		return;
	atomic_store(&s->stopping, true);
	if (s->daemon)
		MHD_stop_daemon(s->daemon); /* closes the listening socket and joins handlers */
	else if (s->fd >= 0)
		close(s->fd);
	while (s->entries) {
		struct ms_peer_entry *e = s->entries;
		s->entries = e->next;
		ms_peer_entry_free(e);
	}
	pthread_cond_destroy(&s->released);
	pthread_mutex_destroy(&s->lock);
	free(s->token);
	ms_peer_tls_pem_fini(&s->tls);
	free(s);
}

void ms_peer_server_get_stats(struct ms_peer_server *s, struct ms_peer_server_stats *out)
{
	*out = (struct ms_peer_server_stats){
	    .requests = atomic_load(&s->requests),
	    .available = atomic_load(&s->available),
	    .not_available = atomic_load(&s->not_available),
	    .use_storage = atomic_load(&s->use_storage),
	    .bad_requests = atomic_load(&s->bad_requests),
	    .unauthorized = atomic_load(&s->unauthorized),
	    .uncertified = atomic_load(&s->uncertified),
	    .data_bytes = atomic_load(&s->data_bytes),
	    .dropped = atomic_load(&s->dropped),
	    .connections = atomic_load(&s->connections),
	    .data_zero_copy = atomic_load(&s->data_zero_copy),
	};
}
