/*
 * filesource.h - the page server's source over a layered file (build/): what a
 * restore serves from. ctx is the struct ms_layered *; it must outlive the
 * server. classify answers a fault's block from one header snapshot without
 * I/O: nil pages are zero, locally held pages are served inline.
 */
#ifndef MS_UFFD_FILESOURCE_H
#define MS_UFFD_FILESOURCE_H

#include "uffd/pagesource.h"

extern const struct ms_page_source_ops ms_layered_page_source_ops;

#endif
