/*
 * wpset.h - the written set of a sandbox under synchronous userfaultfd
 * write-protect (the sync tracker, for kernels without UFFD_FEATURE_WP_ASYNC).
 *
 * Under sync WP every first write to a protected page is a fault message on the
 * uffd. Whoever reads the uffd - the sandbox's own tracker thread (fresh and
 * eager sandboxes) or the page server's session (lazy restores) - resolves it
 * with ms_wpset_resolve: the page goes into the set and the protection is lifted
 * (UFFDIO_WRITEPROTECT mode 0, which wakes the writer). A pause takes the set
 * with ms_wpset_take, which with reset write-protects the whole range again.
 *
 * Invariant (why one mutex covers both the set and the ioctls): a page is
 * unprotected only while it is in the current set. resolve does "add, then
 * unprotect" and take does "re-protect, then swap the set" under the lock, so a
 * resolve runs wholly before a take (the page is in the old set and re-protected)
 * or wholly after it (the page is in the new set). A fault read before a take
 * and resolved after it only over-reports (the page is in the new set, written or
 * not). A missed record would be silent data loss at the next pause.
 *
 * Hand-over to a page server in the same process: a lazily restored sandbox
 * publishes its set under its guest-memory memfd before the handshake; the
 * session that receives that memfd claims it (ms_wpset_claim) before it serves
 * any fault, and the sandbox waits for the claim (ms_wpset_wait_claimed). A page
 * server in another process never claims it: such a restore is refused under
 * the sync tracker, since nobody would record its writes.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef MS_UTIL_WPSET_H
#define MS_UTIL_WPSET_H

#include "util/pageset.h"

#include <stdbool.h>
#include <stdint.h>

struct ms_wpset;

/* A set over the guest range [base, base + size) (host addresses of the tracked mapping);
 * one reference. NULL on -ENOMEM. */
struct ms_wpset *ms_wpset_new(uint64_t base, uint64_t size);
struct ms_wpset *ms_wpset_ref(struct ms_wpset *w);
void ms_wpset_unref(struct ms_wpset *w);

/*
 * A WP fault at addr (any address inside [base, base + size)): records len bytes
 * of pages from the page containing addr, then lifts their protection through
 * uffd (waking the writer). 0, -EAGAIN (the ioctl must be retried; the page is
 * recorded already), -EINVAL outside the range, or the ioctl's negative errno.
 */
int ms_wpset_resolve(struct ms_wpset *w, int uffd, uint64_t addr, uint64_t len);
/*
 * A writable install into [addr, addr + len) (a page server resolving a write
 * fault on a missing page: UFFDIO_COPY without MODE_WP): records the pages and
 * holds the set's lock until ms_wpset_end_install, so the install's ioctl goes in
 * between, like resolve's unprotect (the page is writable from then on).
 */
void ms_wpset_begin_install(struct ms_wpset *w, uint64_t addr, uint64_t len);
void ms_wpset_end_install(struct ms_wpset *w);
/*
 * Adds the pages written since the last reset (4 KiB indices from base) to set;
 * with reset, write-protects the whole range through uffd and starts an empty
 * set. 0 or a negative errno (on error nothing was taken or reset).
 */
int ms_wpset_take(struct ms_wpset *w, int uffd, bool reset, struct ms_pageset *set);
/* Faults resolved so far (every WP fault, also repeated ones). */
uint64_t ms_wpset_faults(struct ms_wpset *w);

/* Registry for the lazy hand-over (see above). publish takes a reference; 0 or -errno. */
int ms_wpset_publish(struct ms_wpset *w, int memfd);
/* Removes what publish added under memfd (idempotent). */
void ms_wpset_withdraw(int memfd);
/* The set published under the file that memfd refers to (any fd of the same file), marked
 * claimed, with a reference for the caller; NULL when none is published. */
struct ms_wpset *ms_wpset_claim(int memfd);
/* Waits up to timeout_ns for a claim: 0, or -ETIMEDOUT. */
int ms_wpset_wait_claimed(struct ms_wpset *w, int64_t timeout_ns);

#endif
