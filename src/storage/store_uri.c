/*
 * store_uri.c - opens a store from a URI (file:// or s3://). Kept apart from
 * store.c so that code using one backend links without the others.
 */
#include "storage/store.h"
#include "storage/verified.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ms_store *ms_store_open_backend(const char *uri, const struct ms_s3_config *s3,
					      int *err)
{
	*err = -EINVAL;
	if (!uri || !*uri)
		return NULL;
	if (strncmp(uri, "file://", 7) == 0) {
		if (uri[7] != '/')
			return NULL; /* file:///abs/path only */
		return ms_store_fs_new(uri + 7, err);
	}
	if (strncmp(uri, "s3://", 5) == 0) {
		const char *bucket = uri + 5;
		const char *slash = strchr(bucket, '/');
		size_t bucket_len = slash ? (size_t)(slash - bucket) : strlen(bucket);
		if (bucket_len == 0 || bucket_len > 63)
			return NULL;
		char bucket_name[64];
		memcpy(bucket_name, bucket, bucket_len);
		bucket_name[bucket_len] = '\0';
		struct ms_s3_config config = s3 ? *s3 : (struct ms_s3_config){0};
		config.bucket = bucket_name;
		config.prefix = slash ? slash + 1 : "";
		return ms_store_s3_new(&config, err);
	}
	if (strstr(uri, "://"))
		return NULL; /* an unknown scheme */
	return ms_store_fs_new(uri, err);
}

/* Every store opened by URI checks what it reads against the builds' checksum tables. */
struct ms_store *ms_store_open(const char *uri, const struct ms_s3_config *s3, int *err)
{
	struct ms_store *store = ms_store_open_backend(uri, s3, err);
	if (!store)
		return NULL;
	struct ms_store *verified = ms_store_verified_new(store, true);
	if (!verified) {
		ms_store_free(store);
		*err = -ENOMEM;
	}
	return verified;
}
