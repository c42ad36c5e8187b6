/*
 * uffd_test_util.h - helpers for the page-server tests: a child process that
 * behaves as Firecracker does, and page sources over memory (plain, slow,
 * failing).
 *
 * The child maps guest memory (anonymous MAP_PRIVATE, or a memfd MAP_SHARED
 * sent as the second fd; 4 KiB or 2 MiB pages), creates a uffd with
 * EVENT_REMOVE, registers MISSING (+WP), sends the JSON regions and the fd(s)
 * in one sendmsg, never closes the socket, then runs commands from the parent
 * over a pipe. Device offsets index the regions concatenated.
 */
#ifndef MS_TEST_UFFD_UTIL_H
#define MS_TEST_UFFD_UTIL_H

#include "uffd/pageserver.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct fc_child_cfg {
	const char *sock_path;
	uint64_t size;	       /* guest memory bytes (all regions) */
	uint64_t page_size;    /* 4096 or 2 MiB */
	unsigned regions;      /* 1 or 2 (split in halves at two addresses) */
	bool shmem;	       /* memfd MAP_SHARED, sent as the second fd */
	bool wp;	       /* register MISSING|WP */
	const uint8_t *source; /* expected contents (the child inherits it through fork) */
};

struct fc_child {
	pid_t pid;
	int cmd_fd;
	int res_fd;
};

enum fc_op {
	FC_READ_CHECK =
	    1,	       /* arg 0: equals source, 1: zero, 2+: every byte == arg-2; -> bad pages */
	FC_WRITE,      /* memset every page of [off, off+len) to arg; -> 0 */
	FC_MADVISE,    /* MADV_DONTNEED [off, off+len); -> ns taken or -errno */
	FC_ASYNC_READ, /* a thread reads the page at off; -> 0 */
	FC_JOIN,       /* joins it; -> 0 equals source, 1 zero, 2 other */
	FC_EXIT,
};

/* Forks the child; 0, or the child's negative errno (e.g. hugetlb mmap failed). */
int fc_child_start(const struct fc_child_cfg *cfg, struct fc_child *out);
/* The two halves of fc_child_start: fork (the child keeps trying to connect for 5 s), so a
 * test can fork while it is still single-threaded and start the server afterwards (a fork
 * from a multithreaded process can inherit held allocator locks, under ASan too); then
 * wait for the child's handshake to be sent (0 or its negative errno; killed on error). */
int fc_child_spawn(const struct fc_child_cfg *cfg, struct fc_child *out);
int fc_child_ready(struct fc_child *out);
/* Sends one command; its result, or INT64_MIN when no answer came within timeout_ms. */
int64_t fc_child_cmd(struct fc_child *c, int op, uint64_t off, uint64_t len, uint64_t arg,
		     int timeout_ms);
/* SIGKILL + waitpid + close pipes. */
void fc_child_kill(struct fc_child *c);
/* Asks the child to exit and reaps it. */
void fc_child_exit(struct fc_child *c);

/* What a test source's slice op hands out (test_source.slice). */
enum test_slice {
	TEST_SLICE_NONE = 0, /* -ENOTSUP: every install copies out of a read */
	TEST_SLICE_DATA,     /* views of data */
	TEST_SLICE_BAD,	     /* views of a PROT_NONE mapping: the kernel cannot copy from them */
};

/* A page source over memory with fault injection. */
struct test_source {
	uint8_t *data;
	uint64_t size;
	uint64_t page_size;
	bool cached;		  /* classify pages LOCAL (inline serving) */
	bool zero_hint;		  /* classify all-zero pages ZERO */
	_Atomic int64_t delay_ns; /* every read sleeps this long ... (set while sessions read) */
	int64_t delay_off;	  /* ... or only reads covering this offset (-1 = all) */
	atomic_int fail_next;	  /* fail this many reads with -EIO */
	atomic_bool fail_always;
	atomic_int in_read;
	atomic_int reads;
	atomic_int slice;  /* enum test_slice */
	atomic_int slices; /* slices handed out */
	atomic_int holds;  /* ... and not yet released */
	uint8_t *bad;	   /* size bytes of PROT_NONE (TEST_SLICE_BAD) */
};

extern const struct ms_page_source_ops test_source_ops;
/* size bytes of a deterministic pattern; every 5th page is all zero. */
void test_source_init(struct test_source *src, uint64_t size, uint64_t page_size);
void test_source_fini(struct test_source *src);
bool test_page_is_zero(const uint8_t *p, uint64_t len);

/* A fresh socket path in a fresh tmpdir (caller frees both). */
char *test_socket_path(char **dir);
/* Number of open fds of this process. */
int test_count_fds(void);
/* Skips the calling cmocka test unless userfaultfd is usable (prints why). */
bool test_uffd_available(void);

#endif
