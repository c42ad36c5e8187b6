/*
 * bench_pageserver.c - page-server fault throughput vs a raw UFFDIO_COPY loop.
 *
 * A forked child maps 256 MiB of anonymous MAP_PRIVATE memory, registers it
 * MISSING with a uffd (EVENT_REMOVE, as Firecracker does), sends Firecracker's
 * handshake, then reads one byte of every 4 KiB page and reports the time.
 * The same child workload runs against
 *   - the page server (ms_pageserver, in-memory source reporting is_cached, the
 *     stand-in for a local diff file), and
 *   - a minimal single-thread handler: poll, read events, UFFDIO_COPY (the baseline),
 * both installing 4 KiB per fault (fault_rate_4k) or the aligned 64 KiB block
 * around the fault (fault_rate_64k). Unit: pages/s (4 KiB pages made readable per
 * second of child wall time). Memory is warmed by an untimed round of each
 * first; the best of 3 alternating rounds is reported.
 *
 * pageserver.warm_layered_{4k,64k}: the same child against the page server over
 * the production source (uffd/filesource.c): a layered file whose header maps the
 * whole image to one build held in a local diff file (ms_source_file_open over a
 * memfd holding the bytes), the warm path of a resume on the node that paused.
 */
#include "bench.h"
#include "bench_guest.h"
#include "build/layered.h"
#include "uffd/filesource.h"
#include "uffd/handshake.h"
#include "uffd/pageserver.h"
#include "util/uffd_compat.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SIZE   (256ULL << 20)
#define PAGE   4096ULL
#define ROUNDS 3

static uint8_t *source;
static struct ms_bench_memsrc memsrc; /* source as a page source */

/* The child: returns its touch time in ns through the pipe, or -1. */
static void child_main(const char *path, int out)
{
	int64_t result = -1;
	uint8_t *mem = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
	struct uffdio_register reg = {.range = {.start = (uint64_t)(uintptr_t)mem, .len = SIZE},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (mem == MAP_FAILED || uffd < 0 || ioctl(uffd, UFFDIO_API, &api) ||
	    ioctl(uffd, UFFDIO_REGISTER, &reg))
		goto out;
	int sock = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)))
		goto out;
	char json[256];
	struct ms_uffd_region region = {.base = (uint64_t)(uintptr_t)mem, .size = SIZE};
	int n = ms_uffd_handshake_format(json, sizeof(json), &region, 1, PAGE);
	union {
		char raw[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	memset(&control, 0, sizeof(control));
	struct iovec iov = {.iov_base = json, .iov_len = (size_t)n};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.raw,
			     .msg_controllen = sizeof(control.raw)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &uffd, sizeof(int));
	if (sendmsg(sock, &msg, 0) != n)
		goto out;
	volatile uint8_t sink = 0;
	double t0 = ms_bench_now();
	for (uint64_t off = 0; off < SIZE; off += PAGE)
		sink += mem[off];
	double t1 = ms_bench_now();
	result = memcmp(mem, source, SIZE) == 0 ? (int64_t)((t1 - t0) * 1e9) : -2;
	(void)sink;
out:
	if (write(out, &result, sizeof(result)) != sizeof(result))
		_exit(1);
	_exit(0);
}

/* Runs one child against whatever listens on path; returns its touch time in seconds. */
static double run_child(const char *path)
{
	int p[2];
	if (pipe(p))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		child_main(path, p[1]);
	}
	close(p[1]);
	int64_t ns = -1;
	if (read(p[0], &ns, sizeof(ns)) != sizeof(ns))
		ns = -1;
	close(p[0]);
	waitpid(pid, NULL, 0);
	if (ns < 0) {
		fprintf(stderr, "bench_pageserver: child failed (%lld)\n", (long long)ns);
		exit(1);
	}
	return (double)ns / 1e9;
}

/* ---- the baseline: a minimal single-thread handler ---- */

struct raw {
	int listen_fd;
	int stop_efd;
	uint64_t block;
	pthread_t thread;
};

static void *raw_main(void *arg)
{
	struct raw *r = arg;
	int conn = accept(r->listen_fd, NULL, NULL);
	char buf[512];
	union {
		char raw[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.raw,
			     .msg_controllen = sizeof(control.raw)};
	if (recvmsg(conn, &msg, 0) <= 0 || !CMSG_FIRSTHDR(&msg))
		return NULL;
	int uffd;
	memcpy(&uffd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
	buf[sizeof(buf) - 1] = 0;
	unsigned long long base = 0;
	char *b = strstr(buf, "base_host_virt_addr\":");
	if (b)
		base = strtoull(b + 21, NULL, 10);
	for (;;) {
		struct pollfd pfd[2] = {{.fd = uffd, .events = POLLIN},
					{.fd = r->stop_efd, .events = POLLIN}};
		if (poll(pfd, 2, -1) < 0)
			continue;
		if (pfd[1].revents)
			break;
		struct uffd_msg msgs[64];
		ssize_t n = read(uffd, msgs, sizeof(msgs));
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t addr = msgs[i].arg.pagefault.address & ~(r->block - 1);
			struct uffdio_copy copy = {
			    .dst = addr,
			    .src = (uint64_t)(uintptr_t)(source + (addr - base)),
			    .len = r->block};
			if (ioctl(uffd, UFFDIO_COPY, &copy) && errno == EEXIST) {
				struct uffdio_range range = {.start = addr, .len = r->block};
				ioctl(uffd, UFFDIO_WAKE, &range);
			}
		}
	}
	close(uffd);
	close(conn);
	return NULL;
}

static double run_raw(const char *path, uint64_t block)
{
	struct raw r = {.block = block};
	unlink(path);
	r.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (bind(r.listen_fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(r.listen_fd, 1)) {
		perror("bench_pageserver: raw listen");
		exit(1);
	}
	r.stop_efd = eventfd(0, EFD_CLOEXEC);
	pthread_create(&r.thread, NULL, raw_main, &r);
	double secs = run_child(path);
	uint64_t one = 1;
	if (write(r.stop_efd, &one, sizeof(one)) != sizeof(one))
		exit(1);
	pthread_join(r.thread, NULL);
	close(r.stop_efd);
	close(r.listen_fd);
	unlink(path);
	return secs;
}

/* The layered file's resolver: the one build is the local diff file in ctx. */
static int resolve_diff(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
			struct ms_source **out)
{
	(void)build_id;
	(void)header;
	*out = ms_source_ref(ctx);
	return 0;
}

static double run_server(const char *path, uint64_t block, const struct ms_page_source_ops *ops,
			 void *ctx)
{
	struct ms_pageserver_options opts = {.workers = 1, .batch_bytes = block};
	int err;
	struct ms_pageserver *srv = ms_pageserver_new(path, ops, ctx, &opts, &err);
	if (!srv) {
		fprintf(stderr, "bench_pageserver: ms_pageserver_new: %s\n", strerror(-err));
		exit(1);
	}
	double secs = run_child(path);
	ms_pageserver_free(srv);
	return secs;
}

int main(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	if (fd < 0) {
		printf("SKIP: userfaultfd unavailable: %s\n", strerror(errno));
		return 77;
	}
	close(fd);
	ms_log_set_level(MS_LOG_WARN);
	source = aligned_alloc(PAGE, SIZE);
	for (uint64_t off = 0; off < SIZE; off += 8) {
		uint64_t v = off * 0x9e3779b97f4a7c15ULL;
		memcpy(source + off, &v, 8);
	}
	memsrc = (struct ms_bench_memsrc){source, SIZE};
	char path[64];
	snprintf(path, sizeof(path), "/tmp/bench_pageserver.%d.sock", (int)getpid());
	/* The production source: a layered file over a local diff file holding source. */
	int memfd = memfd_create("bench_pageserver.diff", MFD_CLOEXEC);
	if (memfd < 0 || write(memfd, source, SIZE) != (ssize_t)SIZE)
		ms_bench_die("bench_pageserver", "writing the diff file", errno);
	char diff_path[64];
	snprintf(diff_path, sizeof(diff_path), "/proc/self/fd/%d", memfd);
	int err = 0;
	struct ms_source *diff = ms_source_file_open(diff_path, false, &err);
	ms_uuid build;
	ms_uuid_generate(&build);
	struct ms_header *header = ms_header_new_base(&build, 1, PAGE, SIZE, true);
	struct ms_layered *file = header ? ms_layered_new(header, resolve_diff, diff) : NULL;
	if (!diff || !file)
		ms_bench_die("bench_pageserver", "opening the layered file", err ? err : ENOMEM);

	const uint64_t blocks[4] = {4096, 65536, 4096, 65536};
	const char *names[4] = {"pageserver.fault_rate_4k", "pageserver.fault_rate_64k",
				"pageserver.warm_layered_4k", "pageserver.warm_layered_64k"};
	const struct ms_page_source_ops *ops[4] = {&ms_bench_memsrc_ops, &ms_bench_memsrc_ops,
						   &ms_layered_page_source_ops,
						   &ms_layered_page_source_ops};
	void *ctxs[4] = {&memsrc, &memsrc, file, file};
	const double pages = (double)(SIZE / PAGE);
	for (int b = 0; b < 4; b++) {
		run_raw(path, blocks[b]); /* warm-up, untimed */
		run_server(path, blocks[b], ops[b], ctxs[b]);
		double best_raw = 1e9, best_srv = 1e9;
		for (int round = 0; round < ROUNDS; round++) {
			double t = run_raw(path, blocks[b]);
			if (t < best_raw)
				best_raw = t;
			t = run_server(path, blocks[b], ops[b], ctxs[b]);
			if (t < best_srv)
				best_srv = t;
		}
		ms_bench_report(names[b], pages / best_srv, "pages/s", "raw UFFDIO_COPY loop",
				pages / best_raw, 0.9);
	}
	ms_layered_free(file);
	ms_source_unref(diff);
	close(memfd);
	free(source);
	return 0;
}
