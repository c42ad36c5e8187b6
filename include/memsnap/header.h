/*
 * memsnap/header.h - the snapshot header codec (libmemsnap-header; no I/O).
 *
 * A header maps a memory image [0, size) onto builds: sorted, contiguous mappings
 * {offset, length, build id, storage offset}. Formats V3, V4 and V5, byte-compatible with
 * E2B's. Every parsed header is validated; bad input gets MEMSNAP_ECORRUPT (or
 * MEMSNAP_EVERSION) and nothing is allocated.
 */
#ifndef MEMSNAP_HEADER_H
#define MEMSNAP_HEADER_H

#include "memsnap/memsnap.h"

#include <stddef.h>
#include <stdint.h>

#define MEMSNAP_BUILD_ID_LEN 37 /* a build id as text, with its NUL */

typedef struct memsnap_header memsnap_header;

struct memsnap_mapping {
	uint64_t offset;		     /* in the image */
	uint64_t length;		     /* bytes */
	uint64_t storage_offset;	     /* in the build's data */
	char build_id[MEMSNAP_BUILD_ID_LEN]; /* all zeros: reads as zeros, never stored */
};

/* Parses len bytes of a serialized header into *out (free with memsnap_header_free). */
int memsnap_header_parse(const void *buf, size_t len, memsnap_header **out);
/* Serializes h as version (3, 4, 5; 0: its own) into *buf (malloc'd, the caller frees). */
int memsnap_header_serialize(const memsnap_header *h, unsigned version, void **buf, size_t *len);
void memsnap_header_free(memsnap_header *h);

unsigned memsnap_header_version(const memsnap_header *h);
uint64_t memsnap_header_size(const memsnap_header *h);	     /* of the image, bytes */
uint64_t memsnap_header_block_size(const memsnap_header *h); /* 4 KiB or 2 MiB */
uint64_t memsnap_header_generation(const memsnap_header *h);
void memsnap_header_build_id(const memsnap_header *h, char out[MEMSNAP_BUILD_ID_LEN]);
size_t memsnap_header_mapping_count(const memsnap_header *h);
/* The i-th mapping; -ERANGE past the end. */
int memsnap_header_mapping(const memsnap_header *h, size_t i, struct memsnap_mapping *out);
/* The mapping that holds image offset off, shifted to start at off; -ERANGE outside. */
int memsnap_header_lookup(const memsnap_header *h, uint64_t off, struct memsnap_mapping *out);

#endif
