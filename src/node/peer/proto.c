/*
 * proto.c - the peer request parser and URI builder (proto.h). Pure: every
 * input is a NUL-terminated string from outside; nothing is trusted, nothing
 * is allocated, and a request either parses whole or is refused whole.
 */
#include "node/peer/proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MS_PEER_PREFIX "/peer/v1/builds/"

static const char *const ms_peer_status_names[] = {
    [MS_PEER_AVAILABLE] = "available",
    [MS_PEER_NOT_AVAILABLE] = "not_available",
    [MS_PEER_USE_STORAGE] = "use_storage",
};

const char *ms_peer_status_name(enum ms_peer_status status)
{
	if ((unsigned)status > MS_PEER_USE_STORAGE)
		return "not_available";
	return ms_peer_status_names[status];
}

int ms_peer_status_parse(const char *text, enum ms_peer_status *out)
{
	for (unsigned i = 0; i <= MS_PEER_USE_STORAGE; i++) {
		if (text && strcmp(text, ms_peer_status_names[i]) == 0) {
			*out = (enum ms_peer_status)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *ms_peer_file_name(enum ms_peer_file file)
{
	return file == MS_PEER_FILE_ROOTFS ? "rootfs.ext4" : "memfile";
}

static int ms_peer_refuse(unsigned status, const char *message, unsigned *http_status,
			  const char **why)
{
	*http_status = status;
	*why = message;
	return -EINVAL;
}

/* Decimal digits only, [start, end), at most 20 digits, no overflow. */
static bool ms_peer_parse_u64(const char *start, const char *end, uint64_t *out)
{
	if (start == end || end - start > 20)
		return false;
	uint64_t value = 0;
	for (const char *p = start; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		unsigned digit = (unsigned)(*p - '0');
		if (value > (UINT64_MAX - digit) / 10)
			return false;
		value = value * 10 + digit;
	}
	*out = value;
	return true;
}

/* "offset=O&length=L" in either order, each once, nothing else. */
static int ms_peer_parse_range(const char *query, struct ms_peer_request *out,
			       unsigned *http_status, const char **why)
{
	bool have_offset = false, have_length = false;
	const char *p = query;
	while (*p) {
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		if (!eq)
			return ms_peer_refuse(400, "query: a parameter without a value",
					      http_status, why);
		size_t key_len = (size_t)(eq - p);
		uint64_t value;
		if (!ms_peer_parse_u64(eq + 1, end, &value))
			return ms_peer_refuse(400,
					      "query: offset and length are decimal digits only",
					      http_status, why);
		if (key_len == 6 && memcmp(p, "offset", 6) == 0 && !have_offset) {
			out->offset = value;
			have_offset = true;
		} else if (key_len == 6 && memcmp(p, "length", 6) == 0 && !have_length) {
			out->length = value;
			have_length = true;
		} else {
			return ms_peer_refuse(400, "query: only offset and length, each once",
					      http_status, why);
		}
		if (!amp)
			break;
		p = amp + 1;
		if (!*p)
			return ms_peer_refuse(400, "query: trailing '&'", http_status, why);
	}
	if (!have_offset || !have_length)
		return ms_peer_refuse(400, "a data request needs offset and length", http_status,
				      why);
	if (out->offset % MS_PEER_ALIGN)
		return ms_peer_refuse(400, "offset is not 4096-aligned", http_status, why);
	if (out->length == 0 || out->length > MS_PEER_RANGE_MAX)
		return ms_peer_refuse(400, "length is 0 or over the range cap", http_status, why);
	if (out->offset > UINT64_MAX - out->length)
		return ms_peer_refuse(400, "offset + length overflows", http_status, why);
	return 0;
}

int ms_peer_request_parse(const char *method, const char *uri, struct ms_peer_request *out,
			  unsigned *http_status, const char **why)
{
	struct ms_peer_request req = {0};
	if (!method || !uri)
		return ms_peer_refuse(400, "no request line", http_status, why);
	if (strcmp(method, "GET") == 0)
		req.head = false;
	else if (strcmp(method, "HEAD") == 0)
		req.head = true;
	else
		return ms_peer_refuse(405, "only GET and HEAD", http_status, why);
	size_t uri_len = strnlen(uri, MS_PEER_URI_MAX + 1);
	if (uri_len > MS_PEER_URI_MAX)
		return ms_peer_refuse(400, "request URI too long", http_status, why);
	if (strncmp(uri, MS_PEER_PREFIX, strlen(MS_PEER_PREFIX)) != 0)
		return ms_peer_refuse(404, "no such endpoint", http_status, why);
	const char *p = uri + strlen(MS_PEER_PREFIX);
	char id[MS_UUID_STR_LEN];
	if (strnlen(p, MS_UUID_STR_LEN - 1) < MS_UUID_STR_LEN - 1)
		return ms_peer_refuse(400, "bad build id", http_status, why);
	memcpy(id, p, MS_UUID_STR_LEN - 1);
	id[MS_UUID_STR_LEN - 1] = '\0';
	if (ms_uuid_parse(id, &req.build_id) || ms_uuid_is_nil(&req.build_id))
		return ms_peer_refuse(400, "bad build id", http_status, why);
	p += MS_UUID_STR_LEN - 1;
	const char *query = strchr(p, '?');
	size_t rest_len = query ? (size_t)(query - p) : strlen(p);
	if (query)
		query++;
	/* the rest of the path: "", "/{file}.header", "/{file}", "/snapfile", "/metadata.json",
	 * "/checksums" */
	static const struct {
		const char *suffix;
		enum ms_peer_op op;
		enum ms_peer_file file;
	} routes[] = {
	    {"", MS_PEER_OP_STATUS, MS_PEER_FILE_MEMFILE},
	    {"/memfile.header", MS_PEER_OP_HEADER, MS_PEER_FILE_MEMFILE},
	    {"/rootfs.ext4.header", MS_PEER_OP_HEADER, MS_PEER_FILE_ROOTFS},
	    {"/memfile", MS_PEER_OP_DATA, MS_PEER_FILE_MEMFILE},
	    {"/rootfs.ext4", MS_PEER_OP_DATA, MS_PEER_FILE_ROOTFS},
	    {"/snapfile", MS_PEER_OP_SNAPFILE, MS_PEER_FILE_MEMFILE},
	    {"/metadata.json", MS_PEER_OP_METADATA, MS_PEER_FILE_MEMFILE},
	    {"/checksums", MS_PEER_OP_CHECKSUMS, MS_PEER_FILE_MEMFILE},
	};
	bool found = false;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strlen(routes[i].suffix) == rest_len &&
		    memcmp(routes[i].suffix, p, rest_len) == 0) {
			req.op = routes[i].op;
			req.file = routes[i].file;
			found = true;
			break;
		}
	}
	if (!found)
		return ms_peer_refuse(404, "no such endpoint", http_status, why);
	if (req.op == MS_PEER_OP_DATA) {
		int err = ms_peer_parse_range(query ? query : "", &req, http_status, why);
		if (err)
			return err;
	} else if (query && *query) {
		return ms_peer_refuse(400, "this endpoint takes no query", http_status, why);
	}
	*out = req;
	return 0;
}

int ms_peer_request_uri(const struct ms_peer_request *req, char *buf, size_t size)
{
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&req->build_id, id);
	const char *file = ms_peer_file_name(req->file);
	int n;
	switch (req->op) {
	case MS_PEER_OP_HEADER:
		n = snprintf(buf, size, MS_PEER_PREFIX "%s/%s.header", id, file);
		break;
	case MS_PEER_OP_DATA:
		n = snprintf(buf, size, MS_PEER_PREFIX "%s/%s?offset=%llu&length=%llu", id, file,
			     (unsigned long long)req->offset, (unsigned long long)req->length);
		break;
	case MS_PEER_OP_SNAPFILE:
		n = snprintf(buf, size, MS_PEER_PREFIX "%s/snapfile", id);
		break;
	case MS_PEER_OP_METADATA:
		n = snprintf(buf, size, MS_PEER_PREFIX "%s/metadata.json", id);
		break;
	case MS_PEER_OP_CHECKSUMS:
		n = snprintf(buf, size, MS_PEER_PREFIX "%s/checksums", id);
		break;
	case MS_PEER_OP_STATUS:
	default:
		n = snprintf(buf, size, MS_PEER_PREFIX "%s", id);
		break;
	}
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
