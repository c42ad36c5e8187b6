/* uffd_test_util.c - a Firecracker-like child process and memory page sources for the tests. */
#include "sandbox/memory.h"
#include "uffd_test_util.h"
#include "ms_test.h"
#include "uffd/handshake.h"
#include "util/clock.h"
#include "util/uffd_compat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif

/* ---- page sources ---- */

static uint64_t test_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

void test_source_init(struct test_source *src, uint64_t size, uint64_t page_size)
{
	memset(src, 0, sizeof(*src));
	src->data = aligned_alloc(4096, size);
	assert_non_null(src->data);
	src->size = size;
	src->page_size = page_size;
	src->delay_off = -1;
	src->bad = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(src->bad != MAP_FAILED);
	for (uint64_t off = 0; off < size; off += 8) {
		uint64_t v = (off / 4096) % 5 == 4 ? 0 : test_mix(off);
		memcpy(src->data + off, &v, 8);
	}
}

void test_source_fini(struct test_source *src)
{
	munmap(src->bad, src->size);
	free(src->data);
}

bool test_page_is_zero(const uint8_t *p, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static int test_source_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	struct test_source *src = ctx;
	atomic_fetch_add(&src->reads, 1);
	atomic_fetch_add(&src->in_read, 1);
	if (src->delay_ns && (src->delay_off < 0 || ((uint64_t)src->delay_off >= off &&
						     (uint64_t)src->delay_off < off + len)))
		ms_clock_sleep_ns(src->delay_ns);
	int err = 0;
	if (atomic_load(&src->fail_always))
		err = -EIO;
	else if (atomic_fetch_sub(&src->fail_next, 1) > 0)
		err = -EIO;
	else if (off > src->size || len > src->size - off)
		err = -EINVAL;
	else
		memcpy(dst, src->data + off, len);
	atomic_fetch_sub(&src->in_read, 1);
	return err;
}

/* Zero pages when zero_hint says so, else LOCAL when cached (inline serving), else REMOTE. */
static void test_source_classify(void *ctx, uint64_t off, uint64_t page_size, size_t npages,
				 uint8_t *kinds)
{
	struct test_source *src = ctx;
	for (size_t i = 0; i < npages; i++, off += page_size) {
		if (src->zero_hint && off + page_size <= src->size &&
		    test_page_is_zero(src->data + off, page_size))
			kinds[i] = MS_PAGE_ZERO;
		else
			kinds[i] = src->cached ? MS_PAGE_LOCAL : MS_PAGE_REMOTE;
	}
}

static uint64_t test_source_size(void *ctx)
{
	struct test_source *src = ctx;
	return src->size;
}

/* By src->slice: none, a view of data, or a view the kernel cannot read. The hold is the
 * source itself; holds counts the ones not released. */
static int test_source_slice(void *ctx, uint64_t off, size_t len, const void **ptr, void **hold)
{
	struct test_source *src = ctx;
	int mode = atomic_load(&src->slice);
	if (mode == TEST_SLICE_NONE)
		return -ENOTSUP;
	if (off > src->size || len > src->size - off)
		return -ERANGE;
	*ptr = (mode == TEST_SLICE_BAD ? src->bad : src->data) + off;
	*hold = src;
	atomic_fetch_add(&src->slices, 1);
	atomic_fetch_add(&src->holds, 1);
	return 0;
}

static void test_source_unhold(void *ctx, void *hold)
{
	struct test_source *src = ctx;
	if (hold != src || atomic_fetch_sub(&src->holds, 1) <= 0)
		abort(); /* a hold released twice or not ours (a page-server thread: no cmocka) */
}

const struct ms_page_source_ops test_source_ops = {
    .read = test_source_read,
    .classify = test_source_classify,
    .size = test_source_size,
    .slice = test_source_slice,
    .unhold = test_source_unhold,
};

/* ---- misc ---- */

char *test_socket_path(char **dir)
{
	*dir = ms_test_tmpdir();
	char *path = malloc(strlen(*dir) + 16);
	sprintf(path, "%s/uffd.sock", *dir);
	return path;
}

int test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

bool test_uffd_available(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		printf("SKIP: userfaultfd unavailable: %s\n", strerror(errno));
		return false;
	}
	close(fd);
	return true;
}

/* ---- the Firecracker-like child ---- */

struct fc_state {
	const struct fc_child_cfg *cfg;
	uint8_t *base[2];
	uint64_t region_size;
	pthread_t async;
	uint64_t async_off;
	int async_result;
};

static uint8_t *fc_addr(struct fc_state *st, uint64_t off)
{
	unsigned r = st->cfg->regions == 2 && off >= st->region_size ? 1 : 0;
	return st->base[r] + (off - r * st->region_size);
}

static int fc_classify(struct fc_state *st, uint64_t off, uint64_t len)
{
	const uint8_t *p = fc_addr(st, off);
	if (memcmp(p, st->cfg->source + off, len) == 0)
		return 0;
	return test_page_is_zero(p, len) ? 1 : 2;
}

static void *fc_async_main(void *arg)
{
	struct fc_state *st = arg;
	st->async_result = fc_classify(st, st->async_off, 4096);
	return NULL;
}

static int64_t fc_run(struct fc_state *st, int op, uint64_t off, uint64_t len, uint64_t arg)
{
	uint64_t ps = st->cfg->page_size;
	switch (op) {
	case FC_READ_CHECK: {
		int64_t bad = 0;
		for (uint64_t o = off; o < off + len; o += 4096) {
			const uint8_t *p = fc_addr(st, o);
			bool ok;
			if (arg == 0)
				ok = memcmp(p, st->cfg->source + o, 4096) == 0;
			else if (arg == 1)
				ok = test_page_is_zero(p, 4096);
			else {
				ok = true;
				for (int i = 0; i < 4096 && ok; i++)
					ok = p[i] == (uint8_t)(arg - 2);
			}
			bad += !ok;
		}
		return bad;
	}
	case FC_WRITE:
		for (uint64_t o = off; o < off + len; o += 4096)
			memset(fc_addr(st, o), (int)arg, 4096);
		return 0;
	case FC_MADVISE: {
		int64_t t0 = ms_clock_now_ns();
		uint64_t start = off & ~(ps - 1);
		if (madvise(fc_addr(st, start), len, MADV_DONTNEED) != 0)
			return -errno;
		return ms_clock_now_ns() - t0;
	}
	case FC_ASYNC_READ:
		st->async_off = off;
		return -pthread_create(&st->async, NULL, fc_async_main, st);
	case FC_JOIN:
		pthread_join(st->async, NULL);
		return st->async_result;
	default:
		_exit(0);
	}
}

static int fc_setup(struct fc_state *st, int *sock_out)
{
	const struct fc_child_cfg *cfg = st->cfg;
	bool huge = cfg->page_size != 4096;
	unsigned nreg = cfg->regions == 2 ? 2 : 1;
	st->region_size = cfg->size / nreg;
	int memfd = -1;
	if (cfg->shmem) {
		memfd =
		    memfd_create("guest", MFD_CLOEXEC | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
		if (memfd < 0 || ftruncate(memfd, (off_t)cfg->size) != 0)
			return -errno;
	}
	for (unsigned r = 0; r < nreg; r++) {
		void *p;
		if (cfg->shmem)
			p = mmap(NULL, st->region_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd,
				 (off_t)(r * st->region_size));
		else
			p = mmap(NULL, st->region_size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
				     (huge ? MAP_HUGETLB | MAP_HUGE_2MB : 0),
				 -1, 0);
		if (p == MAP_FAILED)
			return -errno;
		st->base[r] = p;
	}
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		return -errno;
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
	if (cfg->wp && (cfg->shmem || huge))
		api.features |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	if (ioctl(uffd, UFFDIO_API, &api) != 0)
		return -errno;
	for (unsigned r = 0; r < nreg; r++) {
		struct uffdio_register reg = {
		    .range = {.start = (uint64_t)(uintptr_t)st->base[r], .len = st->region_size},
		    .mode = UFFDIO_REGISTER_MODE_MISSING | (cfg->wp ? UFFDIO_REGISTER_MODE_WP : 0)};
		if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
			return -errno;
	}
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strncpy(addr.sun_path, cfg->sock_path, sizeof(addr.sun_path) - 1);
	/* The server may start after the fork (see fc_child_spawn): retry for a while. */
	int rc = -1;
	for (int i = 0; i < 1000 && rc != 0; i++) {
		rc = connect(sock, (struct sockaddr *)&addr, sizeof(addr));
		if (rc != 0)
			usleep(5000);
	}
	if (rc != 0)
		return -errno;
	struct ms_uffd_region regions[2];
	for (unsigned r = 0; r < nreg; r++)
		regions[r] = (struct ms_uffd_region){.base = (uint64_t)(uintptr_t)st->base[r],
						     .size = st->region_size,
						     .offset = r * st->region_size};
	char json[1024];
	int n = ms_uffd_handshake_format(json, sizeof(json), regions, nreg, cfg->page_size);
	if (n < 0)
		return n;
	int fds[2] = {uffd, memfd};
	int err = ms_guestmem_send_fds(sock, json, (size_t)n, fds, memfd >= 0 ? 2 : 1);
	if (err)
		return err;
	*sock_out = sock; /* never closed, as Firecracker does */
	return 0;
}

int fc_child_spawn(const struct fc_child_cfg *cfg, struct fc_child *out)
{
	int cmd[2], res[2];
	if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(res, O_CLOEXEC) != 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(cmd[1]);
		close(res[0]);
		struct fc_state st = {.cfg = cfg};
		int sock = -1;
		int64_t status = fc_setup(&st, &sock);
		if (write(res[1], &status, sizeof(status)) != sizeof(status) || status)
			_exit(1);
		for (;;) {
			uint64_t c[4];
			if (read(cmd[0], c, sizeof(c)) != sizeof(c))
				_exit(0);
			int64_t r = fc_run(&st, (int)c[0], c[1], c[2], c[3]);
			if (write(res[1], &r, sizeof(r)) != sizeof(r))
				_exit(1);
		}
	}
	close(cmd[0]);
	close(res[1]);
	out->pid = pid;
	out->cmd_fd = cmd[1];
	out->res_fd = res[0];
	return 0;
}

int fc_child_ready(struct fc_child *out)
{
	struct pollfd pfd = {.fd = out->res_fd, .events = POLLIN};
	int64_t status = INT64_MIN;
	if (poll(&pfd, 1, 10000) == 1 &&
	    read(out->res_fd, &status, sizeof(status)) == sizeof(status) && status == 0)
		return 0;
	fc_child_kill(out);
	return status == INT64_MIN ? -ETIMEDOUT : (int)status;
}

int fc_child_start(const struct fc_child_cfg *cfg, struct fc_child *out)
{
	int err = fc_child_spawn(cfg, out);
	return err ? err : fc_child_ready(out);
}

int64_t fc_child_cmd(struct fc_child *c, int op, uint64_t off, uint64_t len, uint64_t arg,
		     int timeout_ms)
{
	uint64_t cmd[4] = {(uint64_t)op, off, len, arg};
	if (write(c->cmd_fd, cmd, sizeof(cmd)) != sizeof(cmd))
		return INT64_MIN;
	struct pollfd pfd = {.fd = c->res_fd, .events = POLLIN};
	int64_t r;
	if (poll(&pfd, 1, timeout_ms) != 1 || read(c->res_fd, &r, sizeof(r)) != sizeof(r))
		return INT64_MIN;
	return r;
}

void fc_child_kill(struct fc_child *c)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
	}
	c->pid = -1;
	close(c->cmd_fd);
	close(c->res_fd);
}

void fc_child_exit(struct fc_child *c)
{
	uint64_t cmd[4] = {FC_EXIT, 0, 0, 0};
	if (write(c->cmd_fd, cmd, sizeof(cmd)) == sizeof(cmd)) {
		int status;
		waitpid(c->pid, &status, 0);
		c->pid = -1;
	}
	fc_child_kill(c);
}
