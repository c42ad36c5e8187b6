/*
 * buildfile.h - a build opened for reading: the one set-up of object store + diff store +
 * build storage + layered file that the command line, the demos and the public facade
 * (memsnap_build_open) share.
 *
 * The build file owns its diff store (rooted at cache_dir) and the layered file; the store
 * is borrowed and must outlive it. Its parts are public for callers that hand them on (a
 * pause over this file takes bf->diffs and bf->file).
 *
 * Thread-safety: as the layered file's; open and free are not concurrent with reads.
 */
#ifndef MS_BUILD_BUILDFILE_H
#define MS_BUILD_BUILDFILE_H

#include "build/layered.h"
#include "build/storage.h"
#include "cache/diffstore.h"
#include "storage/store.h"

struct ms_build_file {
	struct ms_store *store;		 /* borrowed */
	struct ms_diffstore *diffs;	 /* owned */
	struct ms_build_storage storage; /* the layered file's resolver context */
	struct ms_layered *file;	 /* owned */
	char *cache_dir;		 /* owned copy */
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
