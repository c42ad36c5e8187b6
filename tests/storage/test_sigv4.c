/*
 * test_sigv4.c - the SigV4 signer against AWS's published test vectors, and the s3
 * backend's URL/Host building (path-style and virtual-host).
 *
 * Vectors: the aws-sig-v4-test-suite cases (credentials AKIDEXAMPLE /
 * wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830T123600Z, us-east-1, service
 * "service", host example.amazonaws.com), with the expected canonical request and
 * signature copied from the suite, and the S3 developer guide's "GET object" example
 * (virtual-host style, Range header, examplebucket, 20130524T000000Z).
 */
#include "ms_test.h"

#include "storage/s3.h"
#include "storage/sigv4.h"
#include "storage/store.h"

#include <errno.h>
#include <string.h>

#define SUITE_AKID   "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_DATE   "20150830T123600Z"
#define SUITE_HOST   "example.amazonaws.com"
#define SUITE_SCOPE  "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "

struct vector {
	const char *name;
	const char *method;
	const char *path;
	struct ms_sigv4_param query[3];
	size_t query_count;
	struct ms_sigv4_header headers[4];
	size_t header_count;
	const char *payload_hash;
	const char *canonical_request;
	const char *signed_headers;
	const char *signature;
};

static const struct vector vectors[] = {
    {
	.name = "get-vanilla",
	.method = "GET",
	.path = "/",
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n/\n\nhost:example.amazonaws.com\n"
			     "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    {
	.name = "get-vanilla-query-order-key-case",
	.method = "GET",
	.path = "/",
	.query = {{"Param2", "value2"}, {"Param1", "value1"}},
	.query_count = 2,
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\n"
			     "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    },
    {
	.name = "get-vanilla-query-order-encoded",
	.method = "GET",
	.path = "/",
	.query = {{"Param-3", "Value3"}, {"Param", "Value2"}, {"\xe1\x88\xb4", "Value1"}},
	.query_count = 3,
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n/\n%E1%88%B4=Value1&Param=Value2&Param-3=Value3\n"
			     "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
			     "host;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
    },
    {
	.name = "get-vanilla-query-unreserved",
	.method = "GET",
	.path = "/",
	.query = {{"-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
		   "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}},
	.query_count = 1,
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request =
	    "GET\n/\n-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz="
	    "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n"
	    "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
	    "host;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    },
    {
	.name = "get-utf8",
	.method = "GET",
	.path = "/\xe1\x88\xb4",
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\n"
			     "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
    },
    {
	.name = "get-space-unnormalized",
	.method = "GET",
	.path = "/example space/",
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n/example%20space/\n\nhost:example.amazonaws.com\n"
			     "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    },
    {
	.name = "get-slashes-unnormalized",
	.method = "GET",
	.path = "//example//",
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n//example//\n\nhost:example.amazonaws.com\n"
			     "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "87cca117541a147f6df867677d98a7d80dff226d2bfca9e4ffa899665623c7e5",
    },
    {
	.name = "get-header-key-duplicate",
	.method = "GET",
	.path = "/",
	.headers = {{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}},
	.header_count = 3,
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n/\n\nhost:example.amazonaws.com\n"
			     "my-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\n"
			     "host;my-header1;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;my-header1;x-amz-date",
	.signature = "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    },
    {
	.name = "get-header-value-trim",
	.method = "GET",
	.path = "/",
	.headers = {{"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}},
	.header_count = 2,
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\n"
			     "my-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\n"
			     "host;my-header1;my-header2;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;my-header1;my-header2;x-amz-date",
	.signature = "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    },
    {
	.name = "post-vanilla-query",
	.method = "POST",
	.path = "/",
	.query = {{"Param1", "value1"}},
	.query_count = 1,
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request = "POST\n/\nParam1=value1\nhost:example.amazonaws.com\n"
			     "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;x-amz-date",
	.signature = "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    },
    {
	.name = "post-header-value-case",
	.method = "POST",
	.path = "/",
	.headers = {{"My-Header1", "VALUE1"}},
	.header_count = 1,
	.payload_hash = MS_SIGV4_EMPTY_HASH,
	.canonical_request =
	    "POST\n/\n\nhost:example.amazonaws.com\nmy-header1:VALUE1\n"
	    "x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" MS_SIGV4_EMPTY_HASH,
	.signed_headers = "host;my-header1;x-amz-date",
	.signature = "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
    },
    {
	.name = "post-x-www-form-urlencoded",
	.method = "POST",
	.path = "/",
	.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
		    {"Content-Length", "13"},
		    {"x-amz-content-sha256",
		     "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"}},
	.header_count = 3,
	.payload_hash = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
	.canonical_request =
	    "POST\n/\n\ncontent-length:13\ncontent-type:application/x-www-form-urlencoded\n"
	    "host:example.amazonaws.com\n"
	    "x-amz-content-sha256:"
	    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e\n"
	    "x-amz-date:20150830T123600Z\n\n"
	    "content-length;content-type;host;x-amz-content-sha256;x-amz-date\n"
	    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
	.signed_headers = "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
	.signature = "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    },
};

static void test_suite_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const struct vector *v = &vectors[i];
		struct ms_sigv4_request req = {
		    .method = v->method,
		    .host = SUITE_HOST,
		    .path = v->path,
		    .query = v->query,
		    .query_count = v->query_count,
		    .headers = v->headers,
		    .header_count = v->header_count,
		    .payload_hash = v->payload_hash,
		    .amz_date = SUITE_DATE,
		    .region = "us-east-1",
		    .service = "service",
		    .access_key = SUITE_AKID,
		    .secret_key = SUITE_SECRET,
		};
		struct ms_sigv4_result res;
		print_message("vector %s\n", v->name);
		assert_int_equal(ms_sigv4_sign(&req, &res), 0);
		assert_string_equal(res.canonical_request, v->canonical_request);
		assert_string_equal(res.signature, v->signature);
		char want[512];
		snprintf(want, sizeof(want),
			 "AWS4-HMAC-SHA256 " SUITE_SCOPE "SignedHeaders=%s, Signature=%s",
			 v->signed_headers, v->signature);
		assert_string_equal(res.authorization, want);
		ms_sigv4_result_fini(&res);
	}
}

/* The S3 developer guide's example: GET /test.txt on examplebucket, first 10 bytes. */
static void test_s3_doc_get_object(void **state)
{
	(void)state;
	struct ms_sigv4_header headers[] = {
	    {"Range", "bytes=0-9"},
	    {"x-amz-content-sha256", MS_SIGV4_EMPTY_HASH},
	};
	struct ms_sigv4_request req = {
	    .method = "GET",
	    .host = "examplebucket.s3.amazonaws.com",
	    .path = "/test.txt",
	    .headers = headers,
	    .header_count = 2,
	    .payload_hash = MS_SIGV4_EMPTY_HASH,
	    .amz_date = "20130524T000000Z",
	    .region = "us-east-1",
	    .service = "s3",
	    .access_key = "AKIAIOSFODNN7EXAMPLE",
	    .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	};
	struct ms_sigv4_result res;
	assert_int_equal(ms_sigv4_sign(&req, &res), 0);
	assert_string_equal(
	    res.canonical_request,
	    "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
	    "x-amz-content-sha256:" MS_SIGV4_EMPTY_HASH "\n"
	    "x-amz-date:20130524T000000Z\n\n"
	    "host;range;x-amz-content-sha256;x-amz-date\n" MS_SIGV4_EMPTY_HASH);
	assert_string_equal(
	    res.string_to_sign,
	    "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
	    "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
	assert_string_equal(res.signature,
			    "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	ms_sigv4_result_fini(&res);
}

static void test_bad_input(void **state)
{
	(void)state;
	struct ms_sigv4_request good = {
	    .method = "GET",
	    .host = SUITE_HOST,
	    .path = "/",
	    .payload_hash = MS_SIGV4_EMPTY_HASH,
	    .amz_date = SUITE_DATE,
	    .region = "us-east-1",
	    .service = "s3",
	    .access_key = SUITE_AKID,
	    .secret_key = SUITE_SECRET,
	};
	struct ms_sigv4_result res;
	assert_int_equal(ms_sigv4_sign(&good, &res), 0);
	ms_sigv4_result_fini(&res);

	struct ms_sigv4_request bad = good;
	bad.amz_date = "2015-08-30T12:36:00Z";
	assert_int_equal(ms_sigv4_sign(&bad, &res), -EINVAL);
	assert_null(res.authorization);
	bad = good;
	bad.path = "no-slash";
	assert_int_equal(ms_sigv4_sign(&bad, &res), -EINVAL);
	bad = good;
	bad.region = "us/east";
	assert_int_equal(ms_sigv4_sign(&bad, &res), -EINVAL);
	bad = good;
	bad.secret_key = "";
	assert_int_equal(ms_sigv4_sign(&bad, &res), -EINVAL);
	struct ms_sigv4_header injected[] = {{"x-amz-meta-a", "v\r\nevil: 1"}};
	bad = good;
	bad.headers = injected;
	bad.header_count = 1;
	assert_int_equal(ms_sigv4_sign(&bad, &res), -EINVAL);
	struct ms_sigv4_header host[] = {{"Host", "other"}};
	bad.headers = host;
	assert_int_equal(ms_sigv4_sign(&bad, &res), -EINVAL);
	struct ms_sigv4_param noname[] = {{"", "x"}};
	bad = good;
	bad.query = noname;
	bad.query_count = 1;
	assert_int_equal(ms_sigv4_sign(&bad, &res), -EINVAL);
}

static void test_encode_and_query(void **state)
{
	(void)state;
	char *s;
	assert_int_equal(ms_sigv4_uri_encode("a b/c+d~e%", true, &s), 0);
	assert_string_equal(s, "a%20b/c%2Bd~e%25");
	free(s);
	assert_int_equal(ms_sigv4_uri_encode("dir/x=y&z", false, &s), 0);
	assert_string_equal(s, "dir%2Fx%3Dy%26z");
	free(s);
	struct ms_sigv4_param params[] = {
	    {"prefix", "dir/"},
	    {"list-type", "2"},
	    {"uploads", NULL},
	    {"continuation-token", "a+b/c=="},
	};
	assert_int_equal(ms_sigv4_canonical_query(params, 4, &s), 0);
	assert_string_equal(
	    s, "continuation-token=a%2Bb%2Fc%3D%3D&list-type=2&prefix=dir%2F&uploads=");
	free(s);
	assert_int_equal(ms_sigv4_canonical_query(NULL, 0, &s), 0);
	assert_string_equal(s, "");
	free(s);

	char hex[MS_SIGV4_HEX_LEN + 1];
	ms_sigv4_sha256_hex("", 0, hex);
	assert_string_equal(hex, MS_SIGV4_EMPTY_HASH);
	ms_sigv4_sha256_hex("Param1=value1", 13, hex);
	assert_string_equal(hex,
			    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
	char date[MS_SIGV4_DATE_LEN + 1];
	assert_int_equal(ms_sigv4_format_date(1440938160, date), 0);
	assert_string_equal(date, SUITE_DATE);
}

static void check_target(const struct ms_s3_config *config, const char *key, const char *want_url,
			 const char *want_host, const char *want_path)
{
	struct ms_s3_target t;
	assert_int_equal(ms_s3_target_build(config, key, &t), 0);
	assert_string_equal(t.url, want_url);
	assert_string_equal(t.host, want_host);
	assert_string_equal(t.path, want_path);
	ms_s3_target_fini(&t);
}

static void test_addressing(void **state)
{
	(void)state;
	struct ms_s3_config path_style = {
	    .endpoint = "http://127.0.0.1:7480",
	    .bucket = "snaps",
	    .prefix = "team a/",
	};
	check_target(&path_style, "b1/memfile", "http://127.0.0.1:7480/snaps/team%20a/b1/memfile",
		     "127.0.0.1:7480", "/snaps/team a/b1/memfile");
	check_target(&path_style, NULL, "http://127.0.0.1:7480/snaps", "127.0.0.1:7480", "/snaps");

	struct ms_s3_config vhost = {
	    .endpoint = "https://s3.us-west-2.amazonaws.com/",
	    .bucket = "snaps",
	    .prefix = "p",
	    .virtual_host = true,
	};
	check_target(&vhost, "b1/memfile.header",
		     "https://snaps.s3.us-west-2.amazonaws.com/p/b1/memfile.header",
		     "snaps.s3.us-west-2.amazonaws.com", "/p/b1/memfile.header");
	check_target(&vhost, NULL, "https://snaps.s3.us-west-2.amazonaws.com/",
		     "snaps.s3.us-west-2.amazonaws.com", "/");
	struct ms_s3_config noprefix = vhost;
	noprefix.prefix = NULL;
	check_target(&noprefix, "k+1", "https://snaps.s3.us-west-2.amazonaws.com/k%2B1",
		     "snaps.s3.us-west-2.amazonaws.com", "/k+1");

	struct ms_s3_target t;
	struct ms_s3_config bad = path_style;
	bad.endpoint = "ftp://host";
	assert_int_equal(ms_s3_target_build(&bad, "k", &t), -EINVAL);
	bad.endpoint = "http://";
	assert_int_equal(ms_s3_target_build(&bad, "k", &t), -EINVAL);
	bad.endpoint = "http://host/some/path";
	assert_int_equal(ms_s3_target_build(&bad, "k", &t), -EINVAL);
	bad = path_style;
	bad.bucket = "a/b";
	assert_int_equal(ms_s3_target_build(&bad, "k", &t), -EINVAL);
	bad = path_style;
	bad.prefix = "../up";
	assert_int_equal(ms_s3_target_build(&bad, "k", &t), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_suite_vectors), cmocka_unit_test(test_s3_doc_get_object),
	    cmocka_unit_test(test_bad_input),	  cmocka_unit_test(test_encode_and_query),
	    cmocka_unit_test(test_addressing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
