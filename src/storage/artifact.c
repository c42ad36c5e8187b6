/* artifact.c - E2B's object names for a build's artifacts. */
#include "storage/artifact.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int ms_artifact_key(char *buf, size_t size, const ms_uuid *build_id, enum ms_artifact artifact,
		    enum ms_compression compression)
{
	static const char *const names[] = {
	    [MS_ARTIFACT_MEMFILE] = "memfile",
	    [MS_ARTIFACT_MEMFILE_HEADER] = "memfile.header",
	    [MS_ARTIFACT_ROOTFS] = "rootfs.ext4",
	    [MS_ARTIFACT_ROOTFS_HEADER] = "rootfs.ext4.header",
	    [MS_ARTIFACT_SNAPFILE] = "snapfile",
	    [MS_ARTIFACT_METADATA] = "metadata.json",
	    [MS_ARTIFACT_CHECKSUMS] = "checksums",
	};
	if ((unsigned)artifact > MS_ARTIFACT_CHECKSUMS)
		return -EINVAL;
	bool data = artifact == MS_ARTIFACT_MEMFILE || artifact == MS_ARTIFACT_ROOTFS;
	const char *suffix = "";
	if (data && compression == MS_COMPRESS_ZSTD)
		suffix = ".zstd";
	else if (data && compression == MS_COMPRESS_LZ4)
		suffix = ".lz4";
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(build_id, id);
	int n = snprintf(buf, size, "%s/%s%s", id, names[artifact], suffix);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

const char *ms_artifact_name_of(const char *key)
{
	const char *slash = strrchr(key, '/');
	return slash ? slash + 1 : key;
}
