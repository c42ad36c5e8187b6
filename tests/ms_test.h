/*
 * ms_test.h - shared helpers for the cmocka tests.
 *
 * MS_TEST_SKIP_EXIT(why): a whole test program that cannot run here prints one
 * line saying why and exits 77, which meson counts as skipped.
 */
#ifndef MS_TEST_H
#define MS_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#define MS_TEST_SKIP 77
#define MS_TEST_SKIP_EXIT(...)                                                                     \
	do {                                                                                       \
		printf("SKIP: " __VA_ARGS__);                                                      \
		printf("\n");                                                                      \
		exit(MS_TEST_SKIP);                                                                \
	} while (0)

struct ms_sandbox_ops;

/*
 * The sandbox backend named name (e.g. argv[1]; NULL: "proc"); prints which.
 * Exits 77 (skip) with one line where it cannot run here (kvm without
 * /dev/kvm), 1 for an unknown name.
 */
const struct ms_sandbox_ops *ms_test_backend(const char *name);

struct ms_sandbox;
struct ms_sandbox_paused;

/* A fresh sandbox running guest kind (guest.h) in mem bytes; fails the test on error. */
struct ms_sandbox *ms_test_sandbox_start(const struct ms_sandbox_ops *ops, int kind, uint64_t mem);
/* The paused sandbox restored eagerly from its memfd; fails the test on error. */
struct ms_sandbox *ms_test_sandbox_restore_eager(const struct ms_sandbox_ops *ops,
						 const struct ms_sandbox_paused *paused,
						 uint64_t mem);

/*
 * cmocka puts its own SIGBUS/SIGSEGV handlers in place around each test. main() calls
 * ms_test_faultsafe_init() before the tests run (it installs util/faultsafe's handlers and
 * keeps them: 0, or -1); a test whose body must have mapping faults recovered, as in a
 * process without cmocka, brackets it with ms_test_faultsafe_enter() and _leave().
 */
int ms_test_faultsafe_init(void);
void ms_test_faultsafe_enter(void);
void ms_test_faultsafe_leave(void);

struct ms_peer_tls_pem; /* node/peer/tls.h */
/* DIR/fleet.pem, DIR/NAME.pem and DIR/NAME.key (scripts/peer-certs.sh) into pem: 0, or -1
 * with why (ms_peer_tls_load's reason). */
int ms_test_peer_tls_load(const char *dir, const char *name, struct ms_peer_tls_pem *pem, char *why,
			  size_t why_len);

/* A fresh temporary directory under $TMPDIR (or /tmp); the caller frees the string. */
char *ms_test_tmpdir(void);
/* rm -rf of a directory made by ms_test_tmpdir. */
void ms_test_rmtree(const char *path);

#endif
