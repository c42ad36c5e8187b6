/*
 * artifact.h - object names of a build's artifacts, as E2B names them:
 * "{build_id}/memfile", "{build_id}/memfile.header", "{build_id}/snapfile",
 * "{build_id}/metadata.json", "{build_id}/rootfs.ext4"; compressed data gets
 * ".zstd" or ".lz4" (headers never do). memsnap adds "{build_id}/checksums"
 * (storage/checksums.h), which E2B does not read.
 */
#ifndef MS_STORAGE_ARTIFACT_H
#define MS_STORAGE_ARTIFACT_H

#include "storage/frametable.h"
#include "util/uuid.h"

#include <stdbool.h>
#include <stddef.h>

enum ms_artifact {
	MS_ARTIFACT_MEMFILE,
	MS_ARTIFACT_MEMFILE_HEADER,
	MS_ARTIFACT_ROOTFS,
	MS_ARTIFACT_ROOTFS_HEADER,
	MS_ARTIFACT_SNAPFILE,
	MS_ARTIFACT_METADATA,
	MS_ARTIFACT_CHECKSUMS, /* memsnap's own: "{build_id}/checksums" (storage/checksums.h) */
};

#define MS_ARTIFACT_KEY_MAX 64

/* Writes the key into buf (MS_ARTIFACT_KEY_MAX bytes). Compression applies to data only. */
int ms_artifact_key(char *buf, size_t size, const ms_uuid *build_id, enum ms_artifact artifact,
		    enum ms_compression compression);

/* The artifact's name in a key: "memfile" of "{build_id}/memfile" (key itself without '/'). */
const char *ms_artifact_name_of(const char *key);

#endif
