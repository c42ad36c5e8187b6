/*
 * test_s3_xml.c - the s3 backend's XML reader and writer (storage/s3_xml.h) on bodies
 * shaped like S3's, without a server: listings (prefix strip, continuation, entities,
 * malformed entries), error codes, upload ids, upload counts, the complete body.
 */
#include "ms_test.h"

#include "storage/s3_xml.h"
#include "util/err.h"

#include <string.h>

struct seen {
	char keys[8][64];
	uint64_t sizes[8];
	int64_t mtimes[8];
	int count;
	int stop_at; /* return 1 at this index (-1: never) */
};

static int collect(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	struct seen *s = ctx;
	if (s->count < 8) {
		snprintf(s->keys[s->count], sizeof(s->keys[0]), "%s", key);
		s->sizes[s->count] = size;
		s->mtimes[s->count] = mtime_ms;
	}
	return s->count++ == s->stop_at ? 1 : 0;
}

static int list(const char *xml, const char *prefix, struct seen *s, int *stop, char **token)
{
	memset(s, 0, sizeof(*s));
	s->stop_at = -1;
	*stop = 0;
	return ms_s3_xml_list_page(xml, strlen(xml), prefix, collect, s, stop, token);
}

static void test_list_page(void **state)
{
	struct seen s;
	int stop;
	char *token;
	const char *page = "<ListBucketResult><IsTruncated>true</IsTruncated>"
			   "<Contents><Key>pre/a&amp;b</Key><Size>12</Size></Contents>"
			   "<Contents><Key>pre/c/&#x41;&#66;</Key><Size>0</Size></Contents>"
			   "<NextContinuationToken>t&lt;1</NextContinuationToken>"
			   "</ListBucketResult>";
	assert_int_equal(list(page, "pre", &s, &stop, &token), 0);
	assert_int_equal(s.count, 2);
	assert_string_equal(s.keys[0], "a&b");
	assert_int_equal(s.sizes[0], 12);
	assert_string_equal(s.keys[1], "c/AB");
	assert_int_equal(stop, 0);
	assert_non_null(token);
	assert_string_equal(token, "t<1");
	free(token);

	assert_int_equal(s.mtimes[0], 0); /* no <LastModified>: age unknown */

	/* <LastModified> (ISO 8601 UTC, with or without milliseconds) -> Unix ms */
	assert_int_equal(list("<Contents><Key>k</Key><LastModified>2026-12-02T00:50:45.250Z"
			      "</LastModified><Size>3</Size></Contents><Contents><Key>l</Key>"
			      "<LastModified>1970-01-01T00:00:01Z</LastModified><Size>1</Size>"
			      "</Contents><Contents><Key>m</Key><LastModified>yesterday"
			      "</LastModified><Size>1</Size></Contents>",
			      "", &s, &stop, &token),
			 0);
	assert_int_equal(s.count, 3);
	assert_int_equal(s.mtimes[0], 1796172645250LL);
	assert_int_equal(s.mtimes[1], 1000);
	assert_int_equal(s.mtimes[2], 0);

	/* No prefix: keys as listed; not truncated: no token. */
	assert_int_equal(
	    list("<Contents><Key>k</Key><Size>3</Size></Contents>", "", &s, &stop, &token), 0);
	assert_int_equal(s.count, 1);
	assert_string_equal(s.keys[0], "k");
	assert_null(token);

	/* The callback stops the page. */
	memset(&s, 0, sizeof(s));
	s.stop_at = 0;
	stop = 0;
	assert_int_equal(ms_s3_xml_list_page(page, strlen(page), "pre", collect, &s, &stop, &token),
			 0);
	assert_int_equal(stop, 1);
	assert_int_equal(s.count, 1);
	assert_null(token);
}

static void test_list_page_bad(void **state)
{
	struct seen s;
	int stop;
	char *token;
	static const char *const bad[] = {
	    "<Contents><Key>other/k</Key><Size>1</Size></Contents>", /* outside the prefix */
	    "<Contents><Key>prek</Key><Size>1</Size></Contents>",    /* no '/' after it */
	    "<Contents><Key>pre/k</Key></Contents>",		     /* no size */
	    "<Contents><Key>pre/k</Key><Size>-1</Size></Contents>",
	    "<Contents><Key>pre/k</Key><Size>1x</Size></Contents>",
	    "<Contents><Key>pre/k</Key><Size>123456789012345678901</Size></Contents>",
	    "<Contents><Key>pre/&bogus;</Key><Size>1</Size></Contents>",
	    "<Contents><Key>pre/&#0;</Key><Size>1</Size></Contents>",
	    "<Contents><Key>pre/&#xd800;</Key><Size>1</Size></Contents>",
	    "<IsTruncated>true</IsTruncated>", /* truncated without a token */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		token = NULL;
		assert_int_equal(list(bad[i], "pre", &s, &stop, &token), MS_EPROTO);
		assert_null(token);
	}
}

static void test_error_code_and_upload_id(void **state)
{
	char code[8];
	const char *err = "<Error><Code>NoSuchBucket</Code></Error>";
	ms_s3_xml_error_code(err, strlen(err), code, sizeof(code));
	assert_string_equal(code, "NoSuchB"); /* cut to fit */
	ms_s3_xml_error_code("<Error/>", 8, code, sizeof(code));
	assert_string_equal(code, "");
	ms_s3_xml_error_code(NULL, 0, code, sizeof(code));
	assert_string_equal(code, "");

	char *id;
	const char *init = "<InitiateMultipartUploadResult><UploadId>2~a&amp;b</UploadId>"
			   "</InitiateMultipartUploadResult>";
	assert_int_equal(ms_s3_xml_upload_id(init, strlen(init), &id), 0);
	assert_string_equal(id, "2~a&b");
	free(id);
	assert_int_equal(ms_s3_xml_upload_id("<UploadId></UploadId>", 21, &id), MS_EPROTO);
	assert_null(id);
	assert_int_equal(ms_s3_xml_upload_id("<UploadId>x", 11, &id), MS_EPROTO);
	assert_int_equal(ms_s3_xml_upload_id(NULL, 0, &id), MS_EPROTO);

	const char *ups = "<Upload><Key>a</Key></Upload><Upload><Key>b</Key></Upload>";
	assert_int_equal(ms_s3_xml_count(ups, strlen(ups), "Upload"), 2);
	assert_int_equal(ms_s3_xml_count(ups, strlen(ups), "Nothing"), 0);
	/* The buffer's end bounds the search: the second element is cut off. */
	assert_int_equal(ms_s3_xml_count(ups, strlen(ups) - 3, "Upload"), 1);
}

struct uploads_seen {
	char keys[4][64], ids[4][64];
	int64_t initiated[4];
	unsigned count;
};

static int upload_seen(const char *key, const char *upload_id, int64_t initiated_ms, void *ctx)
{
	struct uploads_seen *u = ctx;
	if (u->count == 4)
		return 7;
	snprintf(u->keys[u->count], 64, "%s", key);
	snprintf(u->ids[u->count], 64, "%s", upload_id);
	u->initiated[u->count++] = initiated_ms;
	return 0;
}

static void test_uploads_page(void **state)
{
	(void)state;
	const char *page = "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>"
			   "<NextKeyMarker>p/b&amp;2</NextKeyMarker>"
			   "<NextUploadIdMarker>u2</NextUploadIdMarker>"
			   "<Upload><Key>p/b1/memfile</Key><UploadId>u1</UploadId>"
			   "<Initiated>2026-12-02T00:50:45.250Z</Initiated></Upload>"
			   "<Upload><Key>p/b&amp;2</Key><UploadId>u2</UploadId></Upload>"
			   "</ListMultipartUploadsResult>";
	struct uploads_seen u = {0};
	char *next_key, *next_id;
	assert_int_equal(
	    ms_s3_xml_uploads_page(page, strlen(page), "p", upload_seen, &u, &next_key, &next_id),
	    0);
	assert_int_equal(u.count, 2);
	assert_string_equal(u.keys[0], "b1/memfile");
	assert_string_equal(u.ids[0], "u1");
	assert_int_equal(u.initiated[0], 1796172645250LL);
	assert_string_equal(u.keys[1], "b&2");
	assert_int_equal(u.initiated[1], 0); /* no <Initiated>: unknown */
	assert_string_equal(next_key, "p/b&2");
	assert_string_equal(next_id, "u2");
	free(next_key);
	free(next_id);
	/* a key outside the prefix, an upload without an id, a truncated page without markers */
	static const char *const bad[] = {
	    "<Upload><Key>q/x</Key><UploadId>u</UploadId></Upload>",
	    "<Upload><Key>p/x</Key></Upload>",
	    "<IsTruncated>true</IsTruncated><Upload><Key>p/x</Key><UploadId>u</UploadId></Upload>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&u, 0, sizeof(u));
		assert_int_equal(ms_s3_xml_uploads_page(bad[i], strlen(bad[i]), "p", upload_seen,
							&u, &next_key, &next_id),
				 MS_EPROTO);
		assert_null(next_key);
	}
	/* the callback's non-zero return is returned */
	memset(&u, 0, sizeof(u));
	u.count = 4;
	assert_int_equal(
	    ms_s3_xml_uploads_page(page, strlen(page), "p", upload_seen, &u, &next_key, &next_id),
	    7);
}

static void test_complete_body(void **state)
{
	char etags[2][MS_S3_ETAG_MAX] = {"\"e1\"", "a&b<c"};
	char *xml;
	size_t len;
	assert_int_equal(ms_s3_xml_complete_upload(etags, 2, &xml, &len), 0);
	const char *want = "<CompleteMultipartUpload>"
			   "<Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag></Part>"
			   "<Part><PartNumber>2</PartNumber><ETag>a&amp;b&lt;c</ETag></Part>"
			   "</CompleteMultipartUpload>";
	assert_int_equal(len, strlen(want));
	assert_memory_equal(xml, want, len);
	free(xml);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_list_page),
	    cmocka_unit_test(test_list_page_bad),
	    cmocka_unit_test(test_error_code_and_upload_id),
	    cmocka_unit_test(test_complete_body),
	    cmocka_unit_test(test_uploads_page),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
