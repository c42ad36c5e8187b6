/*
 * memsnap/store.h - object stores: a directory (file:///dir) or an S3-compatible server
 * (s3://bucket/prefix). Puts are atomic: an object is whole or absent. (libmemsnap)
 */
#ifndef MEMSNAP_STORE_H
#define MEMSNAP_STORE_H

#include "memsnap/memsnap.h"

#include <stddef.h>
#include <stdint.h>

/* An s3:// store's settings (every field may be NULL). The library reads no environment. */
struct memsnap_s3_options {
	const char *endpoint; /* "http://127.0.0.1:7480"; required for s3:// */
	const char *region;   /* default "us-east-1" */
	const char *access_key, *secret_key;
	const char *credentials_file; /* an AWS shared credentials file, when no keys */
	const char *profile;	      /* its profile; default "default" */
};

typedef struct memsnap_store memsnap_store;

/* Opens uri; s3 may be NULL (file:// needs none). NULL on error with *err. */
memsnap_store *memsnap_store_open(const char *uri, const struct memsnap_s3_options *s3, int *err);
void memsnap_store_free(memsnap_store *store);
int memsnap_store_put(memsnap_store *store, const char *key, const void *buf, size_t len);
/* Reads up to len bytes at off; *got: how many (0 past the end). */
int memsnap_store_read(memsnap_store *store, const char *key, uint64_t off, void *dst, size_t len,
		       size_t *got);
/* MEMSNAP_ENOTFOUND when absent. */
int memsnap_store_size(memsnap_store *store, const char *key, uint64_t *size);
int memsnap_store_remove(memsnap_store *store, const char *key);

#endif
