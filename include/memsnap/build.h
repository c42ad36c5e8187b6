/*
 * memsnap/build.h - a build opened from a store: its memory image read through its header,
 * layer by layer, each page fetched once and cached under a directory (libmemsnap).
 *
 *   memsnap_build *b = memsnap_build_open("file:///srv/store", id, "/var/cache/ms", &err);
 *   memsnap_layered_read(memsnap_build_file(b), buf, offset, len);
 *   memsnap_build_serve(b, "/run/vm1.uffd", NULL, &err);   (a page server over it)
 */
#ifndef MEMSNAP_BUILD_H
#define MEMSNAP_BUILD_H

#include "memsnap/header.h"
#include "memsnap/pageserver.h"
#include "memsnap/store.h"

typedef struct memsnap_build memsnap_build;
typedef struct memsnap_layered memsnap_layered;

/*
 * Opens build_id (text) of the store at uri (file:// only needs no options: for s3://
 * use memsnap_build_open_in), caching under cache_dir (created if missing). NULL on error
 * with *err: MEMSNAP_ENOTFOUND, MEMSNAP_ECORRUPT, -EINVAL (a bad id), -errno.
 */
memsnap_build *memsnap_build_open(const char *uri, const char *build_id, const char *cache_dir,
				  int *err);
/* The same in an open store (borrowed: it must outlive the build). */
memsnap_build *memsnap_build_open_in(memsnap_store *store, const char *build_id,
				     const char *cache_dir, int *err);
/* An empty template of size bytes (every page reads as zeros) to pause a fresh guest over. */
memsnap_build *memsnap_build_new_empty(memsnap_store *store, uint64_t size, const char *cache_dir,
				       int *err);
void memsnap_build_free(memsnap_build *build);
/* The build's layered file; borrowed until memsnap_build_free. */
memsnap_layered *memsnap_build_file(memsnap_build *build);
/* A page server over the build's memory image (free it before the build). */
memsnap_pageserver *memsnap_build_serve(memsnap_build *build, const char *socket_path,
					const struct memsnap_pageserver_options *options, int *err);

/* The layered file: the image through one header, read from each build's data. */
uint64_t memsnap_layered_size(memsnap_layered *file);
int memsnap_layered_read(memsnap_layered *file, void *dst, uint64_t off, size_t len);
/* A copy of the current header (free with memsnap_header_free). */
int memsnap_layered_header(memsnap_layered *file, memsnap_header **out);

#endif
