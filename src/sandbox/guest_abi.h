/*
 * guest_abi.h - the contract between the host and the test guests (guests/).
 *
 * Shared by the host (src/sandbox/) and the freestanding guest programs, so it
 * includes nothing but <stdint.h> and defines only constants, one struct and
 * static inline helpers that both sides must compute identically.
 *
 * RAM layout (offsets from the RAM base; the base is the guest's rdi at boot):
 *
 *   offset                  size        what
 *   0x0000                  16          report stub (host-written): proc "int3; jmp *%r11"
 *   0x0100                  64          mailbox (host writes, guest only reads)
 *   0x1000                  <= 60 KiB   guest code (the flat image, entry at its first byte)
 *   0x10000                 ...         data pages (page index d is at 0x10000 + d * 4096)
 *   size - 16 KiB           16 KiB      stack (rsp = base + size - 8 at boot)
 *
 * Boot registers: rip = base + 0x1000, rdi = base, rsi = RAM size, rsp as above.
 *
 * Reports (guest -> host): the guest loads rax = report code, rdi/rsi/rdx =
 * values, puts its return address in r11 and jumps to the stub. The stub traps
 * to the host (proc: int3 -> SIGTRAP stop; kvm later: port I/O) and jumps back
 * through r11. Nothing is pushed: a report writes no RAM, so an epoch that only
 * reads leaves the written-page set empty.
 *
 * Commands (host -> guest): while the guest is stopped at a report, the host
 * writes the mailbox and continues the guest. Each time the guest comes back
 * from a report it executes the mailbox's command once and reports again.
 * The host writes the mailbox only when its bytes change, so repeating a
 * command (e.g. VERIFY after a restore) writes no RAM either.
 *
 * Invariants:
 *  1. The guest never writes page 0 nor its code pages.
 *  2. Reports carry results in registers only.
 *  3. Page contents are a pure function of (seed, data page index, epoch), and
 *     the mutator's choices of (seed, epoch): ms_guest_mix64 is the only hash.
 */
#ifndef MS_SANDBOX_GUEST_ABI_H
#define MS_SANDBOX_GUEST_ABI_H

#include <stdint.h>

#define MS_GUEST_PAGE_SIZE     4096u
#define MS_GUEST_STUB_OFF      0x0u
#define MS_GUEST_MAILBOX_OFF   0x100u
#define MS_GUEST_CODE_OFF      0x1000u
#define MS_GUEST_CODE_MAX      (0x10000u - 0x1000u)
#define MS_GUEST_DATA_OFF      0x10000u
#define MS_GUEST_STACK_SIZE    0x4000u
#define MS_GUEST_MAILBOX_MAGIC 0x786f626c69616d4dull /* "Mmailbox" */

/* Data pages available for a RAM size. */
#define MS_GUEST_DATA_PAGES(ram_size)                                                              \
	(((ram_size)-MS_GUEST_DATA_OFF - MS_GUEST_STACK_SIZE) / MS_GUEST_PAGE_SIZE)
/* RAM page index (4 KiB) of data page d. */
#define MS_GUEST_DATA_PAGE_INDEX(d) ((uint64_t)(d) + MS_GUEST_DATA_OFF / MS_GUEST_PAGE_SIZE)

struct ms_guest_mailbox {
	uint64_t magic; /* MS_GUEST_MAILBOX_MAGIC, else the guest reports BAD_MAILBOX */
	uint64_t cmd;	/* MS_GUEST_CMD_* */
	uint64_t args[6];
};

/* Report codes (rax at the stub). */
enum {
	MS_GUEST_REPORT_BOOT = 1,	 /* rdi = guest kind, rsi = data pages */
	MS_GUEST_REPORT_DONE = 2,	 /* rdi, rsi, rdx: per command below */
	MS_GUEST_REPORT_BAD_CMD = 3,	 /* rdi = the command */
	MS_GUEST_REPORT_BAD_MAILBOX = 4, /* rdi = the magic found */
};

enum { MS_GUEST_KIND_PATTERN = 1, MS_GUEST_KIND_COUNTER = 2, MS_GUEST_KIND_MUTATOR = 3 };

/*
 * Commands. args[] by command; DONE's rdi/rsi/rdx.
 *  NOP:              -> DONE(0, 0, 0)
 *  PATTERN_FILL:     seed, epoch, first, count, zero_stride
 *                    data pages [first, first + count): page d is all-zero when
 *                    zero_stride != 0 and d % zero_stride == 0, else filled with
 *                    ms_guest_pattern_word(seed, d, epoch, 0..511). Every page
 *                    in the range is written (zeros included).  -> DONE(count, 0, 0)
 *  PATTERN_VERIFY:   same args; reads only.  -> DONE(mismatching pages, first bad page or ~0, 0)
 *  COUNTER_RUN:      steps; runs that many steps.  -> DONE(sequence, errors, 0)
 *  COUNTER_FREE:     runs steps until the mailbox's cmd is no longer COUNTER_FREE
 *                    (the host rewrites it while the guest runs).  -> DONE(sequence, errors, 0)
 *  MUTATOR_EPOCH:    seed, epoch, writes; each write w picks (page, word, value)
 *                    from ms_guest_mutator_pick.  -> DONE(writes, 0, 0)
 */
enum {
	MS_GUEST_CMD_NOP = 0,
	MS_GUEST_CMD_PATTERN_FILL = 0x10,
	MS_GUEST_CMD_PATTERN_VERIFY = 0x11,
	MS_GUEST_CMD_COUNTER_RUN = 0x20,
	MS_GUEST_CMD_COUNTER_FREE = 0x21,
	MS_GUEST_CMD_COUNTER_STOP = 0x22,
	MS_GUEST_CMD_MUTATOR_EPOCH = 0x30,
};

/* splitmix64's finalizer: the one hash both sides use. */
static inline uint64_t ms_guest_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Word w (0..511) of pattern page d; never 0 for w == 0 so a filled page is never all-zero. */
static inline uint64_t ms_guest_pattern_word(uint64_t seed, uint64_t page, uint64_t epoch,
					     uint64_t word)
{
	uint64_t v = ms_guest_mix64(seed ^ ms_guest_mix64(page * 0x10001ull + epoch) ^
				    (word * 0x9e3779b97f4a7c15ull));
	return word == 0 ? (v | 1) : v;
}

/* The mutator's write number w of (seed, epoch) over data_pages pages. */
static inline void ms_guest_mutator_pick(uint64_t seed, uint64_t epoch, uint64_t w,
					 uint64_t data_pages, uint64_t *page, uint64_t *word,
					 uint64_t *value)
{
	uint64_t r = ms_guest_mix64(seed ^ ms_guest_mix64(epoch ^ (w << 20)));
	*page = r % data_pages;
	*word = (r >> 40) % 512;
	*value = ms_guest_mix64(r);
}

#endif
