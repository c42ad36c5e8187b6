/*
 * s3_http.c - where an S3 request goes and how it is sent: addressing (path-style or
 * virtual-host), one libcurl attempt signed with our own SigV4 (sigv4.c), and the retry loop.
 *
 * Errors: 404 -> MS_ENOTFOUND (NoSuchBucket -> MS_EREMOTE); other 4xx -> MS_EREMOTE with the
 * S3 error code logged, never retried; 5xx, timeouts and connection errors are retried
 * with util/backoff (max_attempts, retry_initial_ns), each attempt re-signed and its body
 * re-sent from the start (s3_int.h invariant 2).
 *
 * Threads: each request attempt takes an easy handle from the store's pool
 * (storage/curlpool.h) and gives it back after, so a handle, and the connections it keeps
 * open for the next request, is used by one thread at a time. The handles share only the
 * DNS cache (one CURLSH, locked by the mutexes in struct ms_s3): libcurl's shared
 * connection cache is not thread-safe (curl#4915; 7.88 here), and sharing it across our
 * fetch threads could corrupt the heap.
 * curl_global_init runs once (pthread_once).
 */
#include "storage/s3_int.h"
#include "storage/s3_xml.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MS_S3_MAX_RETRY_NS (5 * MS_NSEC_PER_SEC)
#define MS_S3_ERR_BODY_MAX (64 * 1024)
#define MS_S3_XML_BODY_MAX (32 * MS_S3_MIB)

static pthread_once_t ms_s3_curl_once = PTHREAD_ONCE_INIT;
static CURLcode ms_s3_curl_init_rc = CURLE_FAILED_INIT;

static void ms_s3_curl_init(void)
{
	ms_s3_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int ms_s3_http_init(void)
{
	pthread_once(&ms_s3_curl_once, ms_s3_curl_init);
	return ms_s3_curl_init_rc == CURLE_OK ? 0 : -ENOMEM;
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

char *ms_s3_prefix_norm(const char *prefix, int *err)
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

int ms_s3_http_share_new(struct ms_s3 *s3)
{
	s3->share = curl_share_init();
	if (!s3->share)
		return -ENOMEM;
	if (curl_share_setopt(s3->share, CURLSHOPT_LOCKFUNC, ms_s3_share_lock) != CURLSHE_OK ||
	    curl_share_setopt(s3->share, CURLSHOPT_UNLOCKFUNC, ms_s3_share_unlock) != CURLSHE_OK ||
	    curl_share_setopt(s3->share, CURLSHOPT_USERDATA, s3) != CURLSHE_OK ||
	    curl_share_setopt(s3->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)
		return -ENOMEM;
	return 0;
}

/* ---- one request ---- */

static void ms_s3_parse_error(struct ms_s3_call *c)
{
	ms_s3_xml_error_code(c->resp, c->resp_len, c->err_code, sizeof(c->err_code));
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
	struct ms_s3_key *key = malloc(sizeof(*key));
	if (!key)
		return -ENOMEM;
	if ((err = ms_s3_provider_get(&s3->creds, key))) {
		free(key);
		return err;
	}
	const char *payload_hash = c->payload_hash ? c->payload_hash : MS_SIGV4_EMPTY_HASH;
	struct ms_sigv4_header sign_headers[MS_S3_MAX_HEADERS + 2];
	memcpy(sign_headers, c->headers, c->header_count * sizeof(c->headers[0]));
	size_t nsigned = c->header_count;
	sign_headers[nsigned++] = (struct ms_sigv4_header){"x-amz-content-sha256", payload_hash};
	if (key->token[0]) /* temporary credentials: the token is signed and sent */
		sign_headers[nsigned++] =
		    (struct ms_sigv4_header){"x-amz-security-token", key->token};
	struct ms_sigv4_request req = {
	    .method = c->method,
	    .host = t->host,
	    .path = t->path,
	    .query = c->query,
	    .query_count = c->query_count,
	    .headers = sign_headers,
	    .header_count = nsigned,
	    .payload_hash = payload_hash,
	    .amz_date = date,
	    .region = s3->region,
	    .service = "s3",
	    .access_key = key->access_key,
	    .secret_key = key->secret_key,
	};
	struct ms_sigv4_result sig;
	err = ms_sigv4_sign(&req, &sig);
	if (err) {
		memset(key, 0, sizeof(*key));
		free(key);
		return err;
	}

	char *url = NULL, *line = NULL;
	struct curl_slist *hdrs = NULL;
	CURL *easy = NULL;
	if (asprintf(&url, "%s%s%s", t->url, *query ? "?" : "", query) < 0) {
		url = NULL;
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i <= nsigned + 2; i++) {
		int n;
		if (i < nsigned)
			n = asprintf(&line, "%s: %s", sign_headers[i].name, sign_headers[i].value);
		else if (i == nsigned)
			n = asprintf(&line, "x-amz-date: %s", date);
		else if (i == nsigned + 1)
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

	easy = ms_curl_pool_take(&s3->pool);
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
	ms_curl_pool_give(&s3->pool, easy, true); /* curl drops a broken connection itself */
	curl_slist_free_all(hdrs);
	free(url);
	ms_sigv4_result_fini(&sig);
	memset(key, 0, sizeof(*key));
	free(key);
	return err;
}

int ms_s3_call_run(struct ms_s3 *s3, struct ms_s3_call *c)
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
