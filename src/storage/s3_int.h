/*
 * s3_int.h - private header of the s3 backend family (s3.c, s3_http.c, s3_creds.c).
 *
 *   s3.c        the store: vtable, put (single and multipart), read, list, extras, lifecycle
 *   s3_http.c   addressing (endpoint/bucket/prefix -> URL) and one request with its retries
 *   s3_xml.c    the XML S3 answers with, and the one body we send (s3_xml.h)
 *   s3_creds.c  the access key pair (and session token) from the config and AWS's files
 *   s3_provider.c  the signing key: static, or STS web identity / IMDSv2, refreshed
 *
 * Invariants:
 *  1. Fields of struct ms_s3 are written only by ms_store_s3_new (and list_page by
 *     ms_store_s3_set_list_page, before the store is shared); afterwards read-only.
 *  2. A request's body source is read only through s3_http.c's read/seek callbacks, which
 *     start at its offset 0 for every attempt.
 *  3. Nothing in the backend logs the secret key or an Authorization header.
 */
#ifndef MS_STORAGE_S3_INT_H
#define MS_STORAGE_S3_INT_H

#include "storage/curlpool.h"
#include "storage/s3.h"
#include "storage/s3_xml.h"
#include "storage/sigv4.h"
#include "storage/store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#define MS_S3_MIB	  (1024ULL * 1024ULL)
#define MS_S3_MAX_HEADERS (MS_STORE_META_MAX + 4)

/* The key a request signs with: a copy, taken per attempt (ms_s3_provider_get). */
struct ms_s3_key {
	char access_key[128];
	char secret_key[128];
	char token[4096]; /* x-amz-security-token; "" for long-term keys */
	int64_t expires;  /* Unix seconds; 0: never */
};

enum ms_s3_source { MS_S3_SOURCE_STATIC, MS_S3_SOURCE_WEB_IDENTITY, MS_S3_SOURCE_IMDS };

/* Where the key comes from, and its refresh (s3_provider.c has the invariants). */
struct ms_s3_provider {
	enum ms_s3_source source;
	pthread_mutex_t lock;
	pthread_cond_t cond;	   /* a refresh ended */
	struct ms_s3_key key;	   /* guarded by lock */
	bool refreshing;	   /* guarded by lock: one fetch at a time */
	int64_t retry_at_ns;	   /* guarded by lock: no fetch before (CLOCK_REALTIME ns) */
	uint64_t refreshes;	   /* guarded by lock */
	uint64_t refresh_failures; /* guarded by lock */
	int64_t margin_s;	   /* refresh this long before expiry */
	long timeout_ms;
	char *token_file, *role_arn, *session_name, *sts_endpoint; /* web identity */
	char *imds_endpoint;					   /* imds */
};

struct ms_s3 {
	struct ms_store base;
	/* Owned strings; config's pointers point at them. Read-only after new (inv. 1). */
	char *endpoint, *bucket, *prefix, *region;
	struct ms_s3_provider creds; /* its own lock (inv. 1 does not cover it) */
	bool creds_init;
	struct ms_s3_config config;
	uint64_t threshold, part_size;
	unsigned max_attempts;
	int64_t retry_initial_ns;
	long timeout_ms;
	unsigned list_page; /* set before sharing (inv. 1) */
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST]; /* guard the share's data, by kind */
	struct ms_curl_pool pool; /* idle easy handles and their open connections; own lock */
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

/* s3_http.c */

/* Copies prefix without leading/trailing '/'; "" when none. NULL: -EINVAL/-ENOMEM in *err. */
char *ms_s3_prefix_norm(const char *prefix, int *err);
/* curl_global_init, once per process. 0 or -ENOMEM. */
int ms_s3_http_init(void);
/* Gives s3 its CURLSH (the DNS cache) locked by s3->share_locks. 0 or -ENOMEM. */
int ms_s3_http_share_new(struct ms_s3 *s3);
/* Runs a request with retries (util/backoff). The caller frees c->resp, also on error. */
int ms_s3_call_run(struct ms_s3 *s3, struct ms_s3_call *c);

/* s3_creds.c */

/*
 * The static key: config's pair (+ session_token), else config's profile of config's
 * shared credentials file, else of config's config file ([profile P]; aws_access_key_id,
 * aws_secret_access_key, aws_session_token). All malloc'd (*token NULL when there is
 * none); 0, -EINVAL (none found) or -ENOMEM.
 */
int ms_s3_credentials(const struct ms_s3_config *config, char **ak, char **sk, char **token);
/* The region of config's profile in its config file (malloc'd) or NULL. */
char *ms_s3_config_region(const struct ms_s3_config *config);

/* s3_provider.c */

/* Picks the source (see s3_provider.c) and gets the first key. 0 or a negative errno. */
int ms_s3_provider_init(struct ms_s3_provider *p, const struct ms_s3_config *config);
/* A copy of the current key, refreshed first when due. 0, or -EKEYEXPIRED. */
int ms_s3_provider_get(struct ms_s3_provider *p, struct ms_s3_key *out);
void ms_s3_provider_fini(struct ms_s3_provider *p);
const char *ms_s3_source_name(enum ms_s3_source source);

#endif
