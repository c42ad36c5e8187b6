/*
 * proto.h - the peer protocol: what one node asks another for, as a pure
 * request parser shared by the server (server.c), its fuzz target and the
 * client (client.c), which builds the same paths.
 *
 * Requests (GET or HEAD; "Authorization: Bearer TOKEN"; {id} a canonical
 * build uuid, never nil; {file} "memfile" or "rootfs.ext4"):
 *
 *   path                                            | answer when available (200)
 *   ------------------------------------------------+----------------------------------------
 *   /peer/v1/builds/{id}                            | JSON: status, data sizes, incomplete
 *   /peer/v1/builds/{id}/{file}.header              | the DURABLE header, serialized for peers
 *   /peer/v1/builds/{id}/{file}?offset=O&length=L   | L bytes of the build's own data at O,
 *                                                   | in its uncompressed packed space
 *   /peer/v1/builds/{id}/snapfile                   | the snapfile
 *   /peer/v1/builds/{id}/metadata.json              | the build's metadata
 *   /peer/v1/builds/{id}/checksums                  | the checksum table of its data
 *                                                   | (storage/checksums.h: "memfile",
 *                                                   | its uncompressed packed space)
 *
 * Every answer carries "X-Memsnap-Peer: available | not_available |
 * use_storage"; non-200 answers have a JSON body {"status", "error"}:
 *
 *   HTTP | X-Memsnap-Peer | when
 *   -----+----------------+----------------------------------------------------
 *   200  | available      | the bytes follow
 *   400  | not_available  | malformed request: path, id, query, unaligned or
 *        |                | empty or oversized range (> MS_PEER_RANGE_MAX), a
 *        |                | range past the data's end
 *   401  | not_available  | missing or wrong bearer token
 *   404  | not_available  | unknown build, or a file this build does not have
 *   405  | not_available  | a method other than GET/HEAD
 *   410  | use_storage    | the build is uploaded: read the object store
 *   503  | not_available  | the durable header did not come within the wait
 *        |                | (the compare is still running), or stopping; the
 *        |                | checksums before the drain has written the diff
 *
 * Range rules (the parser checks what it can alone; the server checks the
 * rest against the build): offset and length are decimal digits only (no
 * sign, at most 20 digits, no overflow), each given once, nothing else in the
 * query; offset % 4096 == 0; 0 < length <= MS_PEER_RANGE_MAX; length % 4096
 * == 0 unless offset + length is the data's size; offset + length <= size.
 *
 * Answer headers besides the status: "X-Memsnap-Data-Size" (data answers:
 * the build's data size), "X-Memsnap-Incomplete: 1" (header answers while the
 * upload is in flight; V4/V5 also carry the flag in the header bytes).
 */
#ifndef MS_PEER_PROTO_H
#define MS_PEER_PROTO_H

#include "util/uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_PEER_RANGE_MAX      (16u << 20)
#define MS_PEER_ALIGN	       4096u
#define MS_PEER_URI_MAX	       512u
#define MS_PEER_STATUS_HDR     "X-Memsnap-Peer"
#define MS_PEER_SIZE_HDR       "X-Memsnap-Data-Size"
#define MS_PEER_INCOMPLETE_HDR "X-Memsnap-Incomplete"

enum ms_peer_status {
	MS_PEER_AVAILABLE = 0,
	MS_PEER_NOT_AVAILABLE,
	MS_PEER_USE_STORAGE,
};

enum ms_peer_op {
	MS_PEER_OP_STATUS = 0,
	MS_PEER_OP_HEADER,
	MS_PEER_OP_DATA,
	MS_PEER_OP_SNAPFILE,
	MS_PEER_OP_METADATA,
	MS_PEER_OP_CHECKSUMS,
};

enum ms_peer_file {
	MS_PEER_FILE_MEMFILE = 0,
	MS_PEER_FILE_ROOTFS,
};

struct ms_peer_request {
	enum ms_peer_op op;
	bool head; /* HEAD: the answer without its body */
	ms_uuid build_id;
	enum ms_peer_file file;	 /* HEADER, DATA */
	uint64_t offset, length; /* DATA */
};

/*
 * Parses one request line: method and the raw request URI (path and query, as
 * sent). 0 and *out filled, or a negative errno with *http_status (400, 404,
 * 405) and *why (a static string). Pure: no I/O, no allocation.
 */
int ms_peer_request_parse(const char *method, const char *uri, struct ms_peer_request *out,
			  unsigned *http_status, const char **why);

/* "available", "not_available", "use_storage"; parse: -EINVAL for anything else. */
const char *ms_peer_status_name(enum ms_peer_status status);
int ms_peer_status_parse(const char *text, enum ms_peer_status *out);
/* "memfile", "rootfs.ext4". */
const char *ms_peer_file_name(enum ms_peer_file file);

/* Writes the request URI for req (no scheme or host) into buf. 0 or -ENAMETOOLONG. */
int ms_peer_request_uri(const struct ms_peer_request *req, char *buf, size_t size);

#endif
