/*
 * fuzz_s3_xml.c - libFuzzer target for the reader of S3's XML answers
 * (storage/s3_xml.h): error codes, multipart upload ids, upload counts,
 * ListObjectsV2 and ListMultipartUploads pages, all on the raw bytes of a response body. Nothing
 * may read outside the body (ASan over an exact-size copy), and what is returned must keep the
 * reader's promises: a value found inside the body, keys no longer than it, a code that fits, a
 * token only on success.
 */
#include "storage/s3_xml.h"
#include "util/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct listing {
	unsigned keys;
	size_t body; /* a key is never longer than the body it came from */
};

static int on_key(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	(void)size;
	struct listing *l = ctx;
	if (!key || strlen(key) > l->body)
		abort();
	l->keys++;
	return l->keys == 1000 ? 1 : 0; /* a non-zero answer must stop the page */
}

static int on_upload(const char *key, const char *upload_id, int64_t initiated_ms, void *ctx)
{
	(void)initiated_ms;
	struct listing *l = ctx;
	if (!key || !upload_id || strlen(key) > l->body || strlen(upload_id) > l->body)
		abort();
	l->keys++;
	return l->keys == 1000 ? 5 : 0; /* a non-zero answer is returned */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *xml = malloc(size ? size : 1);
	if (!xml)
		return 0;
	memcpy(xml, data, size);

	char code[32];
	memset(code, 'x', sizeof(code));
	ms_s3_xml_error_code(xml, size, code, sizeof(code));
	if (!memchr(code, '\0', sizeof(code)))
		abort();

	char *upload_id = NULL;
	int err = ms_s3_xml_upload_id(xml, size, &upload_id);
	if (err == 0 && (!upload_id || strlen(upload_id) > size))
		abort();
	if (err != 0 && upload_id)
		abort();
	free(upload_id);

	if (ms_s3_xml_count(xml, size, "Upload") > size / 8 + 1)
		abort();

	const char *vs, *ve;
	if (ms_s3_xml_find(xml, xml + size, "Key", &vs, &ve) &&
	    (vs < xml || ve > xml + size || vs > ve))
		abort();

	static const char *const prefixes[] = {"", "fleet-a"}; /* normalized: no '/' at the end */
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		struct listing l = {.body = size};
		int stop = 0;
		char *token = NULL;
		err = ms_s3_xml_list_page(xml, size, prefixes[i], on_key, &l, &stop, &token);
		if (err != 0 && token)
			abort();
		if (err == 0 && stop != 0 && l.keys != 1000)
			abort();
		free(token);
		struct listing u = {.body = size};
		char *next_key = NULL, *next_id = NULL;
		err = ms_s3_xml_uploads_page(xml, size, prefixes[i], on_upload, &u, &next_key,
					     &next_id);
		if ((err != 0 && (next_key || next_id)) || (!next_key) != (!next_id))
			abort();
		if (err == 5 && u.keys != 1000)
			abort();
		free(next_key);
		free(next_id);
	}
	free(xml);
	return 0;
}
