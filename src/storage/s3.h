/*
 * s3.h - extras of the s3 backend beyond the store vtable (ms_store_s3_new is in store.h).
 *
 * Addressing: path-style "{endpoint}/{bucket}/{prefix}/{key}" (the default; what RGW on
 * 127.0.0.1 needs) or virtual-host "{scheme}://{bucket}.{host}/{prefix}/{key}".
 * The functions taking a struct ms_store * refuse (-EINVAL) a store of another backend.
 */
#ifndef MS_STORAGE_S3_H
#define MS_STORAGE_S3_H

#include "storage/store.h"

/* Where a request goes: all three malloc'd, freed by ms_s3_target_fini. */
struct ms_s3_target {
	char *url;  /* scheme://host/encoded-path, without a query */
	char *host; /* the Host header ("host:port" when the endpoint names a port) */
	char *path; /* the raw (unencoded) path that SigV4 signs */
};

/*
 * Builds the target of key (NULL: the bucket itself) under config's endpoint, bucket,
 * prefix and addressing. 0, -EINVAL (bad endpoint: not http(s)://host[:port][/], bad
 * bucket, prefix or key) or -ENOMEM; on error *out is zeroed.
 */
int ms_s3_target_build(const struct ms_s3_config *config, const char *key,
		       struct ms_s3_target *out);
void ms_s3_target_fini(struct ms_s3_target *target);

/* Creates the store's bucket; 0 also when it exists already and is ours. */
int ms_store_s3_create_bucket(struct ms_store *store);
/* max-keys of each ListObjectsV2 page (1..1000; default 1000). Call before sharing the store. */
int ms_store_s3_set_list_page(struct ms_store *store, unsigned max_keys);
/* Counts the multipart uploads in progress under prefix (relative to the store's prefix). */
int ms_store_s3_pending_uploads(struct ms_store *store, const char *prefix, unsigned *count);

/*
 * The settings of an s3 store that AWS tools take from the environment, read through lookup
 * (getenv, from cli/ or node/; a table in tests), as strings that fit:
 *   endpoint          MEMSNAP_S3_ENDPOINT, else AWS_ENDPOINT_URL
 *   region            AWS_REGION
 *   access/secret key AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, else MEMSNAP_S3_ACCESS_KEY +
 *                     MEMSNAP_S3_SECRET_KEY (a pair counts only when both are set)
 *   credentials_file  AWS_SHARED_CREDENTIALS_FILE, else $HOME/.aws/credentials
 *   profile           AWS_PROFILE
 *   session_token     AWS_SESSION_TOKEN (with the AWS_* pair only)
 *   config_file       AWS_CONFIG_FILE, else $HOME/.aws/config
 *   web identity      AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN, AWS_ROLE_SESSION_NAME
 *   sts_endpoint      AWS_ENDPOINT_URL_STS
 *   imds              MEMSNAP_S3_IMDS (1|on|true: opt in), at AWS_EC2_METADATA_SERVICE_ENDPOINT
 * An unset one is "".
 */
struct ms_s3_env {
	char endpoint[512], region[64], access_key[256], secret_key[256];
	char session_token[4096];
	char credentials_file[1024], profile[128];
	char config_file[1024];
	char web_identity_token_file[1024], role_arn[256], role_session_name[128];
	char sts_endpoint[512], imds_endpoint[512];
	bool imds;
};
typedef const char *(*ms_s3_env_lookup_fn)(const char *name);
void ms_s3_env_read(struct ms_s3_env *env, ms_s3_env_lookup_fn lookup);
/*
 * Points config's unset fields at env's set ones (env must outlive config's use); the key
 * pair replaces config's when config has no whole pair of its own.
 */
void ms_s3_env_apply(const struct ms_s3_env *env, struct ms_s3_config *config);

#endif
