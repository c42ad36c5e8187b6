/*
 * store.h - the object store interface: one vtable, several backends.
 *
 * Backends: fs (a directory; the embedded default), s3 (any S3-compatible
 * server), and faulty (wraps another store and fails, delays or truncates the
 * N-th call of a chosen kind; tests only). storage/ stores bytes under keys and
 * knows nothing of what headers mean.
 *
 * Keys are relative paths of '/'-separated segments: no leading '/', no empty,
 * "." or ".." segment, no NUL, at most MS_STORE_KEY_MAX bytes
 * (ms_store_key_valid). Artifact names follow E2B: "{build_id}/memfile",
 * "{build_id}/memfile.header", "{build_id}/snapfile", "{build_id}/metadata.json",
 * compressed data "{build_id}/memfile.zstd" / ".lz4".
 *
 * Semantics every backend keeps:
 *  1. put is atomic: a reader sees the whole new object or the old one (or
 *     none), never a prefix; a failed put leaves nothing visible.
 *  2. read_range past the end returns the bytes that exist (*got < len);
 *     a missing object is MS_ENOTFOUND.
 *  3. delete of a missing object is MS_ENOTFOUND.
 * Thread-safety: a store may be used from many threads at once.
 */
#ifndef MS_STORAGE_STORE_H
#define MS_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_STORE_KEY_MAX	1024
#define MS_STORE_META_MAX	8
#define MS_STORE_META_KEY_MAX	64
#define MS_STORE_META_VALUE_MAX 256

/* Small user metadata (S3 x-amz-meta-*; fs: a sidecar file). Keys: [a-z0-9-]. */
struct ms_store_meta {
	unsigned count;
	struct {
		char key[MS_STORE_META_KEY_MAX];
		char value[MS_STORE_META_VALUE_MAX];
	} items[MS_STORE_META_MAX];
};

/*
 * Called once per listed object, in key order; a non-zero return stops the
 * listing. mtime_ms: when the object was written (Unix ms; 0 where the backend
 * cannot say).
 */
typedef int (*ms_store_list_fn)(const char *key, uint64_t size, int64_t mtime_ms, void *ctx);

struct ms_store;
struct ms_sums; /* storage/checksums.h */

struct ms_store_ops {
	const char *name;
	int (*put_buf)(struct ms_store *store, const char *key, const void *buf, size_t len,
		       const struct ms_store_meta *meta);
	/* Puts the whole content of fd from offset 0 (size bytes). */
	int (*put_file)(struct ms_store *store, const char *key, int fd, uint64_t size,
			const struct ms_store_meta *meta);
	int (*read_range)(struct ms_store *store, const char *key, uint64_t off, void *dst,
			  size_t len, size_t *got);
	int (*size)(struct ms_store *store, const char *key, uint64_t *size);
	int (*remove)(struct ms_store *store, const char *key);
	int (*list)(struct ms_store *store, const char *prefix, ms_store_list_fn fn, void *ctx);
	int (*get_meta)(struct ms_store *store, const char *key, struct ms_store_meta *meta);
	void (*free)(struct ms_store *store);
	/* Optional (NULL: the backend leaves none): see ms_store_remove_incomplete. */
	int (*remove_incomplete)(struct ms_store *store, const char *prefix, int64_t older_than_ms,
				 bool dry_run, size_t *count);
	/* Optional (NULL: objects are not local files): see ms_store_local. */
	int (*local)(struct ms_store *store, const char *key, char *path, size_t cap,
		     struct ms_sums **sums);
};

/* Backends embed this as their first member. */
struct ms_store {
	const struct ms_store_ops *ops;
};

/* S3 backend configuration; strings are copied by ms_store_s3_new. */
struct ms_s3_config {
	const char *endpoint;	      /* "http://127.0.0.1:7480"; required */
	const char *bucket;	      /* required */
	const char *prefix;	      /* key prefix inside the bucket, may be NULL or "" */
	const char *region;	      /* default "us-east-1" */
	const char *access_key;	      /* NULL: from credentials_file or config_file */
	const char *secret_key;	      /* NULL: from credentials_file or config_file */
	const char *session_token;    /* with access_key/secret_key: temporary credentials */
	const char *credentials_file; /* an AWS shared credentials file; NULL: none */
	const char *config_file; /* an AWS config file: the profile's keys, region; NULL: none */
	const char *profile;	 /* [profile] of both files; NULL: "default" */
	/* temporary credentials, refreshed before they expire (when no static key is found) */
	const char *web_identity_token_file; /* with role_arn: STS AssumeRoleWithWebIdentity */
	const char *role_arn;
	const char *role_session_name; /* NULL: "memsnap" */
	const char *sts_endpoint;      /* NULL: https://sts.amazonaws.com */
	bool imds;		       /* else the instance metadata service v2 (opt-in) */
	const char *imds_endpoint;     /* NULL: http://169.254.169.254 */
	int64_t refresh_margin_ns;     /* refresh this long before expiry; 0: 5 min */
	bool virtual_host;	       /* false: path-style URLs (default) */
	uint64_t multipart_threshold;  /* 0: default 64 MiB */
	uint64_t part_size;	       /* 0: default 16 MiB (>= 5 MiB) */
	unsigned max_attempts;	       /* 0: default 5 */
	int64_t retry_initial_ns;      /* 0: default 100 ms */
	int64_t timeout_ms;	       /* per request; 0: default 60 s */
};

/* fs backend rooted at dir (created if missing). NULL on error, with *err set. */
struct ms_store *ms_store_fs_new(const char *dir, int *err);
/* s3 backend. NULL on error, with *err set (-EINVAL: missing endpoint/bucket/credentials). */
struct ms_store *ms_store_s3_new(const struct ms_s3_config *config, int *err);

/*
 * Opens a store from a URI: "file:///abs/path" (or a plain path) -> fs;
 * "s3://bucket/prefix" -> s3 with s3's settings (may be NULL; its bucket and prefix are
 * ignored: the URI names them). Reads no environment: callers above node/ fill s3, e.g.
 * with ms_s3_env_read() (s3.h). The store is wrapped in a checking one
 * (storage/verified.h): reads of a build's objects are checked against its
 * checksum table. NULL on error with *err set.
 */
struct ms_store *ms_store_open(const char *uri, const struct ms_s3_config *s3, int *err);

bool ms_store_key_valid(const char *key);

/* Wrappers that validate the key and call the backend. */
int ms_store_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
		     const struct ms_store_meta *meta);
int ms_store_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
		      const struct ms_store_meta *meta);
int ms_store_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
			size_t len, size_t *got);
/* Reads the whole object into a malloc'd buffer (caller frees); refuses objects > max_len. */
int ms_store_read_all(struct ms_store *store, const char *key, size_t max_len, void **buf,
		      size_t *len);
int ms_store_size(struct ms_store *store, const char *key, uint64_t *size);
/* *exists = object present; 0 or an error other than MS_ENOTFOUND. */
int ms_store_exists(struct ms_store *store, const char *key, bool *exists);
int ms_store_remove(struct ms_store *store, const char *key);
int ms_store_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn, void *ctx);
int ms_store_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta);
void ms_store_free(struct ms_store *store);
/*
 * The leftovers of puts that never finished (the writer died mid-put): the fs
 * store's temporary files, S3's incomplete multipart uploads; those under key
 * prefix started at least older_than_ms ago are removed (aborted), unless
 * dry_run. *count: how many were (or would be). A backend without such
 * leftovers counts 0; the timed and checking wrappers pass the call on.
 */
int ms_store_remove_incomplete(struct ms_store *store, const char *prefix, int64_t older_than_ms,
			       bool dry_run, size_t *count);

/*
 * Where key's object can be read in place, without a copy: its path as a local file
 * (the fs store: the object itself, which a put replaces by a rename and never
 * rewrites, so an open file keeps its bytes), and in *sums the build's checksum
 * table when it lists the object (one reference; NULL: its reads are not checked).
 * The checking wrapper adds the table, the timed one passes the call on. -ENOTSUP
 * from a backend whose objects are not local files (s3, faulty, a peer),
 * MS_ENOTFOUND for a missing object, or the table's error (verified.h).
 */
int ms_store_local(struct ms_store *store, const char *key, char *path, size_t cap,
		   struct ms_sums **sums);

/* Metadata helpers: set (replaces an existing key) and get (NULL when absent). */
int ms_store_meta_set(struct ms_store_meta *meta, const char *key, const char *value);
const char *ms_store_meta_get(const struct ms_store_meta *meta, const char *key);

#endif
