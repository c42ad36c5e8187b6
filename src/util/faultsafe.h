/*
 * faultsafe.h - copy and compare from mappings that may fault.
 *
 * A cache file or memfd mapping can raise SIGBUS (bad disk sector, truncated
 * file) or SIGSEGV (unmapped range) on access. These functions turn such a fault
 * during the copy into MS_EFAULT_IO instead of a crash (docs/design.md §5.10).
 *
 * A process-wide SIGBUS/SIGSEGV handler is installed on first use. It recovers
 * only faults raised inside one of these functions on the faulting thread; any
 * other fault is passed to the previous handler (or the default action), so
 * real crashes still crash.
 */
#ifndef MS_UTIL_FAULTSAFE_H
#define MS_UTIL_FAULTSAFE_H

#include <stdbool.h>
#include <stddef.h>

/* memcpy(dst, src, len); returns 0 or MS_EFAULT_IO (dst then partially written). */
int ms_faultsafe_copy(void *dst, const void *src, size_t len);
/* *equal = memcmp(a, b, len) == 0; returns 0 or MS_EFAULT_IO. */
int ms_faultsafe_equal(const void *a, const void *b, size_t len, bool *equal);
/* *zero = every byte of src is 0; returns 0 or MS_EFAULT_IO. */
int ms_faultsafe_is_zero(const void *src, size_t len, bool *zero);
/*
 * Runs fn(ctx) with faults recovered: fn's return, or MS_EFAULT_IO when an access
 * faulted (fn was then left midway: its partial effects are the caller's to
 * discard). fn must only touch memory - no locks, no allocation, no I/O - since a
 * fault jumps out of it. Not nestable.
 */
int ms_faultsafe_call(int (*fn)(void *ctx), void *ctx);
/* memcmp(a, b, len) == 0, and every byte 0: plain helpers for use inside fn. */
bool ms_mem_is_zero(const void *src, size_t len);

#endif
