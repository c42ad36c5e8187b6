/*
 * buildfile.h - builds opened for reading: the one set-up of object store + diff store +
 * build storage + layered file that the command line, the demos, the public facade
 * (memsnap_build_open) and memsnapd share.
 *
 * A build cache (struct ms_build_cache) is the storage half: the diff store rooted at a
 * cache dir and the build storage over it and a store; memsnapd keeps one for all its
 * builds and opens each build's layered file from it (ms_build_cache_file, resolving through
 * its peers). A build file (struct ms_build_file) is one build over a cache of its own.
 *
 * The store is borrowed and must outlive both. Their parts are public for callers that hand
 * them on (a pause over a build file takes bf->cache.diffs and bf->file).
 *
 * Thread-safety: as the layered file's and the diff store's; init/open and fini/free are
 * not concurrent with reads.
 */
#ifndef MS_BUILD_BUILDFILE_H
#define MS_BUILD_BUILDFILE_H

#include "build/layered.h"
#include "build/storage.h"
#include "cache/diffstore.h"
#include "storage/store.h"

struct ms_build_cache {
	struct ms_store *store;		 /* borrowed */
	struct ms_diffstore *diffs;	 /* owned */
	struct ms_build_storage storage; /* the default resolver's context */
	char *cache_dir;		 /* owned copy */
};

/*
 * Builds of store cached under cache_dir (created if missing), the diff store tuned by
 * diffs (NULL: its defaults; its cache_dir is cache_dir's). 0, or an error (-EINVAL, the
 * directory's, -ENOMEM, the diff store's) with *c left needing no fini.
 */
int ms_build_cache_init(struct ms_build_cache *c, struct ms_store *store, const char *cache_dir,
			const struct ms_diffstore_config *diffs);
/* Frees the diff store (after every layered file over it). A zeroed *c is ignored. */
void ms_build_cache_fini(struct ms_build_cache *c);
/*
 * A layered file over header (ownership taken, also on failure) whose builds resolve
 * through resolve(ctx), or through c's build storage when resolve is NULL. NULL: -ENOMEM.
 */
struct ms_layered *ms_build_cache_file(struct ms_build_cache *c, struct ms_header *header,
				       ms_layered_resolve_fn resolve, void *ctx);

struct ms_build_file {
	struct ms_build_cache cache; /* its own */
	struct ms_layered *file;     /* owned */
};

/*
 * The memory file of build_id, read through its header "{build_id}/memfile.header" from
 * store, its pages cached under cache_dir (created if missing). NULL on error with *err:
 * MS_ENOTFOUND (no such build), MS_ECORRUPT (a bad header), -ENOMEM, an I/O error.
 */
struct ms_build_file *ms_build_file_open(struct ms_store *store, const ms_uuid *build_id,
					 const char *cache_dir, int *err);
/*
 * The same over a header the caller has (ownership taken, also on failure; NULL is taken
 * for a constructor that failed: -ENOMEM).
 */
struct ms_build_file *ms_build_file_new(struct ms_store *store, struct ms_header *header,
					const char *cache_dir, int *err);
void ms_build_file_free(struct ms_build_file *bf);

#endif
