/*
 * s3.c - the s3 object-store backend: any S3-compatible server. This file is the store
 * (vtable, put, read, list, extras, lifecycle); requests are sent by s3_http.c, XML read and
 * written by s3_xml.c, credentials found by s3_creds.c (the map is in s3_int.h).
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
 *   list     ListObjectsV2 pages with continuation tokens (s3_xml.c reads each page).
 *            A callback's positive return stops the listing with 0, a negative one is
 *            returned (as the fs backend does).
 *
 * Invariants: those of s3_int.h.
 */
#include "storage/s3_int.h"
#include "storage/s3_xml.h"
#include "storage/verified.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS_S3_DEFAULT_THRESHOLD	 (64 * MS_S3_MIB)
#define MS_S3_DEFAULT_PART	 (16 * MS_S3_MIB)
#define MS_S3_MIN_PART		 (5 * MS_S3_MIB)
#define MS_S3_MAX_PARTS		 10000
#define MS_S3_DEFAULT_ATTEMPTS	 5
#define MS_S3_DEFAULT_RETRY_NS	 (100 * MS_NSEC_PER_MSEC)
#define MS_S3_DEFAULT_TIMEOUT_MS 60000

static const struct ms_store_ops ms_s3_ops;

static struct ms_s3 *ms_s3_from(struct ms_store *store)
{
	store = ms_store_unverified(store); /* ms_store_open wraps every store in a check */
	return store && store->ops == &ms_s3_ops ? (struct ms_s3 *)store : NULL;
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
	if (!err)
		err = ms_s3_xml_upload_id(c.resp, c.resp_len, &upload_id);
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
	err = ms_s3_xml_complete_upload(etags, parts, &xml, &xml_size);
	if (err)
		goto out_abort;
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
			err = c.resp ? ms_s3_xml_list_page(c.resp, c.resp_len, s3->prefix, fn, ctx,
							   &stop, &token)
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
	if (!err && c.resp)
		*count = ms_s3_xml_count(c.resp, c.resp_len, "Upload");
	free(c.resp);
	free(full);
	return err;
}

/* ---- incomplete multipart uploads (a writer that died mid-put) ---- */

struct ms_s3_upload {
	char *key, *id;
	int64_t initiated_ms;
};

struct ms_s3_uploads {
	struct ms_s3_upload *items;
	size_t count, cap;
};

static int ms_s3_upload_add(const char *key, const char *upload_id, int64_t initiated_ms, void *ctx)
{
	struct ms_s3_uploads *u = ctx;
	if (u->count == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 16;
		void *grown = realloc(u->items, cap * sizeof(*u->items));
		if (!grown)
			return -ENOMEM;
		u->items = grown;
		u->cap = cap;
	}
	struct ms_s3_upload *it = &u->items[u->count];
	if (!(it->key = strdup(key)) || !(it->id = strdup(upload_id))) {
		free(it->key);
		return -ENOMEM;
	}
	it->initiated_ms = initiated_ms;
	u->count++;
	return 0;
}

/* Every pending upload under prefix (ListMultipartUploads, all pages) into u. */
static int ms_s3_list_uploads(struct ms_s3 *s3, const char *prefix, struct ms_s3_uploads *u)
{
	char *full = ms_s3_full_prefix(s3, prefix);
	if (!full)
		return -ENOMEM;
	char *key_marker = NULL, *id_marker = NULL;
	int err = 0;
	do {
		struct ms_s3_call c = {.method = "GET", .key = NULL, .want_body = true};
		if (key_marker) {
			c.query[c.query_count++] =
			    (struct ms_sigv4_param){"key-marker", key_marker};
			c.query[c.query_count++] =
			    (struct ms_sigv4_param){"upload-id-marker", id_marker};
		}
		c.query[c.query_count++] = (struct ms_sigv4_param){"prefix", full};
		c.query[c.query_count++] = (struct ms_sigv4_param){"uploads", ""};
		err = ms_s3_call_run(s3, &c);
		free(key_marker);
		free(id_marker);
		key_marker = id_marker = NULL;
		if (!err && c.resp)
			err = ms_s3_xml_uploads_page(c.resp, c.resp_len, s3->prefix,
						     ms_s3_upload_add, u, &key_marker, &id_marker);
		free(c.resp);
	} while (!err && key_marker);
	free(key_marker);
	free(id_marker);
	free(full);
	return err;
}

static int ms_s3_remove_incomplete(struct ms_store *store, const char *prefix,
				   int64_t older_than_ms, bool dry_run, size_t *count)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	struct ms_s3_uploads u = {0};
	int err = ms_s3_list_uploads(s3, prefix, &u);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	for (size_t i = 0; i < u.count; i++) {
		struct ms_s3_upload *it = &u.items[i];
		/* an upload whose start is unknown counts as old only when any age does */
		bool old = it->initiated_ms ? now_ms - it->initiated_ms >= older_than_ms
					    : older_than_ms == 0;
		if (!err && old && (dry_run || !(err = ms_s3_abort_upload(s3, it->key, it->id)))) {
			ms_info("s3", "%s the unfinished multipart upload %s of %s",
				dry_run ? "would abort" : "aborted", it->id, it->key);
			(*count)++;
		}
		free(it->key);
		free(it->id);
	}
	free(u.items);
	return err;
}

/* ---- lifecycle ---- */

static void ms_s3_free(struct ms_store *store)
{
	struct ms_s3 *s3 = ms_s3_from(store);
	if (!s3)
		return;
	ms_curl_pool_fini(&s3->pool); /* the handles reference the share */
	if (s3->share)
		curl_share_cleanup(s3->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&s3->share_locks[i]);
	if (s3->creds_init)
		ms_s3_provider_fini(&s3->creds);
	free(s3->endpoint);
	free(s3->bucket);
	free(s3->prefix);
	free(s3->region);
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
    .remove_incomplete = ms_s3_remove_incomplete,
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
	*err = ms_s3_http_init();
	if (*err)
		return NULL;

	struct ms_s3 *s3 = calloc(1, sizeof(*s3));
	if (!s3) {
		*err = -ENOMEM;
		return NULL;
	}
	s3->base.ops = &ms_s3_ops;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&s3->share_locks[i], NULL);
	ms_curl_pool_init(&s3->pool, MS_CURL_POOL_MAX);
	*err = ms_s3_provider_init(&s3->creds, config);
	s3->creds_init = true;
	if (*err) {
		if (*err == -EINVAL)
			ms_err("s3", "no S3 credentials (config, AWS_ACCESS_KEY_ID, "
				     "MEMSNAP_S3_ACCESS_KEY, ~/.aws/credentials, the config file, "
				     "web identity or the instance metadata service)");
		goto out_free;
	}
	*err = -ENOMEM;
	s3->endpoint = strdup(config->endpoint);
	s3->bucket = strdup(config->bucket);
	s3->region = config->region && *config->region ? strdup(config->region)
						       : ms_s3_config_region(config);
	if (!s3->region)
		s3->region = strdup("us-east-1");
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

	*err = ms_s3_http_share_new(s3);
	if (*err)
		goto out_free;
	return &s3->base;

out_free:
	ms_s3_free(&s3->base);
	return NULL;
}
