/*
 * memfd.h - the paused guest's memory, still mapped on this node, and the
 * sources that serve it while dedup runs (docs/design.md §3 steps 2-6, §5.6).
 *
 * A pause hands over the guest-memory memfd (exactly one owner: this object).
 * Two sources read from it:
 *  - the identity source (provisional build id): storage offset = device offset;
 *  - the packed source (real build id, during the drain): storage offsets in
 *    the packed layout, mapped back to device offsets through the packed index
 *    (the survivors of the compare, in ascending device order).
 * Release unmaps and closes the memfd under the exclusive lock; readers copy
 * under the shared lock, so no read ever touches an unmapped page. After the
 * release both sources answer MS_ECLOSED, which makes the layered file re-plan
 * against the then-current header (docs/design.md §4.4).
 *
 * Thread-safety: all functions, any thread. lock guards map and released.
 */
#ifndef MS_SNAPSHOT_MEMFD_H
#define MS_SNAPSHOT_MEMFD_H

#include "cache/source.h"
#include "header/mapping.h"
#include "util/pageset.h"

#include <stdbool.h>
#include <stdint.h>

struct ms_memfd;

/* A memfd of size bytes over fd, which it owns from here on (closed on failure too), mapped
 * read-only. */
struct ms_memfd *ms_memfd_new(int fd, uint64_t size, int *err);
struct ms_memfd *ms_memfd_ref(struct ms_memfd *m);
/* The last unref releases the mapping if nobody did. */
void ms_memfd_unref(struct ms_memfd *m);
uint64_t ms_memfd_size(const struct ms_memfd *m);
/* Unmaps and closes under the exclusive lock; idempotent. */
void ms_memfd_release(struct ms_memfd *m);
bool ms_memfd_is_released(struct ms_memfd *m);

/*
 * Runs fn(ctx, mapping) under the shared lock: the mapping stays valid for the
 * call (MS_ECLOSED when already released). fn must copy with util/faultsafe.h.
 */
int ms_memfd_with_mapping(struct ms_memfd *m, int (*fn)(void *ctx, const uint8_t *mapping),
			  void *ctx);

/*
 * A zero-copy view of [off, off + len) of the mapping: *ptr stays mapped until
 * ms_memfd_unpin(m), even past a release (which closes the memfd at once and
 * leaves the unmap to the last unpin). MS_ECLOSED once released, -ERANGE outside
 * the memory. Read it with util/faultsafe.h. The sources below offer it as their
 * borrow (ms_source_borrow: the hold unpins), which the compare reads a parent
 * through (ms_layered_slice) and the peer server sends from.
 */
int ms_memfd_pin(struct ms_memfd *m, uint64_t off, size_t len, const void **ptr);
void ms_memfd_unpin(struct ms_memfd *m);

/* A source reading device offsets straight from the memfd (identity offsets). */
struct ms_source *ms_memfd_identity_source_new(struct ms_memfd *m);
/*
 * Straddling reads (issue: a read planned on the provisional header that
 * reaches the identity source after the release): with a fallback set, such a
 * read is served through the fallback file's current header at the same
 * device offset (identity offsets are device offsets) instead of failing and
 * re-planning. fallback is borrowed; clear it (NULL) before freeing it.
 */
struct ms_layered;
void ms_memfd_identity_set_fallback(struct ms_source *identity, struct ms_layered *fallback);
/*
 * A source over the packed layout of survivors (page indices in 4 KiB units):
 * storage offset s is the s-th byte of the survivors' pages in ascending order.
 */
struct ms_source *ms_memfd_packed_source_new(struct ms_memfd *m,
					     const struct ms_pageset *survivors);
/* Bytes an identity or packed source served from the memfd itself so far. */
uint64_t ms_memfd_source_bytes_served(struct ms_source *src);

#endif
