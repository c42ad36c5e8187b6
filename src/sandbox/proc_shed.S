/*
 * proc_shed.S - the last code a process sandbox runs before its guest: it unmaps
 * everything the fork left it of the node (the node's code, heap, stacks, the
 * RAM of every other sandbox, credentials and keys) and seals itself.
 *
 * Position-independent; proc.c copies it into a page of its own, with its
 * arguments (struct ms_proc_shed_args in proc.c) in the same page, and calls it
 * with their address in %rdi. It never returns and never touches the stack,
 * which it unmaps:
 *
 *   for each range: munmap(start, len)            (errors ignored)
 *   prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)
 *   if that says EINVAL (a seccomp filter is already in force):
 *       prctl(PR_SET_NO_NEW_PRIVS, 1); seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)
 *   any failure: exit_group(15)
 *   spin on pause until the host takes it over (ptrace)
 *
 * Arguments: +0 number of ranges, +8 the filter's struct sock_fprog address,
 * +16 the ranges, {start, len} pairs.
 */
	.text
	.code64

#define SYS_munmap     11
#define SYS_prctl      157
#define SYS_exit_group 231
#define SYS_seccomp    317
#define PR_SET_SECCOMP       22
#define PR_SET_NO_NEW_PRIVS  38
#define SECCOMP_MODE_STRICT  1
#define SECCOMP_SET_MODE_FILTER 1
#define EINVAL 22

	.globl ms_proc_shed_start, ms_proc_shed_end
ms_proc_shed_start:
	movq %rdi, %r12                 /* the arguments */
	movq 0(%r12), %r13              /* ranges left */
	leaq 16(%r12), %r14             /* the next range */
1:	testq %r13, %r13
	jz 2f
	movl $SYS_munmap, %eax
	movq 0(%r14), %rdi
	movq 8(%r14), %rsi
	syscall
	addq $16, %r14
	decq %r13
	jmp 1b
2:	movl $SYS_prctl, %eax
	movl $PR_SET_SECCOMP, %edi
	movl $SECCOMP_MODE_STRICT, %esi
	xorl %edx, %edx
	xorl %r10d, %r10d
	xorl %r8d, %r8d
	syscall
	testq %rax, %rax
	jz 4f
	cmpq $-EINVAL, %rax
	jne 5f
	movl $SYS_prctl, %eax
	movl $PR_SET_NO_NEW_PRIVS, %edi
	movl $1, %esi
	xorl %edx, %edx
	xorl %r10d, %r10d
	xorl %r8d, %r8d
	syscall
	testq %rax, %rax
	jnz 5f
	movl $SYS_seccomp, %eax
	movl $SECCOMP_SET_MODE_FILTER, %edi
	xorl %esi, %esi
	movq 8(%r12), %rdx
	syscall
	testq %rax, %rax
	jnz 5f
4:	pause
	jmp 4b
5:	movl $SYS_exit_group, %eax
	movl $15, %edi
	syscall
	jmp 5b
ms_proc_shed_end:

	.section .note.GNU-stack,"",@progbits
