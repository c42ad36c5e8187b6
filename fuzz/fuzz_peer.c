/*
 * fuzz_peer.c - libFuzzer target for the peer protocol's pure parts
 * (src/peer/proto.c, src/peer/registry.c). Input: "METHOD\nURI" (a missing
 * part is empty); the whole input is also parsed as a registry record.
 * Whatever the input, nothing may crash, and the answers keep their promises:
 * a parsed request names a known op and a non-nil build; a data request is
 * 4096-aligned, non-empty, within the cap and does not overflow; the URI built
 * from it parses back to the same request; a refusal is 400, 404 or 405 with
 * a reason; a parsed record names a non-nil build and a NUL-terminated address.
 */
#include "node/peer/proto.h"
#include "node/peer/registry.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_peer_record rec;
	if (ms_peer_record_parse(data, size, &rec) == 0 &&
	    (ms_uuid_is_nil(&rec.build_id) ||
	     strnlen(rec.address, sizeof(rec.address)) == sizeof(rec.address)))
		abort();
	char *copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	char *method = copy, *uri = "";
	char *nl = memchr(copy, '\n', size);
	if (nl) {
		*nl = '\0';
		uri = nl + 1;
	}
	struct ms_peer_request req;
	unsigned status = 0;
	const char *why = NULL;
	if (ms_peer_request_parse(method, uri, &req, &status, &why) == 0) {
		if ((unsigned)req.op > MS_PEER_OP_CHECKSUMS || ms_uuid_is_nil(&req.build_id))
			abort();
		if (req.op == MS_PEER_OP_DATA &&
		    (req.offset % MS_PEER_ALIGN || req.length == 0 ||
		     req.length > MS_PEER_RANGE_MAX || req.offset > UINT64_MAX - req.length))
			abort();
		char built[MS_PEER_URI_MAX + 1];
		struct ms_peer_request back;
		if (ms_peer_request_uri(&req, built, sizeof(built)) ||
		    ms_peer_request_parse("GET", built, &back, &status, &why) ||
		    back.op != req.op || !ms_uuid_eq(&back.build_id, &req.build_id))
			abort();
		if ((req.op == MS_PEER_OP_DATA || req.op == MS_PEER_OP_HEADER) &&
		    back.file != req.file)
			abort();
		if (req.op == MS_PEER_OP_DATA &&
		    (back.offset != req.offset || back.length != req.length))
			abort();
	} else if ((status != 400 && status != 404 && status != 405) || !why) {
		abort();
	}
	free(copy);
	return 0;
}
