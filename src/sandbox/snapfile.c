/* snapfile.c - build and check snapfiles (layout in snapfile.h). */
#include "sandbox/snapfile.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const char ms_snap_magic[8] = "MSSNAPF";

int ms_snapfile_build(enum ms_backend_id backend, uint64_t mem_size,
		      const struct ms_snap_part *parts, unsigned count, uint8_t **out, size_t *len)
{
	if (count > MS_SNAPFILE_MAX_SECTIONS)
		return -EINVAL;
	size_t total = 32 + 8;
	for (unsigned i = 0; i < count; i++)
		total += 8 + ((parts[i].length + 7u) & ~7u);
	uint8_t *buf = calloc(1, total);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, ms_snap_magic, 8);
	uint32_t version = MS_SNAPFILE_VERSION, be = backend, n = count;
	memcpy(buf + 8, &version, 4);
	memcpy(buf + 12, &be, 4);
	memcpy(buf + 16, &mem_size, 8);
	memcpy(buf + 24, &n, 4);
	size_t off = 32;
	for (unsigned i = 0; i < count; i++) {
		memcpy(buf + off, &parts[i].type, 4);
		memcpy(buf + off + 4, &parts[i].length, 4);
		memcpy(buf + off + 8, parts[i].data, parts[i].length);
		off += 8 + ((parts[i].length + 7u) & ~7u);
	}
	uint64_t sum = XXH64(buf, off, 0);
	memcpy(buf + off, &sum, 8);
	*out = buf;
	*len = total;
	return 0;
}

int ms_snapfile_parse(const void *blob, size_t len, enum ms_backend_id backend, uint64_t mem_size,
		      struct ms_snap_part parts[MS_SNAPFILE_MAX_SECTIONS], unsigned *count)
{
	const uint8_t *b = blob;
	if (len < 40 || memcmp(b, ms_snap_magic, 8) != 0) {
		ms_warn("sandbox", "snapfile: truncated or not a snapfile");
		return MS_ECORRUPT;
	}
	uint64_t sum, stored_size;
	memcpy(&sum, b + len - 8, 8);
	if (XXH64(b, len - 8, 0) != sum) {
		ms_warn("sandbox", "snapfile: checksum mismatch (corrupt or truncated)");
		return MS_ECHECKSUM;
	}
	uint32_t version, be, n, reserved;
	memcpy(&version, b + 8, 4);
	memcpy(&be, b + 12, 4);
	memcpy(&stored_size, b + 16, 8);
	memcpy(&n, b + 24, 4);
	memcpy(&reserved, b + 28, 4);
	if (version != MS_SNAPFILE_VERSION || reserved || n > MS_SNAPFILE_MAX_SECTIONS)
		return MS_ECORRUPT;
	if (be != (uint32_t)backend) {
		ms_warn("sandbox", "snapfile: written by the %s backend, restoring on %s",
			be == MS_BACKEND_KVM	? "kvm"
			: be == MS_BACKEND_PROC ? "proc"
						: "unknown",
			backend == MS_BACKEND_KVM ? "kvm" : "proc");
		return MS_EBACKEND;
	}
	if (stored_size != mem_size) {
		ms_warn("sandbox", "snapfile: for %llu bytes of memory, not %llu",
			(unsigned long long)stored_size, (unsigned long long)mem_size);
		return -EINVAL;
	}
	size_t off = 32, end = len - 8;
	for (uint32_t i = 0; i < n; i++) {
		if (end - off < 8)
			return MS_ECORRUPT;
		memcpy(&parts[i].type, b + off, 4);
		memcpy(&parts[i].length, b + off + 4, 4);
		size_t padded = ((size_t)parts[i].length + 7u) & ~(size_t)7u;
		if (padded > end - off - 8)
			return MS_ECORRUPT;
		parts[i].data = b + off + 8;
		off += 8 + padded;
	}
	if (off != end)
		return MS_ECORRUPT;
	*count = n;
	return 0;
}

const struct ms_snap_part *ms_snapfile_find(const struct ms_snap_part *parts, unsigned count,
					    uint32_t type)
{
	for (unsigned i = 0; i < count; i++)
		if (parts[i].type == type)
			return &parts[i];
	return NULL;
}
