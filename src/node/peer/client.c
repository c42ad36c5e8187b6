/*
 * client.c - the peer HTTP client (libcurl) and the plain peer source
 * (client.h). Each request takes a pooled easy handle (keep-alive to the
 * peer), retries transport failures with backoff, and checks every answer:
 * a status header that names one of the three statuses, and for data the
 * exact length asked. Whatever a peer sends is input from outside.
 */
#include "node/peer/client.h"
#include "header/serialize.h"
#include "storage/curlpool.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MS_MOD		   "peer"
#define MS_PEER_POOL	   16 /* idle easy handles kept */
#define MS_PEER_HEADER_MAX (256u << 20)
#define MS_PEER_JSON_MAX   (64u << 10)
/* curl's receive buffer (its default is 16 KiB: 64 recv calls and callbacks a MiB) */
#define MS_PEER_RECV_BUFFER (256u << 10)

struct ms_peer_client {
	atomic_uint refs;
	char *address, *auth;	    /* auth: "Authorization: Bearer TOKEN" */
	struct ms_peer_tls_pem tls; /* all NULL: plain HTTP */
	int64_t connect_timeout_ms, timeout_ms, retry_initial_ns;
	unsigned attempts;
	uint32_t piece;
	struct ms_curl_pool pool; /* keep-alive handles; its own lock */
};

static pthread_once_t ms_peer_curl_once = PTHREAD_ONCE_INIT;
static CURLcode ms_peer_curl_rc;

static void ms_peer_curl_init(void)
{
	ms_peer_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct ms_peer_client *ms_peer_client_new(const struct ms_peer_client_config *config, int *err)
{
	if (!config || !config->address || !config->address[0] || !config->token ||
	    !config->token[0] || strpbrk(config->token, "\r\n") ||
	    (config->piece &&
	     (config->piece % MS_PEER_ALIGN || config->piece > MS_PEER_RANGE_MAX))) {
		*err = -EINVAL;
		return NULL;
	}
	pthread_once(&ms_peer_curl_once, ms_peer_curl_init);
	if (ms_peer_curl_rc != CURLE_OK) {
		*err = -EIO;
		return NULL;
	}
	const struct ms_peer_tls_pem *tls = config->tls;
	if (tls && (!tls->ca || !tls->cert || !tls->key)) {
		*err = -EINVAL;
		return NULL;
	}
	struct ms_peer_client *c = calloc(1, sizeof(*c));
	size_t auth_len = strlen(config->token) + 32;
	if (!c || !(c->address = strdup(config->address)) || !(c->auth = malloc(auth_len)) ||
	    (tls && (!(c->tls.ca = strdup(tls->ca)) || !(c->tls.cert = strdup(tls->cert)) ||
		     !(c->tls.key = strdup(tls->key))))) {
		if (c) {
			free(c->address);
			free(c->auth);
			ms_peer_tls_pem_fini(&c->tls);
		}
		free(c);
		*err = -ENOMEM;
		return NULL;
	}
	snprintf(c->auth, auth_len, "Authorization: Bearer %s", config->token);
	atomic_init(&c->refs, 1);
	c->connect_timeout_ms = config->connect_timeout_ms > 0 ? config->connect_timeout_ms : 1000;
	c->timeout_ms = config->timeout_ms > 0 ? config->timeout_ms : 40000;
	c->attempts = config->attempts ? config->attempts : 3;
	c->retry_initial_ns =
	    config->retry_initial_ns > 0 ? config->retry_initial_ns : 50 * MS_NSEC_PER_MSEC;
	c->piece = config->piece ? config->piece : MS_PEER_PIECE_DEFAULT;
	ms_curl_pool_init(&c->pool, MS_PEER_POOL);
	return c;
}

struct ms_peer_client *ms_peer_client_ref(struct ms_peer_client *c)
{
	atomic_fetch_add(&c->refs, 1);
	return c;
}

void ms_peer_client_unref(struct ms_peer_client *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	ms_curl_pool_fini(&c->pool);
	free(c->address);
	free(c->auth);
	ms_peer_tls_pem_fini(&c->tls);
	free(c);
}

const char *ms_peer_client_address(const struct ms_peer_client *c)
{
	return c->address;
}

void ms_peer_answer_fini(struct ms_peer_answer *a)
{
	free(a->body);
	a->body = NULL;
	a->len = 0;
}

/*
 * One transfer's state: the answer being filled and its caps. direct: a data
 * request's destination (req->length bytes), filled in place once the status
 * header said available - no body buffer, no second copy; a refusal's JSON
 * still goes to a malloc'd body.
 */
struct ms_peer_xfer {
	struct ms_peer_answer *answer;
	size_t cap; /* the body may not be longer */
	size_t alloc;
	void *direct;
	size_t direct_len;
	bool too_long, status_seen, status_bad;
};

static size_t ms_peer_on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct ms_peer_xfer *x = ctx;
	struct ms_peer_answer *a = x->answer;
	size_t n = size * nmemb;
	if (x->direct && x->status_seen && !x->status_bad && a->status == MS_PEER_AVAILABLE) {
		if (n > x->direct_len - a->len) {
			x->too_long = true;
			return 0;
		}
		memcpy((char *)x->direct + a->len, data, n);
		a->len += n;
		return n;
	}
	if (n > x->cap - a->len) {
		x->too_long = true;
		return 0; /* aborts the transfer */
	}
	if (a->len + n > x->alloc) {
		size_t want = x->alloc ? x->alloc : 64 << 10;
		while (want < a->len + n)
			want *= 2;
		if (want > x->cap)
			want = x->cap;
		void *grown = realloc(a->body, want);
		if (!grown)
			return 0;
		a->body = grown;
		x->alloc = want;
	}
	memcpy((char *)a->body + a->len, data, n);
	a->len += n;
	return n;
}

/* "Name: value\r\n" -> value (trimmed) when name matches. */
static bool ms_peer_header_value(const char *line, size_t len, const char *name, char *value,
				 size_t value_size)
{
	size_t name_len = strlen(name);
	if (len <= name_len || line[name_len] != ':' || strncasecmp(line, name, name_len) != 0)
		return false;
	const char *v = line + name_len + 1;
	const char *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t n = (size_t)(end - v);
	if (n >= value_size)
		n = value_size - 1;
	memcpy(value, v, n);
	value[n] = '\0';
	return true;
}

static size_t ms_peer_on_header(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct ms_peer_xfer *x = ctx;
	struct ms_peer_answer *a = x->answer;
	size_t n = size * nmemb;
	char value[64];
	if (ms_peer_header_value(data, n, MS_PEER_STATUS_HDR, value, sizeof(value))) {
		x->status_seen = true;
		x->status_bad = ms_peer_status_parse(value, &a->status) != 0;
	} else if (ms_peer_header_value(data, n, MS_PEER_INCOMPLETE_HDR, value, sizeof(value))) {
		a->incomplete = strcmp(value, "1") == 0;
	} else if (ms_peer_header_value(data, n, MS_PEER_SIZE_HDR, value, sizeof(value))) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(value, &end, 10);
		a->has_data_size = value[0] >= '0' && value[0] <= '9' && !*end && !errno;
		a->data_size = a->has_data_size ? v : 0;
	}
	return n;
}

static int ms_peer_curl_err(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/*
 * TLS (tls.h): our certificate and key, and only the fleet CA as trust: no CA
 * bundle, no CA directory of the system. The server must present a certificate
 * the CA signed for the address dialled (curl's peer and host checks, on by
 * default, are kept on). The PEM bytes live as long as the client.
 */
static void ms_peer_tls_setopt(struct ms_peer_client *c, CURL *h)
{
	struct curl_blob ca = {c->tls.ca, strlen(c->tls.ca), CURL_BLOB_NOCOPY},
			 cert = {c->tls.cert, strlen(c->tls.cert), CURL_BLOB_NOCOPY},
			 key = {c->tls.key, strlen(c->tls.key), CURL_BLOB_NOCOPY};
	curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
	curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cert);
	curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
	curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key);
	curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
}

/*
 * One attempt. 0 with a checked answer, or an error (the answer is emptied).
 * direct (data requests only, may be NULL): where an available answer's bytes go
 * (a->body stays NULL); a failed attempt may have written part of it.
 */
static int ms_peer_once(struct ms_peer_client *c, const char *url,
			const struct ms_peer_request *req, struct ms_peer_answer *a, void *direct)
{
	*a = (struct ms_peer_answer){.status = MS_PEER_NOT_AVAILABLE};
	struct ms_peer_xfer x = {.answer = a};
	if (direct && req->op == MS_PEER_OP_DATA && !req->head) {
		x.direct = direct;
		x.direct_len = (size_t)req->length;
	}
	switch (req->op) {
	case MS_PEER_OP_DATA: /* the bytes asked, or a short JSON refusal */
		x.cap = req->length > MS_PEER_JSON_MAX ? (size_t)req->length : MS_PEER_JSON_MAX;
		break;
	case MS_PEER_OP_STATUS:
		x.cap = MS_PEER_JSON_MAX;
		break;
	default:
		x.cap = MS_PEER_HEADER_MAX;
		break;
	}
	CURL *h = ms_curl_pool_take(&c->pool);
	if (!h)
		return -ENOMEM;
	struct curl_slist *headers = curl_slist_append(NULL, c->auth);
	if (!headers) {
		ms_curl_pool_give(&c->pool, h, true);
		return -ENOMEM;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->tls.ca ? "https" : "http");
	if (c->tls.ca)
		ms_peer_tls_setopt(c, h);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ms_peer_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, ms_peer_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)MS_PEER_RECV_BUFFER);
	char tls_why[CURL_ERROR_SIZE] = "";
	if (c->tls.ca)
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, tls_why);
	CURLcode rc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL); /* tls_why ends here */
	if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR ||
	    rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CACERT_BADFILE)
		ms_warn(MS_MOD, "peer %s: TLS: %s", c->address,
			tls_why[0] ? tls_why : curl_easy_strerror(rc));
	long http = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
	curl_slist_free_all(headers);
	ms_curl_pool_give(&c->pool, h, rc == CURLE_OK); /* a failed one may be suspect */
	int err = 0;
	a->http = (unsigned)http;
	if (x.too_long)
		err = MS_EPROTO;
	else if (rc != CURLE_OK)
		err = ms_peer_curl_err(rc);
	else if (!x.status_seen || x.status_bad)
		err = MS_EPROTO; /* not a peer server, or a broken one */
	else if (a->status == MS_PEER_AVAILABLE && http != 200)
		err = MS_EPROTO;
	else if (a->status == MS_PEER_AVAILABLE && req->op == MS_PEER_OP_DATA &&
		 a->len != req->length)
		err = MS_EPROTO;
	if (err)
		ms_peer_answer_fini(a);
	return err;
}

static int ms_peer_get_into(struct ms_peer_client *c, const struct ms_peer_request *req,
			    struct ms_peer_answer *answer, void *direct)
{
	char path[MS_PEER_URI_MAX + 1], url[MS_PEER_URI_MAX + 160];
	int err = ms_peer_request_uri(req, path, sizeof(path));
	if (err)
		return err;
	if (snprintf(url, sizeof(url), "%s://%s%s", c->tls.ca ? "https" : "http", c->address,
		     path) >= (int)sizeof(url))
		return -ENAMETOOLONG;
	struct ms_backoff backoff;
	ms_backoff_init(&backoff, c->retry_initial_ns, 10 * c->retry_initial_ns, c->attempts);
	for (;;) {
		err = ms_peer_once(c, url, req, answer, direct);
		int64_t delay;
		if (!err || err == -ENOMEM || !ms_backoff_next(&backoff, &delay))
			break;
		ms_debug(MS_MOD, "peer %s: %s, trying again", c->address, ms_strerror(err));
		ms_clock_sleep_ns(delay);
	}
	if (err)
		ms_warn(MS_MOD, "peer %s unreachable: %s", c->address, ms_strerror(err));
	return err;
}

int ms_peer_client_get(struct ms_peer_client *c, const struct ms_peer_request *req,
		       struct ms_peer_answer *answer)
{
	return ms_peer_get_into(c, req, answer, NULL);
}

int ms_peer_client_header(struct ms_peer_client *c, const ms_uuid *build_id, enum ms_peer_file file,
			  enum ms_peer_status *status, struct ms_header **out)
{
	struct ms_peer_request req = {.op = MS_PEER_OP_HEADER, .build_id = *build_id, .file = file};
	struct ms_peer_answer a;
	int err = ms_peer_client_get(c, &req, &a);
	if (err)
		return err;
	*status = a.status;
	if (a.status == MS_PEER_AVAILABLE) {
		struct ms_header *h;
		if ((err = ms_header_deserialize(a.body, a.len, &h)) == 0) {
			/* the response header says so even for a version without the flag */
			h->incomplete = h->incomplete || a.incomplete;
			*out = h;
		}
	}
	ms_peer_answer_fini(&a);
	return err;
}

int ms_peer_client_status(struct ms_peer_client *c, const ms_uuid *build_id, enum ms_peer_file file,
			  enum ms_peer_status *status, uint64_t *data_size)
{
	struct ms_peer_request req = {.op = MS_PEER_OP_STATUS, .build_id = *build_id};
	struct ms_peer_answer a;
	int err = ms_peer_client_get(c, &req, &a);
	if (err)
		return err;
	*status = a.status;
	if (a.status == MS_PEER_AVAILABLE) {
		cJSON *o = cJSON_ParseWithLength(a.body ? a.body : "", a.len);
		const cJSON *size = cJSON_GetObjectItemCaseSensitive(
		    o, file == MS_PEER_FILE_ROOTFS ? "rootfs_size" : "memfile_size");
		if (cJSON_IsNumber(size) && size->valuedouble >= 0 &&
		    size->valuedouble <= 9007199254740992.0)
			*data_size = (uint64_t)size->valuedouble;
		else
			*status = MS_PEER_NOT_AVAILABLE; /* the peer does not hold this file */
		cJSON_Delete(o);
	}
	ms_peer_answer_fini(&a);
	return 0;
}

int ms_peer_client_read(struct ms_peer_client *c, const ms_uuid *build_id, enum ms_peer_file file,
			uint64_t data_size, void *dst, uint64_t off, size_t len,
			enum ms_peer_status *status)
{
	if (off > data_size || len > data_size - off)
		return -ERANGE;
	uint64_t start = off - off % MS_PEER_ALIGN;
	uint64_t end = off + len;
	*status = MS_PEER_AVAILABLE;
	while (start < end) {
		uint64_t piece_end = start + c->piece;
		if (piece_end > end) /* the last piece: up to a block boundary, or the end */
			piece_end = (end + MS_PEER_ALIGN - 1) / MS_PEER_ALIGN * MS_PEER_ALIGN;
		if (piece_end > data_size)
			piece_end = data_size;
		struct ms_peer_request req = {.op = MS_PEER_OP_DATA,
					      .build_id = *build_id,
					      .file = file,
					      .offset = start,
					      .length = piece_end - start};
		/* a piece wholly inside [off, end) is received in place */
		bool inside = start >= off && piece_end <= end;
		struct ms_peer_answer a;
		int err =
		    ms_peer_get_into(c, &req, &a, inside ? (char *)dst + (start - off) : NULL);
		if (err)
			return err;
		*status = a.status;
		if (a.status != MS_PEER_AVAILABLE) {
			ms_peer_answer_fini(&a);
			return 0;
		}
		uint64_t from = start > off ? start : off;
		uint64_t to = piece_end < end ? piece_end : end;
		if (!inside)
			memcpy((char *)dst + (from - off), (char *)a.body + (from - start),
			       to - from);
		ms_peer_answer_fini(&a);
		start = piece_end;
	}
	return 0;
}

/* ---- the plain peer source ---- */

struct ms_peer_source {
	struct ms_source base;
	struct ms_peer_client *client;
	ms_uuid build_id;
	enum ms_peer_file file;
	_Atomic int last_status;
};

static int ms_peer_source_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	struct ms_peer_source *ps = (struct ms_peer_source *)src;
	enum ms_peer_status status;
	int err = ms_peer_client_read(ps->client, &ps->build_id, ps->file, src->size, dst, off, len,
				      &status);
	if (err)
		return err;
	atomic_store(&ps->last_status, (int)status);
	return status == MS_PEER_AVAILABLE ? 0 : MS_ENOTFOUND;
}

static bool ms_peer_source_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	return false; /* every byte is a request away */
}

static uint64_t ms_peer_source_disk_bytes(struct ms_source *src)
{
	return 0;
}

static void ms_peer_source_free(struct ms_source *src)
{
	struct ms_peer_source *ps = (struct ms_peer_source *)src;
	ms_peer_client_unref(ps->client);
	free(ps);
}

static const struct ms_source_ops ms_peer_source_ops = {
    .name = "peer",
    .read = ms_peer_source_read,
    .is_cached = ms_peer_source_is_cached,
    .disk_bytes = ms_peer_source_disk_bytes,
    .free = ms_peer_source_free,
};

struct ms_source *ms_peer_source_new(struct ms_peer_client *client, const ms_uuid *build_id,
				     enum ms_peer_file file, uint64_t size)
{
	struct ms_peer_source *ps = calloc(1, sizeof(*ps));
	if (!ps)
		return NULL;
	ms_source_init(&ps->base, &ms_peer_source_ops, size);
	ps->client = ms_peer_client_ref(client);
	ps->build_id = *build_id;
	ps->file = file;
	atomic_init(&ps->last_status, MS_PEER_AVAILABLE);
	return &ps->base;
}

enum ms_peer_status ms_peer_source_status(struct ms_source *src)
{
	return (enum ms_peer_status)atomic_load(&((struct ms_peer_source *)src)->last_status);
}
