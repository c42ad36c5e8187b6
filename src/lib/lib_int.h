/*
 * lib_int.h - what the public API's implementation files (src/lib/) share. Nothing here
 * has the memsnap_ prefix, so none of it is exported (memsnap.map).
 */
#ifndef MS_LIB_INT_H
#define MS_LIB_INT_H

#include "build/buildfile.h"
#include "memsnap/build.h"
#include "memsnap/pageserver.h"
#include "uffd/pagesource.h"

/* A public page server over an internal page source (ops + ctx must outlive it). */
memsnap_pageserver *ms_lib_pageserver_new(const char *socket_path,
					  const struct ms_page_source_ops *ops, void *ctx,
					  const struct memsnap_pageserver_options *options,
					  int *err);
/* The build file behind a public build. */
struct ms_build_file *ms_lib_build_file(memsnap_build *build);

#endif
