/*
 * s3.c - the s3 object-store backend: any S3-compatible server over libcurl, requests
 * signed with our own SigV4 (sigv4.c).
 *
 * Operations:
 *   put      single PUT (payload SHA-256 for buffers, UNSIGNED-PAYLOAD for files) up to
 *            multipart_threshold; above it a multipart upload: POST ?uploads= ->
 *            PUT ?partNumber=N&uploadId=U per part -> POST ?uploadId=U with the
 *            CompleteMultipartUpload XML. Any failure after the create aborts the upload
 *            (DELETE ?uploadId=U), so a failed put leaves nothing visible.
 *   read     ranged GET; 206 (or a 200 whose body we window ourselves); 416 = past the end
 *            (*got = 0, not an error).
 *   size     HEAD (Content-Length). get_meta: HEAD, x-amz-meta-* headers.
 *   remove   HEAD then DELETE: S3 answers 204 to a DELETE of a missing key, and the store
 *            contract wants MS_ENOTFOUND. Documented race: a concurrent remove between our
 *            HEAD and DELETE makes both callers see success.
 *   list     ListObjectsV2 pages with continuation tokens; the XML is scanned for <Contents>,
 *            <Key>, <Size>, <IsTruncated>, <NextContinuationToken> and entities decoded.
 *            A callback's positive return stops the listing with 0, a negative one is
 *            returned (as the fs backend does).
 *
 * Errors: 404 -> MS_ENOTFOUND (NoSuchBucket -> MS_EREMOTE); other 4xx -> MS_EREMOTE with the
 * S3 error code logged, never retried; 5xx, timeouts and connection errors are retried
 * with util/backoff (max_attempts, retry_initial_ns), each attempt re-signed and its body
 * re-sent from the start.
 *
 * Threads: one CURL easy handle per request attempt, so requests never share a handle;
 * they share one CURLSH (connection cache + DNS) whose locks are the mutexes in
 * struct ms_s3. curl_global_init runs once (pthread_once).
 *
 * Invariants:
 *  1. Fields of struct ms_s3 are written only by ms_store_s3_new (and list_page by
 *     ms_store_s3_set_list_page, before the store is shared); afterwards read-only.
 *  2. A request's body source is read only through ms_s3_read_cb/ms_s3_seek_cb, which
 *     start at its offset 0 for every attempt.
 *  3. Nothing in this file logs the secret key or an Authorization header.
 */
#include "storage/s3.h"
#include "storage/sigv4.h"
#include "storage/store.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define MS_S3_MIB		 (1024ULL * 1024ULL)
#define MS_S3_DEFAULT_THRESHOLD	 (64 * MS_S3_MIB)
#define MS_S3_DEFAULT_PART	 (16 * MS_S3_MIB)
#define MS_S3_MIN_PART		 (5 * MS_S3_MIB)
#define MS_S3_MAX_PARTS		 10000
#define MS_S3_DEFAULT_ATTEMPTS	 5
#define MS_S3_DEFAULT_RETRY_NS	 (100 * MS_NSEC_PER_MSEC)
#define MS_S3_MAX_RETRY_NS	 (5 * MS_NSEC_PER_SEC)
#define MS_S3_DEFAULT_TIMEOUT_MS 60000
#define MS_S3_ERR_BODY_MAX	 (64 * 1024)
#define MS_S3_XML_BODY_MAX	 (32 * MS_S3_MIB)
#define MS_S3_ETAG_MAX		 128
#define MS_S3_MAX_HEADERS	 (MS_STORE_META_MAX + 4)

struct ms_s3 {
	struct ms_store base;
	/* Owned strings; config's pointers point at them. Read-only after new (inv. 1). */
	char *endpoint, *bucket, *prefix, *region, *access_key, *secret_key;
	struct ms_s3_config config;
	uint64_t threshold, part_size;
	unsigned max_attempts;
	int64_t retry_initial_ns;
	long timeout_ms;
	unsigned list_page; /* set before sharing (inv. 1) */
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST]; /* guard the share's data, by kind */
};

/* One logical request; the attempt loop resets the outputs before each try. */
struct ms_s3_call {
	const char *method; /* GET HEAD PUT POST DELETE */
	const char *key;    /* NULL: the bucket */
	struct ms_sigv4_param query[4];
	size_t query_count;
	struct ms_sigv4_header headers[MS_S3_MAX_HEADERS];
	size_t header_count;
	/* Request body: buf, else fd at fd_off; body_len bytes. */
	bool has_body;
	const unsigned char *buf;
	int fd;
	uint64_t fd_off;
	uint64_t body_len;
	const char *payload_hash; /* NULL: the empty hash */
	uint64_t body_pos;	  /* read position of the current attempt */
	/* Response sinks. */
	unsigned char *dst; /* GET into the caller's buffer */
	size_t dst_cap;
	uint64_t dst_skip;  /* bytes to drop first if the server ignores Range (200) */
	bool want_body;	    /* collect the body into resp (XML) */
	bool error_in_body; /* a 200 may carry <Error> (CompleteMultipartUpload) */
	long quiet_status;  /* this status is expected: do not log it */
	struct ms_store_meta *meta_out;
	/* Outputs. */
	long status;
	size_t dst_got;
	uint64_t dst_seen; /* body bytes seen at the dst sink, skipped ones included */
	bool stopped_early;
	char *resp;
	size_t resp_len;
	size_t resp_cap;
	int cb_err; /* an error raised inside a callback; not retried */
	char etag[MS_S3_ETAG_MAX];
	int64_t content_length;
	char err_code[64];
};

static pthread_once_t ms_s3_curl_once = PTHREAD_ONCE_INIT;
static CURLcode ms_s3_curl_init_rc = CURLE_FAILED_INIT;

static void ms_s3_curl_init(void)
{
	ms_s3_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const struct ms_store_ops ms_s3_ops;

static struct ms_s3 *ms_s3_from(struct ms_store *store)
{
	return store && store->ops == &ms_s3_ops ? (struct ms_s3 *)store : NULL;
}

/* ---- addressing ---- */

static bool ms_s3_bucket_ok(const char *bucket)
{
	size_t len = bucket ? strlen(bucket) : 0;
	if (len == 0 || len > 63)
		return false;
	for (const char *p = bucket; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return false;
	return true;
}

/* Copies prefix without leading/trailing '/'; "" when none. NULL: -EINVAL/-ENOMEM in *err. */
static char *ms_s3_prefix_norm(const char *prefix, int *err)
{
	*err = 0;
	if (!prefix)
		prefix = "";
	while (*prefix == '/')
		prefix++;
	size_t len = strlen(prefix);
	while (len && prefix[len - 1] == '/')
		len--;
	char *p = strndup(prefix, len);
	if (!p) {
		*err = -ENOMEM;
		return NULL;
	}
	if (*p && !ms_store_key_valid(p)) {
		free(p);
		*err = -EINVAL;
		return NULL;
	}
	return p;
}

int ms_s3_target_build(const struct ms_s3_config *config, const char *key, struct ms_s3_target *out)
{
	memset(out, 0, sizeof(*out));
	const char *ep = config ? config->endpoint : NULL;
	if (!ep || !ms_s3_bucket_ok(config->bucket) || (key && !ms_store_key_valid(key)))
		return -EINVAL;
	const char *scheme;
	if (strncmp(ep, "http://", 7) == 0)
		scheme = "http";
	else if (strncmp(ep, "https://", 8) == 0)
		scheme = "https";
	else
		return -EINVAL;
	const char *host = ep + strlen(scheme) + 3;
	size_t host_len = strcspn(host, "/?#");
	if (host_len == 0 || (host[host_len] && strcmp(host + host_len, "/") != 0))
		return -EINVAL;
	for (size_t i = 0; i < host_len; i++)
		if (host[i] == '@' || (unsigned char)host[i] <= ' ' || host[i] == '\\')
			return -EINVAL;
	if (config->virtual_host && host[0] == '[')
		return -EINVAL; /* no bucket.[::1] */

	int err;
	char *prefix = ms_s3_prefix_norm(config->prefix, &err);
	if (!prefix)
		return err;
	char *path = NULL, *enc = NULL;
	int n;
	const char *sep = *prefix && key ? "/" : "";
	const char *pre = key ? prefix : "";
	if (config->virtual_host)
		n = asprintf(&path, "/%s%s%s", pre, sep, key ? key : "");
	else
		n = asprintf(&path, "/%s%s%s%s%s", config->bucket, key ? "/" : "", pre, sep,
			     key ? key : "");
	free(prefix);
	if (n < 0)
		return -ENOMEM;
	err = ms_sigv4_uri_encode(path, true, &enc);
	if (err)
		goto out_fail;
	if (config->virtual_host)
		n = asprintf(&out->host, "%s.%.*s", config->bucket, (int)host_len, host);
	else
		n = asprintf(&out->host, "%.*s", (int)host_len, host);
	if (n < 0) {
		out->host = NULL;
		err = -ENOMEM;
		goto out_fail;
	}
	if (asprintf(&out->url, "%s://%s%s", scheme, out->host, enc) < 0) {
		out->url = NULL;
		err = -ENOMEM;
		goto out_fail;
	}
	free(enc);
	out->path = path;
	return 0;
out_fail:
	free(enc);
	free(path);
	ms_s3_target_fini(out);
	return err;
}

void ms_s3_target_fini(struct ms_s3_target *target)
{
	free(target->url);
	free(target->host);
	free(target->path);
	memset(target, 0, sizeof(*target));
}

/* ---- minimal XML ---- */

/* Finds <tag>value</tag> in [start, end); value bounds in *vs, *ve. false when absent. */
static bool ms_s3_xml_find(const char *start, const char *end, const char *tag, const char **vs,
			   const char **ve)
{
	char open[80], close[80];
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	size_t olen = strlen(open), clen = strlen(close);
	const char *p = start;
	while (p && (size_t)(end - p) >= olen) {
		p = memmem(p, (size_t)(end - p), open, olen);
		if (!p)
			return false;
		const char *v = p + olen;
		const char *c = memmem(v, (size_t)(end - v), close, clen);
		if (!c)
			return false;
		*vs = v;
		*ve = c;
		return true;
	}
	return false;
}

/* Decodes the five XML entities and numeric references; MS_EPROTO on anything else. */
static int ms_s3_xml_decode(const char *s, const char *e, char **out)
{
	*out = NULL;
	char *d = malloc((size_t)(e - s) + 1);
	if (!d)
		return -ENOMEM;
	size_t n = 0;
	while (s < e) {
		if (*s != '&') {
			d[n++] = *s++;
			continue;
		}
		const char *semi = memchr(s, ';', (size_t)(e - s));
		if (!semi || semi - s > 12)
			goto out_bad;
		size_t len = (size_t)(semi - s - 1);
		const char *name = s + 1;
		unsigned long cp;
		if (len == 3 && !memcmp(name, "amp", 3))
			cp = '&';
		else if (len == 2 && !memcmp(name, "lt", 2))
			cp = '<';
		else if (len == 2 && !memcmp(name, "gt", 2))
			cp = '>';
		else if (len == 4 && !memcmp(name, "quot", 4))
			cp = '"';
		else if (len == 4 && !memcmp(name, "apos", 4))
			cp = '\'';
		else if (len >= 2 && name[0] == '#') {
			char num[12];
			memcpy(num, name + 1, len - 1);
			num[len - 1] = '\0';
			char *endp;
			bool hex = num[0] == 'x' || num[0] == 'X';
			errno = 0;
			cp = strtoul(hex ? num + 1 : num, &endp, hex ? 16 : 10);
			if (errno || *endp || endp == (hex ? num + 1 : num) || cp == 0 ||
			    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
				goto out_bad;
		} else {
			goto out_bad;
		}
		/* UTF-8 encode; the reference (>= 4 bytes) is longer than its encoding. */
		if (cp < 0x80) {
			d[n++] = (char)cp;
		} else if (cp < 0x800) {
			d[n++] = (char)(0xc0 | (cp >> 6));
			d[n++] = (char)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			d[n++] = (char)(0xe0 | (cp >> 12));
			d[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			d[n++] = (char)(0x80 | (cp & 0x3f));
		} else {
			d[n++] = (char)(0xf0 | (cp >> 18));
			d[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
			d[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			d[n++] = (char)(0x80 | (cp & 0x3f));
		}
		s = semi + 1;
	}
	d[n] = '\0';
	if (strlen(d) != n)
		goto out_bad; /* an embedded NUL */
	*out = d;
	return 0;
out_bad:
	free(d);
	return MS_EPROTO;
}

/* ---- libcurl callbacks ---- */

static size_t ms_s3_read_cb(char *ptr, size_t size, size_t nitems, void *userdata)
{
	struct ms_s3_call *c = userdata;
	size_t want = size * nitems;
	uint64_t left = c->body_len - c->body_pos;
	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	if (c->buf) {
		memcpy(ptr, c->buf + c->body_pos, want);
	} else {
		ssize_t n = pread(c->fd, ptr, want, (off_t)(c->fd_off + c->body_pos));
		if (n < 0 && errno == EINTR)
			n = pread(c->fd, ptr, want, (off_t)(c->fd_off + c->body_pos));
		if (n <= 0) {
			c->cb_err = n < 0 ? -errno : -EIO;
			if (n == 0)
				ms_err("s3", "file body ends before its stated size");
			return CURL_READFUNC_ABORT;
		}
		want = (size_t)n;
	}
	c->body_pos += want;
	return want;
}

static int ms_s3_seek_cb(void *userdata, curl_off_t offset, int origin)
{
	struct ms_s3_call *c = userdata;
	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > c->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	c->body_pos = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static bool ms_s3_append(struct ms_s3_call *c, const char *data, size_t len, size_t max)
{
	if (c->resp_len + len > max)
		return false;
	if (c->resp_len + len + 1 > c->resp_cap) {
		size_t cap = c->resp_cap ? c->resp_cap : 4096;
		while (cap < c->resp_len + len + 1)
			cap *= 2;
		char *r = realloc(c->resp, cap);
		if (!r)
			return false;
		c->resp = r;
		c->resp_cap = cap;
	}
	memcpy(c->resp + c->resp_len, data, len);
	c->resp_len += len;
	c->resp[c->resp_len] = '\0';
	return true;
}

struct ms_s3_xfer {
	struct ms_s3_call *call;
	CURL *easy;
};

static size_t ms_s3_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct ms_s3_xfer *x = userdata;
	struct ms_s3_call *c = x->call;
	size_t len = size * nmemb;
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status < 300 && c->dst) {
		/* A 200 answers a ranged GET with the whole object: drop bytes before off. */
		uint64_t skip = status == 200 ? c->dst_skip : 0;
		size_t pos = 0;
		if (c->dst_seen < skip) {
			uint64_t drop = skip - c->dst_seen;
			pos = drop < len ? (size_t)drop : len;
		}
		c->dst_seen += len;
		size_t take = len - pos;
		if (take > c->dst_cap - c->dst_got)
			take = c->dst_cap - c->dst_got;
		memcpy(c->dst + c->dst_got, ptr + pos, take);
		c->dst_got += take;
		if (c->dst_got == c->dst_cap && status == 200 && pos + take < len) {
			c->stopped_early = true; /* the window is full; skip the rest */
			return 0;
		}
		return len;
	}
	bool ok = status >= 200 && status < 300 && !c->want_body && !c->error_in_body
		      ? true /* an unexpected body: drop it */
		      : ms_s3_append(c, ptr, len,
				     status >= 200 && status < 300 ? MS_S3_XML_BODY_MAX
								   : MS_S3_ERR_BODY_MAX);
	if (!ok && status >= 200 && status < 300) {
		c->cb_err = MS_ETOOBIG;
		return 0;
	}
	return len; /* an oversized error body is cut, not fatal */
}

static size_t ms_s3_header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	struct ms_s3_call *c = userdata;
	size_t len = size * nitems;
	if (len >= 5 && memcmp(buffer, "HTTP/", 5) == 0) {
		/* A new response (after a 100 or a retry): forget the last one's headers. */
		c->etag[0] = '\0';
		if (c->meta_out)
			memset(c->meta_out, 0, sizeof(*c->meta_out));
		return len;
	}
	const char *colon = memchr(buffer, ':', len);
	if (!colon)
		return len;
	size_t name_len = (size_t)(colon - buffer);
	const char *v = colon + 1;
	const char *end = buffer + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t vlen = (size_t)(end - v);
	if (name_len == 4 && strncasecmp(buffer, "etag", 4) == 0) {
		if (vlen < sizeof(c->etag)) {
			memcpy(c->etag, v, vlen);
			c->etag[vlen] = '\0';
		}
	} else if (c->meta_out && name_len > 11 && strncasecmp(buffer, "x-amz-meta-", 11) == 0) {
		char key[MS_STORE_META_KEY_MAX], value[MS_STORE_META_VALUE_MAX];
		size_t klen = name_len - 11;
		if (klen < sizeof(key) && vlen < sizeof(value)) {
			for (size_t i = 0; i < klen; i++)
				key[i] = (char)tolower((unsigned char)buffer[11 + i]);
			key[klen] = '\0';
			memcpy(value, v, vlen);
			value[vlen] = '\0';
			if (ms_store_meta_set(c->meta_out, key, value) != 0)
				ms_warn("s3", "ignoring metadata header x-amz-meta-%s", key);
		}
	}
	return len;
}

static int ms_s3_lock_index(curl_lock_data data)
{
	return data >= 0 && data < CURL_LOCK_DATA_LAST ? (int)data : 0;
}

static void ms_s3_share_lock(CURL *handle, curl_lock_data data, curl_lock_access access,
			     void *userptr)
{
	struct ms_s3 *s3 = userptr;
	pthread_mutex_lock(&s3->share_locks[ms_s3_lock_index(data)]);
}

static void ms_s3_share_unlock(CURL *handle, curl_lock_data data, void *userptr)
{
	struct ms_s3 *s3 = userptr;
	pthread_mutex_unlock(&s3->share_locks[ms_s3_lock_index(data)]);
}

/* ---- one request ---- */

static void ms_s3_parse_error(struct ms_s3_call *c)
{
	const char *vs, *ve;
	if (c->resp && ms_s3_xml_find(c->resp, c->resp + c->resp_len, "Code", &vs, &ve)) {
		size_t n = (size_t)(ve - vs);
		if (n >= sizeof(c->err_code))
			n = sizeof(c->err_code) - 1;
		memcpy(c->err_code, vs, n);
		c->err_code[n] = '\0';
	}
}

static int ms_s3_curl_err(CURLcode rc)
{
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/* One attempt. *retry says whether a failure may be retried. */
static int ms_s3_attempt(struct ms_s3 *s3, struct ms_s3_call *c, const struct ms_s3_target *t,
			 const char *query, bool *retry)
{
	*retry = false;
	c->status = 0;
	c->dst_got = 0;
	c->dst_seen = 0;
	c->stopped_early = false;
	c->resp_len = 0;
	if (c->resp)
		c->resp[0] = '\0';
	c->cb_err = 0;
	c->etag[0] = '\0';
	c->content_length = -1;
	c->err_code[0] = '\0';
	c->body_pos = 0;
	if (c->meta_out)
		memset(c->meta_out, 0, sizeof(*c->meta_out));

	char date[MS_SIGV4_DATE_LEN + 1];
	int err = ms_sigv4_format_date(time(NULL), date);
	if (err)
		return err;
	const char *payload_hash = c->payload_hash ? c->payload_hash : MS_SIGV4_EMPTY_HASH;
	struct ms_sigv4_header sign_headers[MS_S3_MAX_HEADERS + 1];
	memcpy(sign_headers, c->headers, c->header_count * sizeof(c->headers[0]));
	sign_headers[c->header_count] =
	    (struct ms_sigv4_header){"x-amz-content-sha256", payload_hash};
	struct ms_sigv4_request req = {
	    .method = c->method,
	    .host = t->host,
	    .path = t->path,
	    .query = c->query,
	    .query_count = c->query_count,
	    .headers = sign_headers,
	    .header_count = c->header_count + 1,
	    .payload_hash = payload_hash,
	    .amz_date = date,
	    .region = s3->region,
	    .service = "s3",
	    .access_key = s3->access_key,
	    .secret_key = s3->secret_key,
	};
	struct ms_sigv4_result sig;
	err = ms_sigv4_sign(&req, &sig);
	if (err)
		return err;

	char *url = NULL, *line = NULL;
	struct curl_slist *hdrs = NULL;
	CURL *easy = NULL;
	if (asprintf(&url, "%s%s%s", t->url, *query ? "?" : "", query) < 0) {
		url = NULL;
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i <= c->header_count + 3; i++) {
		int n;
		if (i < c->header_count + 1)
			n = asprintf(&line, "%s: %s", sign_headers[i].name, sign_headers[i].value);
		else if (i == c->header_count + 1)
			n = asprintf(&line, "x-amz-date: %s", date);
		else if (i == c->header_count + 2)
			n = asprintf(&line, "Authorization: %s", sig.authorization);
		else
			n = asprintf(&line, "Expect:");
		if (n < 0) {
			line = NULL;
			err = -ENOMEM;
			goto out;
		}
		struct curl_slist *next = curl_slist_append(hdrs, line);
		free(line);
		line = NULL;
		if (!next) {
			err = -ENOMEM;
			goto out;
		}
		hdrs = next;
	}
	if (strcmp(c->method, "POST") == 0) {
		struct curl_slist *next = curl_slist_append(hdrs, "Content-Type:");
		if (!next) {
			err = -ENOMEM;
			goto out;
		}
		hdrs = next;
	}

	easy = curl_easy_init();
	if (!easy) {
		err = -ENOMEM;
		goto out;
	}
	struct ms_s3_xfer xfer = {.call = c, .easy = easy};
	curl_easy_setopt(easy, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_SHARE, s3->share);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, s3->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
			 s3->timeout_ms < 10000 ? s3->timeout_ms : 10000L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, ms_s3_write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &xfer);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, ms_s3_header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, c);
	if (strcmp(c->method, "HEAD") == 0) {
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	} else if (strcmp(c->method, "PUT") == 0) {
		curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->body_len);
	} else if (strcmp(c->method, "POST") == 0) {
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
	} else if (strcmp(c->method, "GET") != 0) {
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, c->method);
	}
	if (strcmp(c->method, "PUT") == 0 || strcmp(c->method, "POST") == 0) {
		curl_easy_setopt(easy, CURLOPT_READFUNCTION, ms_s3_read_cb);
		curl_easy_setopt(easy, CURLOPT_READDATA, c);
		curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, ms_s3_seek_cb);
		curl_easy_setopt(easy, CURLOPT_SEEKDATA, c);
	}

	CURLcode rc = curl_easy_perform(easy);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &c->status);
	if (c->cb_err) {
		err = c->cb_err;
		goto out;
	}
	if (rc == CURLE_WRITE_ERROR && c->stopped_early)
		rc = CURLE_OK;
	if (rc != CURLE_OK) {
		err = ms_s3_curl_err(rc);
		*retry = err != -ENOMEM;
		ms_warn("s3", "%s %s: %s", c->method, t->path, curl_easy_strerror(rc));
		goto out;
	}
	curl_off_t cl = -1;
	if (curl_easy_getinfo(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK)
		c->content_length = cl;

	long st = c->status;
	if (st >= 200 && st < 300) {
		if (c->error_in_body && c->resp && strstr(c->resp, "<Error>")) {
			ms_s3_parse_error(c);
			ms_warn("s3", "%s %s: %ld with error %s in the body", c->method, t->path,
				st, c->err_code);
			err = MS_EREMOTE;
			*retry = true;
		}
		goto out;
	}
	ms_s3_parse_error(c);
	if (st == c->quiet_status) {
		err = MS_EREMOTE;
	} else if (st == 404 && strcmp(c->err_code, "NoSuchBucket") != 0) {
		err = MS_ENOTFOUND;
	} else if (st >= 400 && st < 500) {
		ms_err("s3", "%s %s: HTTP %ld %s", c->method, t->path, st,
		       c->err_code[0] ? c->err_code : "(no error code)");
		err = MS_EREMOTE;
	} else {
		ms_warn("s3", "%s %s: HTTP %ld %s", c->method, t->path, st, c->err_code);
		err = MS_EREMOTE;
		*retry = st >= 500 || st < 200;
	}
out:
	if (easy)
		curl_easy_cleanup(easy);
	curl_slist_free_all(hdrs);
	free(url);
	ms_sigv4_result_fini(&sig);
	return err;
}

/* Runs a request with retries. The caller frees c->resp. */
static int ms_s3_call_run(struct ms_s3 *s3, struct ms_s3_call *c)
{
	struct ms_s3_target t;
	int err = ms_s3_target_build(&s3->config, c->key, &t);
	if (err)
		return err;
	char *query = NULL;
	err = ms_sigv4_canonical_query(c->query, c->query_count, &query);
	if (err)
		goto out_target;
	struct ms_backoff backoff;
	ms_backoff_init(&backoff, s3->retry_initial_ns, MS_S3_MAX_RETRY_NS, s3->max_attempts);
	for (;;) {
		bool retry;
		err = ms_s3_attempt(s3, c, &t, query, &retry);
		int64_t delay;
		if (!err || !retry || !ms_backoff_next(&backoff, &delay))
			break;
		ms_info("s3", "%s %s: attempt %u failed (%s), retrying", c->method, t.path,
			backoff.attempt, ms_strerror(err));
		ms_clock_sleep_ns(delay);
	}
	free(query);
out_target:
	ms_s3_target_fini(&t);
	return err;
}

/* ---- metadata headers ---- */

struct ms_s3_meta_names {
	char names[MS_STORE_META_MAX][MS_STORE_META_KEY_MAX + 16];
};

static void ms_s3_add_meta(struct ms_s3_call *c, const struct ms_store_meta *meta,
			   struct ms_s3_meta_names *names)
{
	for (unsigned i = 0; meta && i < meta->count && i < MS_STORE_META_MAX; i++) {
		snprintf(names->names[i], sizeof(names->names[i]), "x-amz-meta-%s",
			 meta->items[i].key);
		c->headers[c->header_count++] =
		    (struct ms_sigv4_header){names->names[i], meta->items[i].value};
	}
}

/* ---- put ---- */

static int ms_s3_put_single(struct ms_s3 *s3, const char *key, const void *buf, int fd,
			    uint64_t size, const struct ms_store_meta *meta)
{
	struct ms_s3_call c = {.method = "PUT", .key = key, .has_body = true, .fd = fd};
	struct ms_s3_meta_names names;
	char hash[MS_SIGV4_HEX_LEN + 1];
	ms_s3_add_meta(&c, meta, &names);
	c.body_len = size;
	if (buf || size == 0) {
		c.buf = buf ? buf : (const unsigned char *)"";
		ms_sigv4_sha256_hex(c.buf, size, hash);
		c.payload_hash = hash;
	} else {
		c.payload_hash = MS_SIGV4_UNSIGNED;
	}
	int err = ms_s3_call_run(s3, &c);
	free(c.resp);
	return err;
}

static int ms_s3_abort_upload(struct ms_s3 *s3, const char *key, const char *upload_id)
{
	struct ms_s3_call c = {.method = "DELETE", .key = key};
	c.query[c.query_count++] = (struct ms_sigv4_param){"uploadId", upload_id};
	int err = ms_s3_call_run(s3, &c);
	free(c.resp);
	if (err)
		ms_err("s3", "abort of multipart upload of %s failed: %s (it stays pending)", key,
		       ms_strerror(err));
	return err;
}

static int ms_s3_put_multipart(struct ms_s3 *s3, const char *key, const unsigned char *buf, int fd,
			       uint64_t size, const struct ms_store_meta *meta)
{
	uint64_t part_size = s3->part_size;
	while ((size + part_size - 1) / part_size > MS_S3_MAX_PARTS)
		part_size *= 2;
	size_t parts = (size_t)((size + part_size - 1) / part_size);

	/* Create. */
	struct ms_s3_call c = {.method = "POST", .key = key, .want_body = true};
	struct ms_s3_meta_names names;
	c.query[c.query_count++] = (struct ms_sigv4_param){"uploads", ""};
	ms_s3_add_meta(&c, meta, &names);
	int err = ms_s3_call_run(s3, &c);
	char *upload_id = NULL;
	const char *vs, *ve;
	if (!err) {
		if (!c.resp || !ms_s3_xml_find(c.resp, c.resp + c.resp_len, "UploadId", &vs, &ve))
			err = MS_EPROTO;
		else
			err = ms_s3_xml_decode(vs, ve, &upload_id);
		if (!err && !*upload_id)
			err = MS_EPROTO;
	}
	free(c.resp);
	if (err) {
		free(upload_id);
		return err;
	}

	char(*etags)[MS_S3_ETAG_MAX] = calloc(parts, sizeof(*etags));
	char *xml = NULL;
	size_t xml_size = 0;
	if (!etags) {
		err = -ENOMEM;
		goto out_abort;
	}
	for (size_t i = 0; i < parts; i++) {
		uint64_t off = (uint64_t)i * part_size;
		uint64_t len = size - off < part_size ? size - off : part_size;
		char number[16], hash[MS_SIGV4_HEX_LEN + 1];
		snprintf(number, sizeof(number), "%zu", i + 1);
		struct ms_s3_call p = {.method = "PUT", .key = key, .has_body = true};
		p.query[p.query_count++] = (struct ms_sigv4_param){"partNumber", number};
		p.query[p.query_count++] = (struct ms_sigv4_param){"uploadId", upload_id};
		p.body_len = len;
		if (buf) {
			p.buf = buf + off;
			ms_sigv4_sha256_hex(p.buf, (size_t)len, hash);
			p.payload_hash = hash;
		} else {
			p.fd = fd;
			p.fd_off = off;
			p.payload_hash = MS_SIGV4_UNSIGNED;
		}
		err = ms_s3_call_run(s3, &p);
		free(p.resp);
		if (!err && !p.etag[0])
			err = MS_EPROTO;
		if (err) {
			ms_err("s3", "part %zu/%zu of %s failed: %s", i + 1, parts, key,
			       ms_strerror(err));
			goto out_abort;
		}
		memcpy(etags[i], p.etag, sizeof(p.etag));
	}

	/* Complete. */
	FILE *f = open_memstream(&xml, &xml_size);
	if (!f) {
		err = -ENOMEM;
		goto out_abort;
	}
	fputs("<CompleteMultipartUpload>", f);
	for (size_t i = 0; i < parts; i++) {
		fprintf(f, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
		for (const char *e = etags[i]; *e; e++) {
			if (*e == '&')
				fputs("&amp;", f);
			else if (*e == '<')
				fputs("&lt;", f);
			else if (*e == '"')
				fputs("&quot;", f);
			else
				fputc(*e, f);
		}
		fputs("</ETag></Part>", f);
	}
	fputs("</CompleteMultipartUpload>", f);
	bool bad = ferror(f);
	if (fclose(f) != 0 || bad || !xml) {
		err = -ENOMEM;
		goto out_abort;
	}
	char hash[MS_SIGV4_HEX_LEN + 1];
	ms_sigv4_sha256_hex(xml, xml_size, hash);
	struct ms_s3_call done = {.method = "POST",
				  .key = key,
				  .has_body = true,
				  .buf = (const unsigned char *)xml,
				  .body_len = xml_size,
				  .payload_hash = hash,
				  .error_in_body = true};
	done.query[done.query_count++] = (struct ms_sigv4_param){"uploadId", upload_id};
	done.headers[done.header_count++] =
	    (struct ms_sigv4_header){"Content-Type", "application/xml"};
	err = ms_s3_call_run(s3, &done);
	free(done.resp);
	if (err)
		goto out_abort;
	free(xml);
	free(etags);
	free(upload_id);
	return 0;

out_abort:
	ms_s3_abort_upload(s3, key, upload_id);
	free(xml);
	free(etags);
	free(upload_id);
	return err;
}

static int ms_s3_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
			 const struct ms_store_meta *meta)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	if (len > s3->threshold)
		return ms_s3_put_multipart(s3, key, buf, -1, len, meta);
	return ms_s3_put_single(s3, key, buf, -1, len, meta);
}

static int ms_s3_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
			  const struct ms_store_meta *meta)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	if (size > s3->threshold)
		return ms_s3_put_multipart(s3, key, NULL, fd, size, meta);
	return ms_s3_put_single(s3, key, NULL, fd, size, meta);
}

/* ---- read, size, meta, remove ---- */

static int ms_s3_head(struct ms_s3 *s3, const char *key, uint64_t *size, struct ms_store_meta *meta)
{
	struct ms_s3_call c = {.method = "HEAD", .key = key, .meta_out = meta};
	int err = ms_s3_call_run(s3, &c);
	free(c.resp);
	if (err)
		return err;
	if (size) {
		if (c.content_length < 0)
			return MS_EPROTO;
		*size = (uint64_t)c.content_length;
	}
	return 0;
}

static int ms_s3_size(struct ms_store *store, const char *key, uint64_t *size)
{
	return ms_s3_head(ms_s3_from(store), key, size, NULL);
}

static int ms_s3_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta)
{
	return ms_s3_head(ms_s3_from(store), key, NULL, meta);
}

static int ms_s3_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
			    size_t len, size_t *got)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	*got = 0;
	if (len == 0) {
		uint64_t size;
		return ms_s3_head(s3, key, &size, NULL);
	}
	uint64_t last = off + (uint64_t)len - 1;
	if (last < off)
		last = UINT64_MAX; /* clamp; the server answers with what exists */
	char range[64];
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, off, last);
	struct ms_s3_call c = {.method = "GET",
			       .key = key,
			       .dst = dst,
			       .dst_cap = len,
			       .dst_skip = off,
			       .quiet_status = 416};
	c.headers[c.header_count++] = (struct ms_sigv4_header){"Range", range};
	int err = ms_s3_call_run(s3, &c);
	free(c.resp);
	if (err == MS_EREMOTE && c.status == 416)
		return 0; /* past the end: nothing there */
	if (err)
		return err;
	if (c.status == 200 && c.dst_seen < off)
		c.dst_got = 0; /* whole object, shorter than off */
	*got = c.dst_got;
	return 0;
}

static int ms_s3_remove(struct ms_store *store, const char *key)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	int err = ms_s3_head(s3, key, NULL, NULL);
	if (err)
		return err;
	struct ms_s3_call c = {.method = "DELETE", .key = key};
	err = ms_s3_call_run(s3, &c);
	free(c.resp);
	return err;
}

/* ---- list ---- */

static char *ms_s3_full_prefix(struct ms_s3 *s3, const char *prefix)
{
	char *full = NULL;
	if (asprintf(&full, "%s%s%s", s3->prefix, *s3->prefix ? "/" : "", prefix) < 0)
		return NULL;
	return full;
}

/* Calls fn for each <Contents> of one page; *stop set to fn's non-zero value. */
static int ms_s3_list_page(struct ms_s3 *s3, const char *xml, size_t xml_len, ms_store_list_fn fn,
			   void *ctx, int *stop, char **token)
{
	const char *end = xml + xml_len;
	const char *p = xml;
	const char *vs, *ve;
	size_t strip = *s3->prefix ? strlen(s3->prefix) + 1 : 0;
	*token = NULL;
	while (ms_s3_xml_find(p, end, "Contents", &vs, &ve)) {
		const char *ks, *ke, *ss, *se;
		if (!ms_s3_xml_find(vs, ve, "Key", &ks, &ke) ||
		    !ms_s3_xml_find(vs, ve, "Size", &ss, &se) || se - ss == 0 || se - ss > 20)
			return MS_EPROTO;
		char num[24];
		memcpy(num, ss, (size_t)(se - ss));
		num[se - ss] = '\0';
		char *endp;
		errno = 0;
		unsigned long long size = strtoull(num, &endp, 10);
		if (errno || *endp || num[0] == '-')
			return MS_EPROTO;
		char *key;
		int err = ms_s3_xml_decode(ks, ke, &key);
		if (err)
			return err;
		if (strip && (strlen(key) < strip || strncmp(key, s3->prefix, strip - 1) != 0 ||
			      key[strip - 1] != '/')) {
			free(key);
			return MS_EPROTO; /* the server listed a key outside our prefix */
		}
		int rc = fn(key + strip, (uint64_t)size, ctx);
		free(key);
		if (rc) {
			*stop = rc;
			return 0;
		}
		p = ve;
	}
	if (ms_s3_xml_find(xml, end, "IsTruncated", &vs, &ve) && ve - vs == 4 &&
	    memcmp(vs, "true", 4) == 0) {
		if (!ms_s3_xml_find(xml, end, "NextContinuationToken", &vs, &ve) || ve == vs)
			return MS_EPROTO;
		return ms_s3_xml_decode(vs, ve, token);
	}
	return 0;
}

static int ms_s3_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn, void *ctx)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	char *full = ms_s3_full_prefix(s3, prefix);
	if (!full)
		return -ENOMEM;
	char page[16];
	snprintf(page, sizeof(page), "%u", s3->list_page);
	char *token = NULL;
	int err = 0, stop = 0;
	do {
		struct ms_s3_call c = {.method = "GET", .key = NULL, .want_body = true};
		c.query[c.query_count++] = (struct ms_sigv4_param){"list-type", "2"};
		c.query[c.query_count++] = (struct ms_sigv4_param){"max-keys", page};
		c.query[c.query_count++] = (struct ms_sigv4_param){"prefix", full};
		if (token)
			c.query[c.query_count++] =
			    (struct ms_sigv4_param){"continuation-token", token};
		err = ms_s3_call_run(s3, &c);
		free(token);
		token = NULL;
		if (!err)
			err = c.resp
				  ? ms_s3_list_page(s3, c.resp, c.resp_len, fn, ctx, &stop, &token)
				  : MS_EPROTO;
		free(c.resp);
	} while (!err && !stop && token);
	free(token);
	free(full);
	if (err)
		return err;
	return stop > 0 ? 0 : stop; /* like fs: a positive stop is success, a negative an error */
}

/* ---- extras (s3.h) ---- */

int ms_store_s3_create_bucket(struct ms_store *store)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	if (!s3)
		return -EINVAL;
	struct ms_s3_call c = {.method = "PUT",
			       .key = NULL,
			       .has_body = true,
			       .buf = (const unsigned char *)"",
			       .quiet_status = 409};
	int err = ms_s3_call_run(s3, &c);
	if (err == MS_EREMOTE && c.status == 409) {
		if (strcmp(c.err_code, "BucketAlreadyOwnedByYou") == 0)
			err = 0;
		else
			ms_err("s3", "create bucket %s: HTTP 409 %s", s3->bucket, c.err_code);
	}
	free(c.resp);
	return err;
}

int ms_store_s3_set_list_page(struct ms_store *store, unsigned max_keys)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	if (!s3 || max_keys == 0 || max_keys > 1000)
		return -EINVAL;
	s3->list_page = max_keys;
	return 0;
}

int ms_store_s3_pending_uploads(struct ms_store *store, const char *prefix, unsigned *count)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	if (!s3 || !prefix || !count)
		return -EINVAL;
	*count = 0;
	char *full = ms_s3_full_prefix(s3, prefix);
	if (!full)
		return -ENOMEM;
	struct ms_s3_call c = {.method = "GET", .key = NULL, .want_body = true};
	c.query[c.query_count++] = (struct ms_sigv4_param){"prefix", full};
	c.query[c.query_count++] = (struct ms_sigv4_param){"uploads", ""};
	int err = ms_s3_call_run(s3, &c);
	if (!err && c.resp) {
		const char *p = c.resp, *end = c.resp + c.resp_len, *vs, *ve;
		while (ms_s3_xml_find(p, end, "Upload", &vs, &ve)) {
			(*count)++;
			p = ve;
		}
	}
	free(c.resp);
	free(full);
	return err;
}

/* ---- credentials ---- */

static char *ms_s3_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

/* Reads [profile] of an AWS shared credentials file; 0 with both set, else -ENOENT. */
static int ms_s3_creds_file(const char *path, const char *profile, char **ak, char **sk)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -ENOENT;
	char line[1024];
	bool in = false;
	while (fgets(line, sizeof(line), f)) {
		char *l = ms_s3_trim(line);
		if (*l == '[') {
			char *close = strchr(l, ']');
			if (close) {
				*close = '\0';
				in = strcmp(ms_s3_trim(l + 1), profile) == 0;
			}
			continue;
		}
		char *eq = strchr(l, '=');
		if (!in || !eq || *l == '#' || *l == ';')
			continue;
		*eq = '\0';
		char *name = ms_s3_trim(l), *value = ms_s3_trim(eq + 1);
		char **slot = strcmp(name, "aws_access_key_id") == 0	   ? ak
			      : strcmp(name, "aws_secret_access_key") == 0 ? sk
									   : NULL;
		if (slot && *value) {
			free(*slot);
			*slot = strdup(value);
		}
	}
	fclose(f);
	if (*ak && *sk)
		return 0;
	free(*ak);
	free(*sk);
	*ak = *sk = NULL;
	return -ENOENT;
}

static bool ms_s3_env_pair(const char *a, const char *s, char **ak, char **sk)
{
	const char *av = getenv(a), *sv = getenv(s);
	if (!av || !*av || !sv || !*sv)
		return false;
	*ak = strdup(av);
	*sk = strdup(sv);
	return true;
}

/* Config, else AWS_* env, else MEMSNAP_S3_* env, else the shared credentials file. */
static int ms_s3_credentials(const struct ms_s3_config *config, char **ak, char **sk)
{
	*ak = *sk = NULL;
	if (config->access_key && *config->access_key && config->secret_key &&
	    *config->secret_key) {
		*ak = strdup(config->access_key);
		*sk = strdup(config->secret_key);
	} else if (!ms_s3_env_pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", ak, sk) &&
		   !ms_s3_env_pair("MEMSNAP_S3_ACCESS_KEY", "MEMSNAP_S3_SECRET_KEY", ak, sk)) {
		const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE");
		const char *profile = getenv("AWS_PROFILE");
		char *path = NULL;
		if (!file || !*file) {
			const char *home = getenv("HOME");
			if (!home || asprintf(&path, "%s/.aws/credentials", home) < 0)
				return -EINVAL;
			file = path;
		}
		int err = ms_s3_creds_file(file, profile && *profile ? profile : "default", ak, sk);
		free(path);
		return err ? -EINVAL : 0;
	}
	if (!*ak || !*sk) {
		free(*ak);
		free(*sk);
		*ak = *sk = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* ---- lifecycle ---- */

static void ms_s3_free(struct ms_store *store)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	if (!s3)
		return;
	if (s3->share)
		curl_share_cleanup(s3->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&s3->share_locks[i]);
	if (s3->secret_key)
		memset(s3->secret_key, 0, strlen(s3->secret_key));
	free(s3->endpoint);
	free(s3->bucket);
	free(s3->prefix);
	free(s3->region);
	free(s3->access_key);
	free(s3->secret_key);
	free(s3);
}

static const struct ms_store_ops ms_s3_ops = {
    .name = "s3",
    .put_buf = ms_s3_put_buf,
    .put_file = ms_s3_put_file,
    .read_range = ms_s3_read_range,
    .size = ms_s3_size,
    .remove = ms_s3_remove,
    .list = ms_s3_list,
    .get_meta = ms_s3_get_meta,
    .free = ms_s3_free,
};

struct ms_store *ms_store_s3_new(const struct ms_s3_config *config, int *err)
{
	*err = -EINVAL;
	if (!config || !config->endpoint || !*config->endpoint || !config->bucket ||
	    !*config->bucket)
		return NULL;
	if (config->part_size && config->part_size < MS_S3_MIN_PART) {
		ms_err("s3", "part_size %" PRIu64 " is below S3's 5 MiB minimum",
		       config->part_size);
		return NULL;
	}
	struct ms_s3_target probe;
	*err = ms_s3_target_build(config, NULL, &probe);
	if (*err) {
		ms_err("s3", "bad endpoint %s or bucket %s", config->endpoint, config->bucket);
		return NULL;
	}
	ms_s3_target_fini(&probe);
	pthread_once(&ms_s3_curl_once, ms_s3_curl_init);
	if (ms_s3_curl_init_rc != CURLE_OK) {
		*err = -ENOMEM;
		return NULL;
	}

	struct ms_s3 *s3 = calloc(1, sizeof(*s3));
	if (!s3) {
		*err = -ENOMEM;
		return NULL;
	}
	s3->base.ops = &ms_s3_ops;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&s3->share_locks[i], NULL);
	*err = ms_s3_credentials(config, &s3->access_key, &s3->secret_key);
	if (*err) {
		ms_err("s3", "no S3 credentials (config, AWS_ACCESS_KEY_ID, MEMSNAP_S3_ACCESS_KEY "
			     "or ~/.aws/credentials)");
		goto out_free;
	}
	*err = -ENOMEM;
	s3->endpoint = strdup(config->endpoint);
	s3->bucket = strdup(config->bucket);
	s3->region = strdup(config->region && *config->region ? config->region : "us-east-1");
	if (!s3->endpoint || !s3->bucket || !s3->region)
		goto out_free;
	s3->prefix = ms_s3_prefix_norm(config->prefix, err);
	if (!s3->prefix)
		goto out_free;
	for (const char *p = s3->region; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-') {
			*err = -EINVAL;
			goto out_free;
		}
	s3->config = (struct ms_s3_config){
	    .endpoint = s3->endpoint,
	    .bucket = s3->bucket,
	    .prefix = s3->prefix,
	    .region = s3->region,
	    .virtual_host = config->virtual_host,
	};
	s3->threshold =
	    config->multipart_threshold ? config->multipart_threshold : MS_S3_DEFAULT_THRESHOLD;
	s3->part_size = config->part_size ? config->part_size : MS_S3_DEFAULT_PART;
	s3->max_attempts = config->max_attempts ? config->max_attempts : MS_S3_DEFAULT_ATTEMPTS;
	s3->retry_initial_ns =
	    config->retry_initial_ns > 0 ? config->retry_initial_ns : MS_S3_DEFAULT_RETRY_NS;
	s3->timeout_ms =
	    config->timeout_ms > 0 ? (long)config->timeout_ms : MS_S3_DEFAULT_TIMEOUT_MS;
	s3->list_page = 1000;

	s3->share = curl_share_init();
	if (!s3->share)
		goto out_free;
	if (curl_share_setopt(s3->share, CURLSHOPT_LOCKFUNC, ms_s3_share_lock) != CURLSHE_OK ||
	    curl_share_setopt(s3->share, CURLSHOPT_UNLOCKFUNC, ms_s3_share_unlock) != CURLSHE_OK ||
	    curl_share_setopt(s3->share, CURLSHOPT_USERDATA, s3) != CURLSHE_OK ||
	    curl_share_setopt(s3->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    curl_share_setopt(s3->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK)
		goto out_free;
	*err = 0;
	return &s3->base;

out_free:
	ms_s3_free(&s3->base);
	return NULL;
}
