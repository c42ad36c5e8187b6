/*
 * sigv4.h - AWS Signature Version 4 (AWS4-HMAC-SHA256) request signing.
 *
 * Pure functions over strings, no I/O: the s3 backend builds the request, the signer
 * returns the Authorization header value. HMAC-SHA256 and SHA-256 come from OpenSSL
 * libcrypto. Checked against AWS's published SigV4 test suite (tests/storage/test_sigv4.c).
 *
 * S3 flavour of the canonical request:
 *  1. The path is URI-encoded once (RFC 3986 unreserved characters kept, '/' kept);
 *     it is not normalized ("//a/../" stays as it is), as S3 requires.
 *  2. Query parameters are encoded (names and values, '/' encoded too) and sorted by
 *     encoded name, then value; a value-less parameter is "name=".
 *  3. Headers: names lowercased, values trimmed with inner runs of spaces collapsed,
 *     repeated names joined with ',' in the order given, sorted by name. "host" and
 *     "x-amz-date" are always signed and must not be passed in headers.
 * All strings handed back are malloc'd; the caller frees them.
 */
#ifndef MS_STORAGE_SIGV4_H
#define MS_STORAGE_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define MS_SIGV4_HEX_LEN    64 /* a SHA-256 in lowercase hex, without the NUL */
#define MS_SIGV4_DATE_LEN   16 /* "20150830T123600Z" */
#define MS_SIGV4_UNSIGNED   "UNSIGNED-PAYLOAD"
#define MS_SIGV4_EMPTY_HASH "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct ms_sigv4_param {
	const char *name;  /* raw (not encoded) */
	const char *value; /* raw; NULL or "" for a value-less parameter */
};

struct ms_sigv4_header {
	const char *name;
	const char *value;
};

struct ms_sigv4_request {
	const char *method; /* "GET", "PUT", ... */
	const char *host;   /* the Host header as sent: "host" or "host:port" */
	const char *path;   /* raw path, starts with '/' */
	const struct ms_sigv4_param *query;
	size_t query_count;
	const struct ms_sigv4_header *headers; /* further headers to sign */
	size_t header_count;
	const char *payload_hash; /* lowercase hex SHA-256 of the body, or MS_SIGV4_UNSIGNED */
	const char *amz_date;	  /* "YYYYMMDDTHHMMSSZ" (UTC) */
	const char *region;	  /* "us-east-1" */
	const char *service;	  /* "s3" */
	const char *access_key;
	const char *secret_key;
};

struct ms_sigv4_result {
	char *canonical_request;
	char *string_to_sign;
	char *
	    authorization; /* "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..." */
	char signature[MS_SIGV4_HEX_LEN + 1];
};

/* Signs req. 0, -EINVAL (a missing or malformed field) or -ENOMEM; on error *out is zeroed. */
int ms_sigv4_sign(const struct ms_sigv4_request *req, struct ms_sigv4_result *out);
/* Frees the strings of a result (safe on a zeroed one). */
void ms_sigv4_result_fini(struct ms_sigv4_result *result);

/* RFC 3986 encoding: unreserved kept, everything else %XX (uppercase); '/' kept if keep_slash. */
int ms_sigv4_uri_encode(const char *s, bool keep_slash, char **out);
/* The canonical (encoded, sorted) query string, "" for none; also what the URL should carry. */
int ms_sigv4_canonical_query(const struct ms_sigv4_param *params, size_t count, char **out);
/* SHA-256 of data as lowercase hex. */
void ms_sigv4_sha256_hex(const void *data, size_t len, char out[MS_SIGV4_HEX_LEN + 1]);
/* t (UTC) as "YYYYMMDDTHHMMSSZ". 0 or -EINVAL. */
int ms_sigv4_format_date(time_t t, char out[MS_SIGV4_DATE_LEN + 1]);

#endif
