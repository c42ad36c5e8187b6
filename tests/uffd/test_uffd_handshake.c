/*
 * test_uffd_handshake.c - Firecracker's handshake: the parser on good and
 * malformed JSON, and the server rejecting each malformed handshake cleanly
 * (connection closed, every received fd closed) and then serving a good client.
 */
#include "ms_test.h"
#include "uffd/handshake.h"
#include "uffd_test_util.h"
#include "util/err.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define MiB   (1024ULL * 1024)
#define IMAGE (64 * MiB)

static int parse(const char *json, struct ms_uffd_handshake *hs)
{
	return ms_uffd_handshake_parse(json, strlen(json), IMAGE, hs);
}

static void test_parse_good(void **state)
{
	(void)state;
	struct ms_uffd_handshake hs;
	/* Firecracker >= 1.12: both keys, bytes. */
	assert_int_equal(parse("[{\"base_host_virt_addr\":139872000000000,\"size\":33554432,"
			       "\"offset\":0,\"page_size\":4096,\"page_size_kib\":4096}]",
			       &hs),
			 0);
	assert_int_equal(hs.region_count, 1);
	assert_int_equal(hs.page_size, 4096);
	assert_int_equal(hs.regions[0].base, 139872000000000ULL);
	assert_int_equal(hs.regions[0].size, 32 * MiB);
	ms_uffd_handshake_fini(&hs);
	/* 1.7..1.11: only page_size_kib (bytes); unknown keys ignored; two regions, unsorted. */
	assert_int_equal(parse("[{\"base_host_virt_addr\":1073741824,\"size\":2097152,\"offset\":"
			       "2097152,\"page_size_kib\":2097152,\"extra\":[1,2]},"
			       "{\"base_host_virt_addr\":2097152,\"size\":2097152,\"offset\":0,"
			       "\"page_size_kib\":2097152}]",
			       &hs),
			 0);
	assert_int_equal(hs.region_count, 2);
	assert_int_equal(hs.page_size, 2 * MiB);
	assert_int_equal(hs.regions[0].base, 2097152); /* sorted by address */
	assert_int_equal(hs.regions[1].offset, 2097152);
	ms_uffd_handshake_fini(&hs);
	/* < 1.7: no page size key means 4 KiB. */
	assert_int_equal(
	    parse("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":8192}]", &hs), 0);
	assert_int_equal(hs.page_size, 4096);
	ms_uffd_handshake_fini(&hs);
	/* Not NUL-terminated: only len bytes are looked at. */
	const char *text = "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0}]garbage";
	assert_int_equal(ms_uffd_handshake_parse(text, strlen(text) - 7, IMAGE, &hs), 0);
	ms_uffd_handshake_fini(&hs);
}

static const char *const bad_json[] = {
    "",
    "not json",
    "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0}", /* truncated */
    "{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0}",  /* not an array */
    "[]",
    "[1]",
    "[{\"size\":4096,\"offset\":0}]",				       /* missing key */
    "[{\"base_host_virt_addr\":\"4096\",\"size\":4096,\"offset\":0}]", /* string */
    "[{\"base_host_virt_addr\":-4096,\"size\":4096,\"offset\":0}]",    /* negative */
    "[{\"base_host_virt_addr\":4096.5,\"size\":4096,\"offset\":0}]",   /* fraction */
    "[{\"base_host_virt_addr\":1e300,\"size\":4096,\"offset\":0}]",    /* huge */
    "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":8192}]",
    "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":4096,"
    "\"page_size_kib\":4}]", /* keys disagree */
    "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":4096},"
    "{\"base_host_virt_addr\":4194304,\"size\":2097152,\"offset\":4096,\"page_size\":2097152}]",
    "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0},"
    "{\"base_host_virt_addr\":8192,\"size\":4096,\"offset\":65536}]", /* address overlap */
    "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0},"
    "{\"base_host_virt_addr\":65536,\"size\":4096,\"offset\":4096}]",	  /* image overlap */
    "[{\"base_host_virt_addr\":4096,\"size\":67108864,\"offset\":4096}]", /* beyond image */
    "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":67108864}]", /* beyond image */
    "[{\"base_host_virt_addr\":4097,\"size\":4096,\"offset\":0}]",	  /* unaligned */
    "[{\"base_host_virt_addr\":4096,\"size\":0,\"offset\":0}]",		  /* empty */
    "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":null}]",
};

/* The one writer of the format: what it writes, the parser reads back unchanged; a buffer
 * too small is refused, never truncated. */
static void test_format_round_trip(void **state)
{
	(void)state;
	const struct ms_uffd_region regions[2] = {
	    {.base = 1ULL << 30, .size = 2 * MiB, .offset = 2 * MiB},
	    {.base = 8ULL << 30, .size = 2 * MiB, .offset = 0}};
	char json[512];
	int n = ms_uffd_handshake_format(json, sizeof(json), regions, 2, MS_UFFD_PAGE_2M);
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(json));
	struct ms_uffd_handshake hs;
	assert_int_equal(parse(json, &hs), 0);
	assert_int_equal(hs.page_size, MS_UFFD_PAGE_2M);
	assert_int_equal(hs.region_count, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(hs.regions[i].base, regions[i].base);
		assert_int_equal(hs.regions[i].size, regions[i].size);
		assert_int_equal(hs.regions[i].offset, regions[i].offset);
	}
	ms_uffd_handshake_fini(&hs);
	assert_int_equal(ms_uffd_handshake_format(json, (size_t)n, regions, 2, MS_UFFD_PAGE_2M),
			 -ENOSPC);
}

static void test_parse_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
		struct ms_uffd_handshake hs;
		int err = parse(bad_json[i], &hs);
		if (err != MS_EPROTO)
			fail_msg("case %zu (%s): %d", i, bad_json[i], err);
		assert_null(hs.regions);
	}
	/* Too many regions. */
	size_t cap = 64 * 300;
	char *many = malloc(cap);
	size_t n = (size_t)snprintf(many, cap, "[");
	for (int i = 0; i < MS_UFFD_MAX_REGIONS + 1; i++)
		n += (size_t)snprintf(many + n, cap - n,
				      "%s{\"base_host_virt_addr\":%d,\"size\":4096,\"offset\":%d}",
				      i ? "," : "", (i + 1) * 4096, i * 4096);
	snprintf(many + n, cap - n, "]");
	struct ms_uffd_handshake hs;
	assert_int_equal(parse(many, &hs), MS_EPROTO);
	free(many);
	/* Arbitrary bytes never crash. */
	static const char alphabet[] = "[]{},:\"0123456789.e-abcdefghijklmnopqrstuvwxyz_ ";
	char junk[256];
	for (int round = 0; round < 2000; round++) {
		size_t len = (size_t)(rand() % (int)sizeof(junk)) + 1;
		for (size_t i = 0; i < len; i++)
			junk[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
		if (ms_uffd_handshake_parse(junk, len, IMAGE, &hs) == 0)
			ms_uffd_handshake_fini(&hs);
	}
}

/* ---- the server on malformed handshakes ---- */

static int new_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	assert_true(fd >= 0);
	struct uffdio_api api = {.api = UFFD_API};
	assert_int_equal(ioctl(fd, UFFDIO_API, &api), 0);
	return fd;
}

static int client_connect(const char *path)
{
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	assert_int_equal(connect(sock, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return sock;
}

static void client_send(int sock, const char *json, const int *fds, int nfds)
{
	union {
		char raw[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} control;
	memset(&control, 0, sizeof(control));
	struct iovec iov = {.iov_base = (void *)json, .iov_len = strlen(json)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds) {
		msg.msg_control = control.raw;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	assert_int_equal(sendmsg(sock, &msg, 0), (ssize_t)strlen(json));
}

/* The server closes its end: our recv sees EOF within the timeout. */
static void expect_closed(int sock, int timeout_ms)
{
	struct pollfd pfd = {.fd = sock, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, timeout_ms), 1);
	char c;
	assert_int_equal(recv(sock, &c, 1, 0), 0);
}

static void test_server_rejects_bad_input(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct test_source src;
	test_source_init(&src, 4 * MiB, 4096);
	char *dir, *path = test_socket_path(&dir);
	struct ms_pageserver_options opts = {.workers = 1, .accept_timeout_ms = 400};
	struct ms_pageserver *srv =
	    ms_pageserver_new(path, &test_source_ops, &src, &opts, &(int){0});
	assert_non_null(srv);
	const char *good = "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,"
			   "\"page_size\":4096}]";
	struct {
		const char *what;
		const char *json;
		int nfds; /* uffd, then a memfd, then a pipe end */
		bool pipe_first;
	} cases[] = {
	    {"bad JSON", "[{\"base_host_virt_addr\":4096,", 1, false},
	    {"wrong page size",
	     "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,\"page_size\":8192}]", 1,
	     false},
	    {"overlapping regions",
	     "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0},"
	     "{\"base_host_virt_addr\":8192,\"size\":4096,\"offset\":65536}]",
	     1, false},
	    {"no fd", good, 0, false},
	    {"3 fds", good, 3, false},
	    {"offset out of range",
	     "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":4194304}]", 1, false},
	    {"mismatched page sizes",
	     "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":4096},"
	     "{\"base_host_virt_addr\":4194304,\"size\":2097152,\"offset\":2097152,"
	     "\"page_size\":2097152}]",
	     1, false},
	    {"first fd not a uffd", good, 1, true},
	    {"second fd not a file", good, 2, true},
	};
	int fds_before = test_count_fds();
	uint64_t rejected = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int uffd = new_uffd();
		int memfd = memfd_create("m", MFD_CLOEXEC);
		int pipefd[2];
		assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
		int fds[3] = {uffd, memfd, pipefd[0]};
		if (cases[i].pipe_first && cases[i].nfds == 1)
			fds[0] = pipefd[0];
		if (cases[i].pipe_first && cases[i].nfds == 2)
			fds[1] = pipefd[0];
		int sock = client_connect(path);
		client_send(sock, cases[i].json, fds, cases[i].nfds);
		expect_closed(sock, 3000);
		rejected++;
		/* The server counts after closing: wait for it. */
		for (int t = 0; t < 300 && ms_pageserver_handshakes_rejected(srv) < rejected; t++)
			usleep(10000);
		if (ms_pageserver_handshakes_rejected(srv) != rejected)
			fail_msg("case '%s' not rejected", cases[i].what);
		close(sock);
		close(uffd);
		close(memfd);
		close(pipefd[0]);
		close(pipefd[1]);
	}
	/* A client that connects and says nothing is closed after the timeout. */
	int silent = client_connect(path);
	expect_closed(silent, 3000);
	close(silent);
	for (int t = 0; t < 300 && ms_pageserver_handshakes_rejected(srv) < rejected + 1; t++)
		usleep(10000);
	assert_int_equal(ms_pageserver_handshakes_rejected(srv), rejected + 1);
	/* Every fd the server received was closed. */
	assert_int_equal(test_count_fds(), fds_before);
	assert_int_equal(ms_pageserver_sessions_accepted(srv), 0);

	/* Then a good (Firecracker-like) client is served. */
	struct fc_child child;
	struct fc_child_cfg cfg = {.sock_path = path,
				   .size = 4 * MiB,
				   .page_size = 4096,
				   .regions = 2,
				   .wp = true,
				   .source = src.data};
	assert_int_equal(fc_child_start(&cfg, &child), 0);
	struct ms_uffd_session *s;
	assert_int_equal(ms_pageserver_next_session(srv, 10LL * 1000000000, &s), 0);
	assert_int_equal(fc_child_cmd(&child, FC_READ_CHECK, 0, 4 * MiB, 0, 20000), 0);
	assert_int_equal(ms_pageserver_sessions_accepted(srv), 1);
	fc_child_exit(&child);
	assert_int_equal(ms_uffd_session_wait(s, 10LL * 1000000000), 0);
	ms_uffd_session_unref(s);
	ms_pageserver_free(srv);
	test_source_fini(&src);
	ms_test_rmtree(dir);
	free(dir);
	free(path);
}

/* A large handshake (many regions, > 1 KiB and > one socket buffer chunk) is received whole. */
static void test_server_large_handshake(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct test_source src;
	test_source_init(&src, 4 * MiB, 4096);
	char *dir, *path = test_socket_path(&dir);
	struct ms_pageserver_options opts = {.workers = 1, .accept_timeout_ms = 2000};
	struct ms_pageserver *srv =
	    ms_pageserver_new(path, &test_source_ops, &src, &opts, &(int){0});
	assert_non_null(srv);
	size_t cap = 256 * 1024;
	char *json = malloc(cap);
	size_t n = (size_t)snprintf(json, cap, "[");
	for (int i = 0; i < MS_UFFD_MAX_REGIONS; i++)
		n += (size_t)snprintf(json + n, cap - n,
				      "%s{\"base_host_virt_addr\":%d,\"size\":4096,\"offset\":%d,"
				      "\"page_size\":4096,\"padding\":\"%0600d\"}",
				      i ? "," : "", (i + 1) * 8192, i * 4096, 0);
	snprintf(json + n, cap - n, "]");
	assert_true(strlen(json) > 150000);
	int uffd = new_uffd();
	int sock = client_connect(path);
	client_send(sock, json, &uffd, 1);
	struct ms_uffd_session *s;
	assert_int_equal(ms_pageserver_next_session(srv, 10LL * 1000000000, &s), 0);
	assert_int_equal(ms_uffd_session_state(s), MS_UFFD_SESSION_SERVING);
	ms_uffd_session_stop(s);
	assert_int_equal(ms_uffd_session_state(s), MS_UFFD_SESSION_CLOSED);
	ms_uffd_session_unref(s);
	close(sock);
	close(uffd);
	free(json);
	ms_pageserver_free(srv);
	test_source_fini(&src);
	ms_test_rmtree(dir);
	free(dir);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_good),
	    cmocka_unit_test(test_format_round_trip),
	    cmocka_unit_test(test_parse_bad),
	    cmocka_unit_test(test_server_rejects_bad_input),
	    cmocka_unit_test(test_server_large_handshake),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
