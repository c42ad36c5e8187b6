/* buildfile.c - builds opened for reading (buildfile.h). */
#include "build/buildfile.h"
#include "util/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int ms_build_cache_init(struct ms_build_cache *c, struct ms_store *store, const char *cache_dir,
			const struct ms_diffstore_config *diffs)
{
	*c = (struct ms_build_cache){0};
	if (!store || !cache_dir || !*cache_dir)
		return -EINVAL;
	if (mkdir(cache_dir, 0700) && errno != EEXIST)
		return -errno;
	if (!(c->cache_dir = strdup(cache_dir)))
		return -ENOMEM;
	int err;
	struct ms_diffstore_config dcfg = diffs ? *diffs : (struct ms_diffstore_config){0};
	dcfg.cache_dir = c->cache_dir;
	if (!(c->diffs = ms_diffstore_new(&dcfg, &err))) {
		free(c->cache_dir);
		c->cache_dir = NULL;
		return err;
	}
	c->store = store;
	c->storage = (struct ms_build_storage){.store = store,
					       .diffs = c->diffs,
					       .cache_dir = c->cache_dir,
					       .data = MS_ARTIFACT_MEMFILE};
	return 0;
}

void ms_build_cache_fini(struct ms_build_cache *c)
{
	if (c->diffs)
		ms_diffstore_free(c->diffs);
	free(c->cache_dir);
	*c = (struct ms_build_cache){0};
}

struct ms_layered *ms_build_cache_file(struct ms_build_cache *c, struct ms_header *header,
				       ms_layered_resolve_fn resolve, void *ctx)
{
	if (!resolve) {
		resolve = ms_build_storage_resolve;
		ctx = &c->storage;
	}
	return ms_layered_new(header, resolve, ctx);
}

struct ms_build_file *ms_build_file_new(struct ms_store *store, struct ms_header *header,
					const char *cache_dir, int *err)
{
	*err = header ? -EINVAL : -ENOMEM;
	if (!header)
		return NULL;
	struct ms_build_file *bf = calloc(1, sizeof(*bf));
	if (!bf) {
		*err = -ENOMEM;
		ms_header_free(header);
		return NULL;
	}
	if ((*err = ms_build_cache_init(&bf->cache, store, cache_dir, NULL))) {
		ms_header_free(header);
		free(bf);
		return NULL;
	}
	if (!(bf->file = ms_build_cache_file(&bf->cache, header, NULL, NULL))) {
		*err = -ENOMEM; /* the header went with it */
		ms_build_file_free(bf);
		return NULL;
	}
	*err = 0;
	return bf;
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
	ms_build_cache_fini(&bf->cache);
	free(bf);
}
