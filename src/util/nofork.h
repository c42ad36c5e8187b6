/*
 * nofork.h - heap-like buffers that a forked child never shares (MADV_DONTFORK).
 *
 * A proc sandbox is forked from the node and does not exec, so it shares every
 * private page the node had at the fork: the node's next write to such a page is
 * a copy-on-write fault with a TLB flush on every CPU, for as long as the sandbox
 * lives. A buffer the node writes over and over (a chunk fetch's lane buffer, a
 * peer answer's buffer) comes from here instead: its own anonymous mapping,
 * left out of every fork.
 */
#ifndef MS_UTIL_NOFORK_H
#define MS_UTIL_NOFORK_H

#include <stddef.h>

/* len (> 0) bytes, zeroed, readable and writable; NULL with errno set on failure. */
void *ms_nofork_alloc(size_t len);
/* Releases a buffer of ms_nofork_alloc(len); NULL is ignored. */
void ms_nofork_free(void *buf, size_t len);

#endif
