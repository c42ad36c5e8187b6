/*
 * guests.S - the test guests: position-independent x86-64 that runs from guest
 * RAM with the RAM base in %rdi and its stack at the top of RAM, on either
 * backend. Layout of RAM (guest.h documents it for the host):
 *
 *   0x0000  mailbox: +0 command, +8 arg0, +16 arg1, +24 pages, +32 result0,
 *           +40 result1, +48 reports (incremented by the guest before each report)
 *   0x0800  report stub, placed by the backend (proc: int3; ret)
 *   0x1000  guest code (copied here by the backend)
 *   0x8000  data pages, up to the stack (the last 16 KiB)
 *
 * A guest reports by jumping to the stub with its return address in %r11 and
 * its results in %rax (result0) and %rdx (result1): a report writes no RAM, so
 * an epoch that only reads leaves the written set empty. The backend copies
 * the results into the mailbox through its own (untracked) mapping; the host
 * answers by writing the next command into the mailbox before it resumes.
 * Commands of `pattern`: 1 FILL(seed, epoch) writes every data page with words
 * derived from (seed, page, word) xor epoch; 2 VERIFY(seed, epoch) counts the
 * pages that differ (result0); 3 ZERO(first, count) zeroes data pages;
 * anything else: report again. `counter` reports once when booted, then counts
 * in %r14 and in RAM, reporting the count (result0) every arg0 iterations. `mutator` (command 1,
 * arg0 = seed, arg1 = writes) writes arg1 pseudo-random data pages (xorshift
 * from seed) with their page index xor seed, then reports. `workset` (1 FILL, 2
 * VERIFY, arguments as pattern's) does pattern's work on a stable pseudo-random
 * ~15 % of the data pages only, in a fixed order from the seed; its 3 FILL_ALL(seed,
 * epoch) is pattern's FILL of every data page (a whole memory, of which the walk's set
 * is the working set).
 */
	.text
	.code64

#define MAILBOX_CMD     0
#define MAILBOX_ARG0    8
#define MAILBOX_ARG1    16
#define MAILBOX_PAGES   24
#define MAILBOX_RESULT0 32
#define MAILBOX_RESULT1 40
#define MAILBOX_REPORTS 48
#define REPORT_STUB     0x800
#define DATA_FIRST_PAGE 8
#define STACK_PAGES     4

.macro REPORT
	leaq 9f(%rip), %r11             /* the stub jumps back through r11: no push */
	leaq REPORT_STUB(%r15), %rcx
	jmp *%rcx
9:
.endm

/* Writes data page rcx with pattern's FILL words: word w of page p = (seed + p * K + w) ^
 * epoch (seed and epoch from the mailbox). Clobbers rax, rdx, rsi, r8, r9. */
.macro FILL_DATA_PAGE
	leaq DATA_FIRST_PAGE(%rcx), %rdx
	movq %rdx, %rsi
	shlq $12, %rsi
	addq %r15, %rsi                 /* page address */
	movabsq $0x9e3779b97f4a7c15, %rax
	imulq %rdx, %rax
	addq MAILBOX_ARG0(%r15), %rax   /* seed + p * K */
	xorq %r8, %r8                   /* word */
88:	movq %rax, %r9
	addq %r8, %r9
	xorq MAILBOX_ARG1(%r15), %r9
	movq %r9, (%rsi,%r8,8)
	incq %r8
	cmpq $512, %r8
	jb 88b
.endm

/* rbx = number of data pages (pages - DATA_FIRST_PAGE - STACK_PAGES) */
.macro DATA_PAGES
	movq MAILBOX_PAGES(%r15), %rbx
	subq $(DATA_FIRST_PAGE + STACK_PAGES), %rbx
.endm

	.globl ms_guest_pattern_start, ms_guest_pattern_end
ms_guest_pattern_start:
	movq %rdi, %r15
	xorq %rax, %rax
	xorq %rdx, %rdx
1:	REPORT
10:	movq MAILBOX_CMD(%r15), %rax
	cmpq $1, %rax
	je 2f
	cmpq $2, %rax
	je 4f
	cmpq $3, %rax
	je 7f
	jmp 1b
	/* FILL: word w of page p = (seed + p * K + w) ^ epoch */
2:	DATA_PAGES
	xorq %rcx, %rcx                 /* data page index */
3:	cmpq %rbx, %rcx
	jae 1b
	FILL_DATA_PAGE
	incq %rcx
	jmp 3b
	/* VERIFY: result0 = pages that differ */
4:	DATA_PAGES
	xorq %rcx, %rcx
	xorq %r10, %r10                 /* mismatches */
5:	cmpq %rbx, %rcx
	jae 6f
	leaq DATA_FIRST_PAGE(%rcx), %rdx
	movq %rdx, %rsi
	shlq $12, %rsi
	addq %r15, %rsi
	movabsq $0x9e3779b97f4a7c15, %rax
	imulq %rdx, %rax
	addq MAILBOX_ARG0(%r15), %rax
	xorq %r8, %r8
51:	movq %rax, %r9
	addq %r8, %r9
	xorq MAILBOX_ARG1(%r15), %r9
	cmpq %r9, (%rsi,%r8,8)
	jne 52f
	incq %r8
	cmpq $512, %r8
	jb 51b
	jmp 53f
52:	incq %r10
53:	incq %rcx
	jmp 5b
6:	movq %r10, %rax                 /* result0: mismatching pages */
	xorq %rdx, %rdx
	REPORT
	jmp 10b
	/* ZERO(first data page, count) */
7:	movq MAILBOX_ARG0(%r15), %rcx
	movq MAILBOX_ARG1(%r15), %rbx
	addq %rcx, %rbx
8:	cmpq %rbx, %rcx
	jae 1b
	leaq DATA_FIRST_PAGE(%rcx), %rsi
	shlq $12, %rsi
	addq %r15, %rsi
	xorq %r8, %r8
81:	movq $0, (%rsi,%r8,8)
	incq %r8
	cmpq $512, %r8
	jb 81b
	incq %rcx
	jmp 8b
ms_guest_pattern_end:

	.globl ms_guest_counter_start, ms_guest_counter_end
ms_guest_counter_start:
	movq %rdi, %r15
	xorq %r14, %r14                 /* the count lives in a register ... */
	movq %r14, (DATA_FIRST_PAGE * 4096)(%r15) /* ... and in RAM */
	xorq %rax, %rax
	xorq %rdx, %rdx
	REPORT                          /* booted: the host sets arg0 (report interval) */
1:	incq %r14
	movq (DATA_FIRST_PAGE * 4096)(%r15), %rax
	incq %rax
	movq %rax, (DATA_FIRST_PAGE * 4096)(%r15)
	cmpq %rax, %r14                 /* both must agree, across any pause */
	jne 3f
	movq MAILBOX_ARG0(%r15), %rcx
	testq %rcx, %rcx
	jz 1b
	movq %r14, %rax
	xorq %rdx, %rdx
	divq %rcx
	testq %rdx, %rdx
	jnz 1b
	movq %r14, %rax                 /* result0: the count */
	xorq %rdx, %rdx
	REPORT
	jmp 1b
3:	movq %r14, %rax
	movq $1, %rdx                   /* result1: register and memory disagree */
	REPORT
	jmp 3b
ms_guest_counter_end:

	.globl ms_guest_mutator_start, ms_guest_mutator_end
ms_guest_mutator_start:
	movq %rdi, %r15
1:	REPORT
	cmpq $1, MAILBOX_CMD(%r15)
	jne 1b
	DATA_PAGES
	movq MAILBOX_ARG0(%r15), %rax   /* xorshift state */
	movq MAILBOX_ARG1(%r15), %rcx   /* writes */
2:	testq %rcx, %rcx
	jz 1b
	movq %rax, %rdx
	shlq $13, %rdx
	xorq %rdx, %rax
	movq %rax, %rdx
	shrq $7, %rdx
	xorq %rdx, %rax
	movq %rax, %rdx
	shlq $17, %rdx
	xorq %rdx, %rax
	movq %rax, %r8
	xorq %rdx, %rdx
	pushq %rax
	movq %r8, %rax
	divq %rbx                       /* rdx = state % data pages */
	popq %rax
	leaq DATA_FIRST_PAGE(%rdx), %rsi
	movq %rsi, %r9
	xorq MAILBOX_ARG0(%r15), %r9    /* the value written: page index ^ seed */
	shlq $12, %rsi
	addq %r15, %rsi
	xorq %r8, %r8
3:	movq %r9, (%rsi,%r8,8)
	incq %r8
	cmpq $512, %r8
	jb 3b
	decq %rcx
	jmp 2b
ms_guest_mutator_end:

	/*
	 * workset: commands 1 FILL(seed, epoch) and 2 VERIFY(seed, epoch) walk the
	 * same pseudo-random sequence of data pages - xorshift64 from seed ^ K, page =
	 * state % data pages, data pages * 42 / 256 steps (about 15 % of them distinct,
	 * some twice) - writing, or checking, pattern's words on each; result0 of
	 * VERIFY = pages that differ (a page walked twice counts twice). The pages
	 * outside the set are never touched. ms_guest_workset_page() is the host's copy.
	 */
	.globl ms_guest_workset_start, ms_guest_workset_end
ms_guest_workset_start:
	movq %rdi, %r15
	xorq %rax, %rax
	xorq %rdx, %rdx
1:	REPORT
	movq MAILBOX_CMD(%r15), %rax
	cmpq $1, %rax
	je 2f
	cmpq $2, %rax
	je 2f
	cmpq $3, %rax
	je 7f
	xorq %rax, %rax
	xorq %rdx, %rdx
	jmp 1b
2:	movq %rax, %r12                 /* 1 fill, 2 verify */
	DATA_PAGES
	movq %rbx, %r14
	imulq $42, %r14
	shrq $8, %r14                   /* steps */
	movabsq $0x2545f4914f6cdd1d, %r13
	xorq MAILBOX_ARG0(%r15), %r13   /* xorshift state */
	xorq %r10, %r10                 /* mismatches */
3:	testq %r14, %r14
	jz 6f
	movq %r13, %rdx
	shlq $13, %rdx
	xorq %rdx, %r13
	movq %r13, %rdx
	shrq $7, %rdx
	xorq %rdx, %r13
	movq %r13, %rdx
	shlq $17, %rdx
	xorq %rdx, %r13
	movq %r13, %rax
	xorq %rdx, %rdx
	divq %rbx                       /* rdx = state % data pages */
	leaq DATA_FIRST_PAGE(%rdx), %rdx /* page */
	movq %rdx, %rsi
	shlq $12, %rsi
	addq %r15, %rsi
	movabsq $0x9e3779b97f4a7c15, %rax
	imulq %rdx, %rax
	addq MAILBOX_ARG0(%r15), %rax   /* seed + p * K, as pattern */
	xorq %r8, %r8
4:	movq %rax, %r9
	addq %r8, %r9
	xorq MAILBOX_ARG1(%r15), %r9
	cmpq $1, %r12
	jne 41f
	movq %r9, (%rsi,%r8,8)
	jmp 42f
41:	cmpq %r9, (%rsi,%r8,8)
	jne 43f
42:	incq %r8
	cmpq $512, %r8
	jb 4b
	jmp 5f
43:	incq %r10
5:	decq %r14
	jmp 3b
6:	movq %r10, %rax                 /* result0: mismatching pages (0 after FILL) */
	xorq %rdx, %rdx
	jmp 1b
	/* FILL_ALL(seed, epoch): pattern's FILL, every data page */
7:	DATA_PAGES
	xorq %r10, %r10                 /* result0 0: no page checked */
	xorq %rcx, %rcx                 /* data page index */
71:	cmpq %rbx, %rcx
	jae 6b
	FILL_DATA_PAGE
	incq %rcx
	jmp 71b
ms_guest_workset_end:

	.section .note.GNU-stack,"",@progbits
