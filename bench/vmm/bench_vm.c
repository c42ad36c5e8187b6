/*
 * bench_vm.c - a kvm guest restored lazily through the page server.
 *
 * A `pattern` guest fills its memory and is paused; its memfd is the source.
 * Then, in the same run:
 *   vm.lazy_resume_256m   (kvm) wall time from "create the VM" to "the guest verified
 *                         every page", restored lazily through ms_pageserver (64 KiB
 *                         blocks), vs the same with an eager restore; ratio lazy / eager.
 *   vm.fault_rate_4k      (kvm) pages per second while the guest reads every page, one
 *                         4 KiB page installed per fault: the page server vs a raw
 *                         single-thread UFFDIO_COPY handler serving the same guest (poll,
 *                         read, copy write-protected as the page server does for read
 *                         faults); goal >= 0.9.
 * Memory is warmed by an untimed round; the best of 3 rounds is reported.
 * Everything is left out where /dev/kvm does not open. The proc backend's
 * fault rates are bench/sandbox/bench_proc_fault.c.
 */
#include "bench.h"
#include "sandbox/sandbox.h"
#include "uffd/handshake.h"
#include "uffd/pageserver.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE   4096ULL
#define ROUNDS 3
#define SEC    1000000000LL

static const struct ms_sandbox_ops *ops;
static uint64_t MEM;	      /* the guest's memory for the backend under test */
static const uint8_t *source; /* the paused guest's memory */

static int src_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	memcpy(dst, source + off, len);
	return 0;
}
static bool src_cached(void *ctx, uint64_t off, size_t len)
{
	return true;
}
static uint64_t src_size(void *ctx)
{
	return MEM;
}
static const struct ms_page_source_ops src_ops = {
    .read = src_read, .is_cached = src_cached, .size = src_size};

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_vm: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static void step(struct ms_sandbox *sb, uint64_t cmd, uint64_t a0, uint64_t a1)
{
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb);
	box[0] = cmd, box[1] = a0, box[2] = a1;
	int err = ms_sandbox_run(sb);
	if (!err)
		err = ms_sandbox_wait_report(sb, 120 * SEC);
	if (err) {
		fprintf(stderr, "bench_vm: guest: %s\n", ms_sandbox_death_cause(sb));
		die("run", err);
	}
}

/*
 * Restores the paused guest (eager from fd, or lazy through socket) and lets it
 * verify all its memory. Returns the total seconds; *verify_s: the verify epoch alone.
 */
static double restore_and_verify(const struct ms_sandbox_paused *paused, int eager_fd,
				 const char *socket, double *verify_s)
{
	double t0 = ms_bench_now();
	struct ms_sandbox_spec spec = {.mem_size = MEM,
				       .memory = socket ? MS_SANDBOX_LAZY : MS_SANDBOX_EAGER,
				       .eager_fd = eager_fd,
				       .lazy_socket = socket,
				       .snapfile = paused->snapfile,
				       .snapfile_len = paused->snapfile_len};
	struct ms_sandbox *sb;
	int err = ms_sandbox_create(ops, &spec, &sb);
	if (err)
		die("restore", err);
	/* the guest reports first (it faults its mailbox in), then verifies */
	err = ms_sandbox_run(sb);
	if (!err)
		err = ms_sandbox_wait_report(sb, 120 * SEC);
	if (err)
		die("resume", err);
	double t1 = ms_bench_now();
	step(sb, MS_PATTERN_VERIFY, 42, 1);
	double t2 = ms_bench_now();
	uint64_t mismatches = ((uint64_t *)ms_sandbox_ram(sb))[MS_GUEST_RESULT0 / 8];
	ms_sandbox_destroy(sb);
	if (mismatches) {
		fprintf(stderr, "bench_vm: %llu pages differ after the restore\n",
			(unsigned long long)mismatches);
		exit(1);
	}
	*verify_s = t2 - t1;
	return t2 - t0;
}

/* ---- the baseline: a raw single-thread UFFDIO_COPY handler ---- */

struct raw {
	int listen_fd, stop_efd;
	pthread_t thread;
	uint64_t block; /* bytes installed per fault: the aligned block around it */
	uint64_t faults;
};

static void *raw_main(void *arg)
{
	struct raw *r = arg;
	int conn = accept(r->listen_fd, NULL, NULL);
	char *text;
	size_t len;
	int fds[2], nfds;
	struct ms_uffd_handshake hs;
	if (conn < 0 || ms_uffd_handshake_recv(conn, 5 * SEC, &text, &len, fds, &nfds))
		die("raw handshake", EPROTO);
	if (ms_uffd_handshake_parse(text, len, MEM, &hs))
		die("raw handshake parse", EPROTO);
	free(text);
	int uffd = fds[0];
	if (nfds == 2)
		close(fds[1]);
	uint64_t base = hs.regions[0].base;
	ms_uffd_handshake_fini(&hs);
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
			uint64_t addr = msgs[i].arg.pagefault.address & ~(PAGE - 1);
			uint64_t start = addr & ~(r->block - 1);
			bool write = msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE;
			struct uffdio_copy copy = {
			    .dst = start,
			    .src = (uint64_t)(uintptr_t)(source + (start - base)),
			    .len = r->block,
			    .mode = write ? 0 : UFFDIO_COPY_MODE_WP};
			r->faults++;
			if (ioctl(uffd, UFFDIO_COPY, &copy) == 0 || errno != EEXIST)
				continue;
			/* part of the block was there: the faulting page alone, else wake */
			copy = (struct uffdio_copy){
			    .dst = addr,
			    .src = (uint64_t)(uintptr_t)(source + (addr - base)),
			    .len = PAGE,
			    .mode = write ? 0 : UFFDIO_COPY_MODE_WP};
			if (ioctl(uffd, UFFDIO_COPY, &copy) && errno == EEXIST) {
				struct uffdio_range range = {.start = addr, .len = PAGE};
				ioctl(uffd, UFFDIO_WAKE, &range);
			}
		}
	}
	close(uffd);
	close(conn);
	return NULL;
}

static double run_raw(const struct ms_sandbox_paused *paused, const char *path, uint64_t block,
		      double *verify_s, uint64_t *faults)
{
	struct raw r = {.block = block, .faults = 0};
	unlink(path);
	r.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (bind(r.listen_fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(r.listen_fd, 1))
		die("raw listen", errno);
	r.stop_efd = eventfd(0, EFD_CLOEXEC);
	pthread_create(&r.thread, NULL, raw_main, &r);
	double total = restore_and_verify(paused, -1, path, verify_s);
	uint64_t one = 1;
	if (write(r.stop_efd, &one, sizeof(one)) != sizeof(one))
		die("stop", errno);
	pthread_join(r.thread, NULL);
	close(r.stop_efd);
	close(r.listen_fd);
	unlink(path);
	*faults = r.faults;
	return total;
}

static double run_server(const struct ms_sandbox_paused *paused, const char *path, uint64_t batch,
			 double *verify_s, uint64_t *faults)
{
	struct ms_pageserver_options opts = {.workers = 1, .batch_bytes = batch};
	struct ms_pageserver *srv = ms_pageserver_new(path, &src_ops, NULL, &opts);
	if (!srv)
		die("ms_pageserver_new", errno);
	double total = restore_and_verify(paused, -1, path, verify_s);
	struct ms_uffd_session *s;
	*faults = 0;
	if (!ms_pageserver_next_session(srv, 0, &s)) {
		const struct ms_uffd_metrics *m = ms_uffd_session_metrics(s);
		*faults = m->faults_read + m->faults_write + m->faults_wp;
		ms_uffd_session_unref(s);
	}
	ms_pageserver_free(srv);
	return total;
}

/* The snapshot: a guest that filled all its memory, paused; source maps its memfd. */
static void snapshot(struct ms_sandbox_paused *paused)
{
	struct ms_sandbox_spec fresh = {
	    .guest = MS_GUEST_PATTERN, .mem_size = MEM, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *sb;
	int err = ms_sandbox_create(ops, &fresh, &sb);
	if (err)
		die("start", err);
	step(sb, MS_PATTERN_FILL, 42, 1);
	((uint64_t *)ms_sandbox_ram(sb))[0] = 0; /* after a resume: report first */
	if ((err = ms_sandbox_pause(sb, paused)))
		die("pause", err);
	ms_sandbox_destroy(sb);
	source = mmap(NULL, MEM, PROT_READ, MAP_SHARED | MAP_POPULATE, paused->memfd, 0);
	if (source == MAP_FAILED)
		die("mmap", errno);
}

/* Fault rate at block bytes per fault: the page server vs the raw handler, best of 3. */
static void fault_rate(const struct ms_sandbox_paused *paused, const char *path, uint64_t block,
		       const char *name)
{
	const double pages = (double)(MEM / PAGE);
	double v, best_raw = 1e9, best_srv = 1e9;
	uint64_t faults_raw = 0, faults_srv = 0, f;
	run_raw(paused, path, block, &v, &f); /* warm-up, untimed */
	for (int round = 0; round < ROUNDS; round++) {
		run_raw(paused, path, block, &v, &f);
		if (v < best_raw)
			best_raw = v, faults_raw = f;
		run_server(paused, path, block, &v, &f);
		if (v < best_srv)
			best_srv = v, faults_srv = f;
	}
	printf("%s: verify epoch, %llu KiB per fault: raw %.3f s (%llu faults, %.1f us/fault), "
	       "page server %.3f s (%llu faults, %.1f us/fault)\n",
	       name, (unsigned long long)(block >> 10), best_raw, (unsigned long long)faults_raw,
	       best_raw * 1e6 / (double)(faults_raw ? faults_raw : 1), best_srv,
	       (unsigned long long)faults_srv,
	       best_srv * 1e6 / (double)(faults_srv ? faults_srv : 1));
	ms_bench_report(name, pages / best_srv, "pages/s", "raw UFFDIO_COPY handler",
			pages / best_raw, 0.9);
}

int main(void)
{
	setenv("MEMSNAP_LOG", "warn", 0);
	char path[64], why[160];
	snprintf(path, sizeof(path), "/tmp/bench_vm.%d.sock", (int)getpid());
	struct ms_sandbox_paused paused;
	if (ms_sandbox_backend_pick("kvm", &ops, why, sizeof(why)) == 0) {
		MEM = 256ULL << 20;
		snapshot(&paused);
		double v, best_eager = 1e9, best_lazy = 1e9;
		uint64_t f;
		restore_and_verify(&paused, paused.memfd, NULL, &v); /* warm-up, untimed */
		run_server(&paused, path, 65536, &v, &f);
		for (int round = 0; round < ROUNDS; round++) {
			double t = restore_and_verify(&paused, paused.memfd, NULL, &v);
			best_eager = t < best_eager ? t : best_eager;
			t = run_server(&paused, path, 65536, &v, &f);
			best_lazy = t < best_lazy ? t : best_lazy;
		}
		printf("vm: eager %.3f s, lazy (64 KiB blocks) %.3f s\n", best_eager, best_lazy);
		ms_bench_report("vm.lazy_resume_256m", best_lazy, "s", "eager restore", best_eager,
				0);
		fault_rate(&paused, path, PAGE, "vm.fault_rate_4k");
		munmap((void *)source, MEM);
		ms_sandbox_paused_fini(&paused);
	} else {
		printf("bench_vm: %s: the vm.* entries are left out\n", why);
	}
	return 0;
}
