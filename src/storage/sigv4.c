/*
 * sigv4.c - AWS Signature Version 4 signing (see sigv4.h for the canonical form).
 *
 * Steps (AWS "Create a signed AWS API request"):
 *   canonical request -> SHA-256 -> string to sign ("AWS4-HMAC-SHA256", date, scope,
 *   hash) -> HMAC with the key derived from the secret over date, region, service,
 *   "aws4_request" -> hex signature.
 * Strings are built with open_memstream; every path frees what it built.
 * Invariants:
 *  1. Nothing here keeps state: all functions are thread-safe.
 *  2. The secret and the derived key live only on the stack of ms_sigv4_sign and are
 *     wiped (OPENSSL_cleanse) before it returns.
 */
#include "storage/sigv4.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

static bool ms_sigv4_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static void ms_sigv4_encode_to(FILE *f, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (ms_sigv4_unreserved(*p) || (keep_slash && *p == '/'))
			fputc(*p, f);
		else
			fprintf(f, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
	}
}

static void ms_sigv4_hex(const unsigned char *bytes, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[bytes[i] >> 4];
		out[2 * i + 1] = hex[bytes[i] & 15];
	}
	out[2 * len] = '\0';
}

void ms_sigv4_sha256_hex(const void *data, size_t len, char out[MS_SIGV4_HEX_LEN + 1])
{
	unsigned char digest[SHA256_DIGEST_LENGTH];
	SHA256(data, len, digest);
	ms_sigv4_hex(digest, sizeof(digest), out);
}

int ms_sigv4_format_date(time_t t, char out[MS_SIGV4_DATE_LEN + 1])
{
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		return -EINVAL;
	if (strftime(out, MS_SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != MS_SIGV4_DATE_LEN)
		return -EINVAL;
	return 0;
}

/* Closes a memstream and hands its buffer out; -ENOMEM if any write failed. */
static int ms_sigv4_stream_close(FILE *f, char **buf, char **out)
{
	bool failed = ferror(f);
	if (fclose(f) != 0)
		failed = true;
	if (failed || !*buf) {
		free(*buf);
		*buf = NULL;
		return -ENOMEM;
	}
	*out = *buf;
	*buf = NULL;
	return 0;
}

int ms_sigv4_uri_encode(const char *s, bool keep_slash, char **out)
{
	char *buf = NULL;
	size_t size;
	*out = NULL;
	if (!s)
		return -EINVAL;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return -ENOMEM;
	ms_sigv4_encode_to(f, s, keep_slash);
	return ms_sigv4_stream_close(f, &buf, out);
}

struct ms_sigv4_encoded_param {
	char *name;
	char *value;
};

static int ms_sigv4_param_cmp(const void *a, const void *b)
{
	const struct ms_sigv4_encoded_param *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

int ms_sigv4_canonical_query(const struct ms_sigv4_param *params, size_t count, char **out)
{
	*out = NULL;
	if (count && !params)
		return -EINVAL;
	struct ms_sigv4_encoded_param *enc = calloc(count ? count : 1, sizeof(*enc));
	if (!enc)
		return -ENOMEM;
	int err = 0;
	size_t done = 0;
	for (; done < count; done++) {
		if (!params[done].name || !*params[done].name) {
			err = -EINVAL;
			goto out_free_enc;
		}
		const char *value = params[done].value ? params[done].value : "";
		err = ms_sigv4_uri_encode(params[done].name, false, &enc[done].name);
		if (err)
			goto out_free_enc;
		err = ms_sigv4_uri_encode(value, false, &enc[done].value);
		if (err) {
			free(enc[done].name);
			goto out_free_enc;
		}
	}
	qsort(enc, count, sizeof(*enc), ms_sigv4_param_cmp);
	char *buf = NULL;
	size_t size;
	FILE *f = open_memstream(&buf, &size);
	if (!f) {
		err = -ENOMEM;
		goto out_free_enc;
	}
	for (size_t i = 0; i < count; i++)
		fprintf(f, "%s%s=%s", i ? "&" : "", enc[i].name, enc[i].value);
	err = ms_sigv4_stream_close(f, &buf, out);
out_free_enc:
	for (size_t i = 0; i < done; i++) {
		free(enc[i].name);
		free(enc[i].value);
	}
	free(enc);
	return err;
}

/* A header prepared for the canonical form: lowercased name, trimmed value. */
struct ms_sigv4_canon_header {
	char *name;
	char *value;
	size_t order; /* position given, so equal names keep their order */
};

static int ms_sigv4_header_cmp(const void *a, const void *b)
{
	const struct ms_sigv4_canon_header *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static char *ms_sigv4_lower_dup(const char *s)
{
	char *d = strdup(s);
	if (d)
		for (char *p = d; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
	return d;
}

/* Trims the value and collapses runs of spaces/tabs to one space. */
static char *ms_sigv4_trim_dup(const char *s)
{
	char *d = malloc(strlen(s) + 1);
	if (!d)
		return NULL;
	size_t n = 0;
	bool space = false;
	for (const char *p = s; *p; p++) {
		if (*p == ' ' || *p == '\t') {
			space = n > 0;
			continue;
		}
		if (space)
			d[n++] = ' ';
		space = false;
		d[n++] = *p;
	}
	d[n] = '\0';
	return d;
}

static bool ms_sigv4_header_name_ok(const char *name)
{
	if (!name || !*name)
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == ':')
			return false;
	return strcasecmp(name, "host") != 0 && strcasecmp(name, "x-amz-date") != 0 &&
	       strcasecmp(name, "authorization") != 0;
}

static bool ms_sigv4_value_ok(const char *value)
{
	if (!value)
		return false;
	for (const char *p = value; *p; p++)
		if (*p == '\r' || *p == '\n')
			return false;
	return true;
}

/* Builds the canonical request and the signed-headers list. */
static int ms_sigv4_canonical(const struct ms_sigv4_request *req, char **creq, char **signed_hdrs)
{
	size_t count = req->header_count + 2;
	struct ms_sigv4_canon_header *hdr = calloc(count, sizeof(*hdr));
	if (!hdr)
		return -ENOMEM;
	char *query = NULL, *cbuf = NULL, *sbuf = NULL;
	int err = 0;
	size_t made = 0;
	for (; made < count; made++) {
		const char *name, *value;
		if (made == 0) {
			name = "host";
			value = req->host;
		} else if (made == 1) {
			name = "x-amz-date";
			value = req->amz_date;
		} else {
			name = req->headers[made - 2].name;
			value = req->headers[made - 2].value;
			if (!ms_sigv4_header_name_ok(name)) {
				err = -EINVAL;
				goto out_free;
			}
		}
		if (!ms_sigv4_value_ok(value)) {
			err = -EINVAL;
			goto out_free;
		}
		hdr[made].name = ms_sigv4_lower_dup(name);
		hdr[made].value = ms_sigv4_trim_dup(value);
		hdr[made].order = made;
		if (!hdr[made].name || !hdr[made].value) {
			made++;
			err = -ENOMEM;
			goto out_free;
		}
	}
	qsort(hdr, count, sizeof(*hdr), ms_sigv4_header_cmp);

	err = ms_sigv4_canonical_query(req->query, req->query_count, &query);
	if (err)
		goto out_free;

	size_t csize, ssize;
	FILE *cf = open_memstream(&cbuf, &csize);
	if (!cf) {
		err = -ENOMEM;
		goto out_free;
	}
	FILE *sf = open_memstream(&sbuf, &ssize);
	if (!sf) {
		fclose(cf);
		free(cbuf);
		cbuf = NULL;
		err = -ENOMEM;
		goto out_free;
	}
	fprintf(cf, "%s\n", req->method);
	ms_sigv4_encode_to(cf, req->path, true);
	fprintf(cf, "\n%s\n", query);
	for (size_t i = 0; i < count; i++) {
		bool first = i == 0 || strcmp(hdr[i].name, hdr[i - 1].name) != 0;
		bool last = i + 1 == count || strcmp(hdr[i].name, hdr[i + 1].name) != 0;
		if (first) {
			fprintf(cf, "%s:", hdr[i].name);
			fprintf(sf, "%s%s", i ? ";" : "", hdr[i].name);
		}
		fprintf(cf, "%s%s", hdr[i].value, last ? "\n" : ",");
	}
	fflush(sf);
	fprintf(cf, "\n%s\n%s", sbuf ? sbuf : "", req->payload_hash);
	int cerr = ms_sigv4_stream_close(cf, &cbuf, creq);
	int serr = ms_sigv4_stream_close(sf, &sbuf, signed_hdrs);
	err = cerr ? cerr : serr;
	if (err) {
		free(*creq);
		free(*signed_hdrs);
		*creq = *signed_hdrs = NULL;
	}
out_free:
	free(query);
	for (size_t i = 0; i < made; i++) {
		free(hdr[i].name);
		free(hdr[i].value);
	}
	free(hdr);
	return err;
}

static bool ms_sigv4_date_ok(const char *date)
{
	if (!date || strlen(date) != MS_SIGV4_DATE_LEN || date[8] != 'T' || date[15] != 'Z')
		return false;
	for (int i = 0; i < 15; i++)
		if (i != 8 && (date[i] < '0' || date[i] > '9'))
			return false;
	return true;
}

static bool ms_sigv4_token_ok(const char *s)
{
	if (!s || !*s)
		return false;
	for (const char *p = s; *p; p++)
		if (*p == '/' || *p == '\n' || *p == '\r' || *p == ' ' || *p == ',')
			return false;
	return true;
}

static int ms_sigv4_hmac(const unsigned char *key, size_t key_len, const char *msg,
			 unsigned char out[SHA256_DIGEST_LENGTH])
{
	unsigned int out_len = 0;
	if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), out,
		  &out_len) ||
	    out_len != SHA256_DIGEST_LENGTH)
		return -ENOMEM;
	return 0;
}

int ms_sigv4_sign(const struct ms_sigv4_request *req, struct ms_sigv4_result *out)
{
	memset(out, 0, sizeof(*out));
	if (!req || !req->method || !*req->method || !req->host || !*req->host || !req->path ||
	    req->path[0] != '/' || !req->payload_hash || !*req->payload_hash ||
	    !ms_sigv4_date_ok(req->amz_date) || !ms_sigv4_token_ok(req->region) ||
	    !ms_sigv4_token_ok(req->service) || !ms_sigv4_token_ok(req->access_key) ||
	    !req->secret_key || !*req->secret_key || (req->header_count && !req->headers))
		return -EINVAL;

	char *signed_hdrs = NULL;
	int err = ms_sigv4_canonical(req, &out->canonical_request, &signed_hdrs);
	if (err)
		return err;

	char date[9];
	memcpy(date, req->amz_date, 8);
	date[8] = '\0';
	char creq_hash[MS_SIGV4_HEX_LEN + 1];
	ms_sigv4_sha256_hex(out->canonical_request, strlen(out->canonical_request), creq_hash);
	if (asprintf(&out->string_to_sign, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
		     req->amz_date, date, req->region, req->service, creq_hash) < 0) {
		out->string_to_sign = NULL;
		err = -ENOMEM;
		goto out_fail;
	}

	unsigned char key[SHA256_DIGEST_LENGTH], sig[SHA256_DIGEST_LENGTH];
	char *secret = NULL;
	if (asprintf(&secret, "AWS4%s", req->secret_key) < 0) {
		err = -ENOMEM;
		goto out_fail;
	}
	err = ms_sigv4_hmac((const unsigned char *)secret, strlen(secret), date, key);
	if (!err)
		err = ms_sigv4_hmac(key, sizeof(key), req->region, key);
	if (!err)
		err = ms_sigv4_hmac(key, sizeof(key), req->service, key);
	if (!err)
		err = ms_sigv4_hmac(key, sizeof(key), "aws4_request", key);
	if (!err)
		err = ms_sigv4_hmac(key, sizeof(key), out->string_to_sign, sig);
	OPENSSL_cleanse(secret, strlen(secret));
	free(secret);
	OPENSSL_cleanse(key, sizeof(key));
	if (err)
		goto out_fail;
	ms_sigv4_hex(sig, sizeof(sig), out->signature);

	if (asprintf(&out->authorization,
		     "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
		     "Signature=%s",
		     req->access_key, date, req->region, req->service, signed_hdrs,
		     out->signature) < 0) {
		out->authorization = NULL;
		err = -ENOMEM;
		goto out_fail;
	}
	free(signed_hdrs);
	return 0;

out_fail:
	free(signed_hdrs);
	ms_sigv4_result_fini(out);
	return err;
}

void ms_sigv4_result_fini(struct ms_sigv4_result *result)
{
	free(result->canonical_request);
	free(result->string_to_sign);
	free(result->authorization);
	memset(result, 0, sizeof(*result));
}
