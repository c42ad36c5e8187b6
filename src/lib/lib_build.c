/*
 * lib_build.c - the public facade (memsnap/build.h): a build opened from a store URI with
 * a cache dir, its layered file, a page server over it; over build/buildfile.
 */
#include "header/mapping.h"
#include "lib/lib_int.h"
#include "uffd/filesource.h"

#include <errno.h>
#include <stdlib.h>

struct memsnap_build {
	struct ms_build_file *bf;
	struct ms_store *own_store; /* opened by memsnap_build_open; else NULL */
};

/* Wraps bf (NULL: the constructor failed, *err says why). */
static memsnap_build *memsnap_build_wrap(struct ms_build_file *bf, struct ms_store *own_store,
					 int *err)
{
	memsnap_build *b = bf ? calloc(1, sizeof(*b)) : NULL;
	if (!b) {
		if (bf)
			*err = -ENOMEM;
		ms_build_file_free(bf);
		ms_store_free(own_store);
		return NULL;
	}
	b->bf = bf;
	b->own_store = own_store;
	return b;
}

static struct ms_build_file *memsnap_build_file_open(struct ms_store *store, const char *build_id,
						     const char *cache_dir, int *err)
{
	ms_uuid id;
	if (!store || !build_id || ms_uuid_parse(build_id, &id)) {
		*err = -EINVAL;
		return NULL;
	}
	return ms_build_file_open(store, &id, cache_dir, err);
}

memsnap_build *memsnap_build_open(const char *uri, const char *build_id, const char *cache_dir,
				  int *err)
{
	struct ms_store *store = ms_store_open(uri, NULL, err);
	if (!store)
		return NULL;
	return memsnap_build_wrap(memsnap_build_file_open(store, build_id, cache_dir, err), store,
				  err);
}

memsnap_build *memsnap_build_open_in(memsnap_store *store, const char *build_id,
				     const char *cache_dir, int *err)
{
	return memsnap_build_wrap(
	    memsnap_build_file_open((struct ms_store *)store, build_id, cache_dir, err), NULL, err);
}

memsnap_build *memsnap_build_new_empty(memsnap_store *store, uint64_t size, const char *cache_dir,
				       int *err)
{
	if (!store || !size || size % MS_PAGE_SIZE) {
		*err = -EINVAL;
		return NULL;
	}
	ms_uuid template_id;
	ms_uuid_generate(&template_id);
	struct ms_header *h =
	    ms_header_new_base(&template_id, MS_HEADER_V4, MS_PAGE_SIZE, size, false);
	return memsnap_build_wrap(ms_build_file_new((struct ms_store *)store, h, cache_dir, err),
				  NULL, err);
}

void memsnap_build_free(memsnap_build *b)
{
	if (!b)
		return;
	ms_build_file_free(b->bf);
	ms_store_free(b->own_store);
	free(b);
}

/* The public layered file is the internal one. */
memsnap_layered *memsnap_build_file(memsnap_build *b)
{
	return (memsnap_layered *)b->bf->file;
}

struct ms_build_file *ms_lib_build_file(memsnap_build *b)
{
	return b->bf;
}

memsnap_pageserver *memsnap_build_serve(memsnap_build *b, const char *socket_path,
					const struct memsnap_pageserver_options *options, int *err)
{
	return ms_lib_pageserver_new(socket_path, &ms_layered_page_source_ops, b->bf->file, options,
				     err);
}

uint64_t memsnap_layered_size(memsnap_layered *file)
{
	return ms_layered_size((struct ms_layered *)file);
}

int memsnap_layered_read(memsnap_layered *file, void *dst, uint64_t off, size_t len)
{
	return ms_layered_read((struct ms_layered *)file, dst, off, len);
}

int memsnap_layered_header(memsnap_layered *file, memsnap_header **out)
{
	struct ms_header_ref *ref = ms_layered_header((struct ms_layered *)file);
	*out = ref ? (memsnap_header *)ms_header_copy(ref->header) : NULL;
	if (ref)
		ms_header_ref_unref(ref);
	return *out ? 0 : -ENOMEM;
}
