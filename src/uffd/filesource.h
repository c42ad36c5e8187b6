/*
 * filesource.h - the page server's source over a layered file (build/): what a
 * restore serves from. ctx is the struct ms_layered *; it must outlive the
 * server. is_zero answers from the current header (nil build) without I/O.
 */
#ifndef MS_UFFD_FILESOURCE_H
#define MS_UFFD_FILESOURCE_H

#include "uffd/source.h"

extern const struct ms_page_source_ops ms_layered_page_source_ops;

#endif
