/*
 * faultsafe.c - recoverable SIGBUS/SIGSEGV around copies from mappings.
 *
 * Design: a thread-local "armed" jump buffer. The handler jumps back only when
 * the faulting thread is armed; otherwise it restores the previous disposition
 * and returns, so the fault re-executes and takes that disposition.
 * The copy loops live in separate noinline functions, and the variables used
 * after a longjmp are volatile, as setjmp requires.
 */
#include "util/faultsafe.h"
#include "util/err.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

static _Thread_local sigjmp_buf *volatile ms_faultsafe_jmp;
static struct sigaction ms_prev_bus, ms_prev_segv;
static pthread_once_t ms_faultsafe_once = PTHREAD_ONCE_INIT;

static void ms_faultsafe_handler(int sig, siginfo_t *info, void *uctx)
{
	sigjmp_buf *jmp = ms_faultsafe_jmp;
	if (jmp) {
		ms_faultsafe_jmp = NULL;
		/*
		 * The jump buffers save no signal mask (that costs a syscall per call), so
		 * unblock the signal here: whoever entered this handler (the kernel honours
		 * SA_NODEFER; a sanitizer's wrapper may not) must not leave it blocked, or
		 * the next fault would kill the process.
		 */
		sigset_t unblock;
		sigemptyset(&unblock);
		sigaddset(&unblock, sig);
		pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
		siglongjmp(*jmp, 1);
	}
	struct sigaction *prev = sig == SIGBUS ? &ms_prev_bus : &ms_prev_segv;
	if (prev->sa_flags & SA_SIGINFO) {
		if (prev->sa_sigaction) {
			prev->sa_sigaction(sig, info, uctx);
			return;
		}
	} else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
		prev->sa_handler(sig);
		return;
	}
	/* Default action: restore it; returning re-executes the faulting access. */
	signal(sig, SIG_DFL);
}

static void ms_faultsafe_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = ms_faultsafe_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &ms_prev_bus);
	sigaction(SIGSEGV, &sa, &ms_prev_segv);
}

__attribute__((noinline)) static void ms_copy_bytes(void *dst, const void *src, size_t len)
{
	memcpy(dst, src, len);
}

__attribute__((noinline)) static bool ms_equal_bytes(const void *a, const void *b, size_t len)
{
	return memcmp(a, b, len) == 0;
}

__attribute__((noinline)) static bool ms_zero_bytes(const void *src, size_t len)
{
	const unsigned char *p = src;
	size_t i = 0;
	for (; i < len && ((uintptr_t)(p + i) & 7); i++)
		if (p[i])
			return false;
	for (; i + 8 <= len; i += 8) {
		uint64_t word;
		memcpy(&word, p + i, 8);
		if (word)
			return false;
	}
	for (; i < len; i++)
		if (p[i])
			return false;
	return true;
}

enum ms_faultsafe_op { MS_OP_COPY, MS_OP_EQUAL, MS_OP_ZERO };

static int ms_faultsafe_run(enum ms_faultsafe_op op, void *dst, const void *src, size_t len,
			    bool *result)
{
	pthread_once(&ms_faultsafe_once, ms_faultsafe_install);
	sigjmp_buf jmp;
	/* no mask saved (a syscall per call otherwise): the handler unblocks the signal */
	if (sigsetjmp(jmp, 0) != 0)
		return MS_EFAULT_IO; /* the handler disarmed us */
	ms_faultsafe_jmp = &jmp;
	switch (op) {
	case MS_OP_COPY:
		ms_copy_bytes(dst, src, len);
		break;
	case MS_OP_EQUAL:
		*result = ms_equal_bytes(dst, src, len);
		break;
	case MS_OP_ZERO:
		*result = ms_zero_bytes(src, len);
		break;
	}
	ms_faultsafe_jmp = NULL;
	return 0;
}

int ms_faultsafe_call(int (*fn)(void *ctx), void *ctx)
{
	pthread_once(&ms_faultsafe_once, ms_faultsafe_install);
	sigjmp_buf jmp;
	if (sigsetjmp(jmp, 0) != 0) /* no mask saved: the handler unblocks the signal */
		return MS_EFAULT_IO;
	ms_faultsafe_jmp = &jmp;
	int ret = fn(ctx);
	ms_faultsafe_jmp = NULL;
	return ret;
}

bool ms_mem_is_zero(const void *src, size_t len)
{
	return ms_zero_bytes(src, len);
}

int ms_faultsafe_copy(void *dst, const void *src, size_t len)
{
	return ms_faultsafe_run(MS_OP_COPY, dst, src, len, NULL);
}

int ms_faultsafe_equal(const void *a, const void *b, size_t len, bool *equal)
{
	return ms_faultsafe_run(MS_OP_EQUAL, (void *)a, b, len, equal);
}

int ms_faultsafe_is_zero(const void *src, size_t len, bool *zero)
{
	return ms_faultsafe_run(MS_OP_ZERO, NULL, src, len, zero);
}
