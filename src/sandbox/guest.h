/*
 * guest.h - the test guests (guests.S) and the RAM layout they share with the
 * host, on every backend.
 *
 *   offset  size   field
 *   0x0000  8      command            (host writes before resuming the guest)
 *   0x0008  8      arg0
 *   0x0010  8      arg1
 *   0x0018  8      pages              (RAM size in 4 KiB pages)
 *   0x0020  8      result0            (the guest's %rax at its last report)
 *   0x0028  8      result1            (the guest's %rdx at its last report)
 *   0x0030  8      reports            (counted by the backend)
 *   0x0800  -      report stub        (backend-specific: proc `int3; jmp *%r11`)
 *
 * A report writes no guest RAM: the guest jumps to the stub with its return
 * address in %r11 and its results in %rax/%rdx; the backend copies them into
 * the mailbox through its own mapping (not tracked as guest writes).
 *   0x1000  -      guest code
 *   0x8000  -      data pages, up to the last 4 pages (the stack)
 */
#ifndef MS_SANDBOX_GUEST_H
#define MS_SANDBOX_GUEST_H

#include <stddef.h>
#include <stdint.h>

#define MS_GUEST_CMD		 0x00
#define MS_GUEST_ARG0		 0x08
#define MS_GUEST_ARG1		 0x10
#define MS_GUEST_PAGES		 0x18
#define MS_GUEST_RESULT0	 0x20
#define MS_GUEST_RESULT1	 0x28
#define MS_GUEST_REPORTS	 0x30
#define MS_GUEST_STUB		 0x800
#define MS_GUEST_CODE		 0x1000
#define MS_GUEST_CODE_MAX	 0x7000
#define MS_GUEST_DATA_FIRST_PAGE 8
#define MS_GUEST_STACK_PAGES	 4

enum ms_guest_kind { MS_GUEST_PATTERN, MS_GUEST_COUNTER, MS_GUEST_MUTATOR, MS_GUEST_WORKSET };

/* pattern's commands */
#define MS_PATTERN_FILL	  1
#define MS_PATTERN_VERIFY 2
#define MS_PATTERN_ZERO	  3
/* workset's commands: pattern's FILL and VERIFY on the walk's set (below), and FILL_ALL */
#define MS_WORKSET_FILL_ALL 3 /* pattern's FILL of every data page (the set stays the same) */

/* The guest's code bytes. 0, or -EINVAL for an unknown kind. */
int ms_guest_code(enum ms_guest_kind kind, const uint8_t **code, size_t *len);
/* kind -> "pattern", "counter", "mutator", "workset"; NULL for anything else (-1: unknown). */
const char *ms_guest_name(int kind);
/* "pattern", "counter", "mutator", "workset" -> kind; -EINVAL otherwise. */
int ms_guest_parse(const char *name, enum ms_guest_kind *kind);
/* The 8-byte word w of data page p after FILL(seed, epoch), as the guest computes it. */
uint64_t ms_guest_pattern_word(uint64_t seed, uint64_t epoch, uint64_t page, uint64_t word);

/*
 * workset's walk (guests.S): ms_guest_workset_steps(data pages) steps, each
 * ms_guest_workset_page(seed, data pages, &state) (state starts at 0) giving the
 * RAM page index the guest fills or verifies next, as the guest computes it.
 * data pages = RAM pages - MS_GUEST_DATA_FIRST_PAGE - MS_GUEST_STACK_PAGES.
 */
uint64_t ms_guest_workset_steps(uint64_t data_pages);
uint64_t ms_guest_workset_page(uint64_t seed, uint64_t data_pages, uint64_t *state);

#endif
