/* lib_header.c - the public header codec (memsnap/header.h) over header/. */
#include "header/header.h"
#include "header/serialize.h"
#include "memsnap/header.h"
#include "util/uuid.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

static_assert(MEMSNAP_BUILD_ID_LEN == MS_UUID_STR_LEN, "a build id's text");

/* The public handle is the internal header. */
static const struct ms_header *ms_lib_header(const memsnap_header *h)
{
	return (const struct ms_header *)h;
}

int memsnap_header_parse(const void *buf, size_t len, memsnap_header **out)
{
	struct ms_header *h = NULL;
	*out = NULL;
	if (!buf && len)
		return -EINVAL;
	int err = ms_header_deserialize(buf, len, &h);
	if (!err)
		*out = (memsnap_header *)h;
	return err;
}

int memsnap_header_serialize(const memsnap_header *h, unsigned version, void **buf, size_t *len)
{
	uint8_t *out = NULL;
	int err = ms_header_serialize(ms_lib_header(h), version, false, &out, len);
	*buf = err ? NULL : out;
	return err;
}

void memsnap_header_free(memsnap_header *h)
{
	ms_header_free((struct ms_header *)h);
}

unsigned memsnap_header_version(const memsnap_header *h)
{
	return (unsigned)ms_lib_header(h)->meta.version;
}

uint64_t memsnap_header_size(const memsnap_header *h)
{
	return ms_lib_header(h)->meta.size;
}

uint64_t memsnap_header_block_size(const memsnap_header *h)
{
	return ms_lib_header(h)->meta.block_size;
}

uint64_t memsnap_header_generation(const memsnap_header *h)
{
	return ms_lib_header(h)->meta.generation;
}

void memsnap_header_build_id(const memsnap_header *h, char out[MEMSNAP_BUILD_ID_LEN])
{
	ms_uuid_format(&ms_lib_header(h)->meta.build_id, out);
}

size_t memsnap_header_mapping_count(const memsnap_header *h)
{
	return ms_lib_header(h)->mappings.count;
}

int memsnap_header_mapping(const memsnap_header *h, size_t i, struct memsnap_mapping *out)
{
	const struct ms_mappings *m = &ms_lib_header(h)->mappings;
	if (i >= m->count)
		return -ERANGE;
	out->offset = m->entries[i].offset;
	out->length = m->entries[i].length;
	out->storage_offset = m->entries[i].storage_offset;
	ms_uuid_format(&m->entries[i].build_id, out->build_id);
	return 0;
}

int memsnap_header_lookup(const memsnap_header *h, uint64_t off, struct memsnap_mapping *out)
{
	ms_uuid id;
	uint64_t in_build, left;
	int err = ms_header_lookup(ms_lib_header(h), off, &id, &in_build, &left);
	if (err)
		return err;
	out->offset = off;
	out->length = left;
	out->storage_offset = in_build;
	ms_uuid_format(&id, out->build_id);
	return 0;
}
