/* buildfile.c - a build opened for reading (buildfile.h). */
#include "build/buildfile.h"
#include "util/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct ms_build_file *ms_build_file_new(struct ms_store *store, struct ms_header *header,
					const char *cache_dir, int *err)
{
	*err = header ? -EINVAL : -ENOMEM;
	if (!store || !header || !cache_dir || !*cache_dir)
		goto out_header;
	if (mkdir(cache_dir, 0700) && errno != EEXIST) {
		*err = -errno;
		goto out_header;
	}
	*err = -ENOMEM;
	struct ms_build_file *bf = calloc(1, sizeof(*bf));
	if (!bf)
		goto out_header;
	if (!(bf->cache_dir = strdup(cache_dir)))
		goto out_bf;
	struct ms_diffstore_config dcfg = {.cache_dir = bf->cache_dir};
	if (!(bf->diffs = ms_diffstore_new(&dcfg, err)))
		goto out_bf;
	bf->store = store;
	bf->storage = (struct ms_build_storage){.store = store,
						.diffs = bf->diffs,
						.cache_dir = bf->cache_dir,
						.data = MS_ARTIFACT_MEMFILE};
	bf->file = ms_layered_new(header, ms_build_storage_resolve, &bf->storage);
	if (!bf->file) { /* the header went with it */
		*err = -ENOMEM;
		ms_build_file_free(bf);
		return NULL;
	}
	*err = 0;
	return bf;
out_bf:
	ms_build_file_free(bf);
out_header:
	ms_header_free(header);
	return NULL;
}

struct ms_build_file *ms_build_file_open(struct ms_store *store, const ms_uuid *build_id,
					 const char *cache_dir, int *err)
{
	struct ms_header *header;
	*err = store && build_id ? ms_build_storage_load_header(store, build_id,
								MS_ARTIFACT_MEMFILE_HEADER, &header)
				 : -EINVAL;
	if (*err)
		return NULL;
	return ms_build_file_new(store, header, cache_dir, err);
}

void ms_build_file_free(struct ms_build_file *bf)
{
	if (!bf)
		return;
	ms_layered_free(bf->file);
	ms_diffstore_free(bf->diffs);
	free(bf->cache_dir);
	free(bf);
}
