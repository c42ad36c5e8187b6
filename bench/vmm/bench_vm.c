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
 *                         single-thread UFFDIO_COPY handler serving the same guest
 *                         (raw_uffd.h); goal >= 0.9.
 * Memory is warmed by an untimed round; the best of 3 rounds is reported.
 * Everything is left out where /dev/kvm does not open. The proc backend's
 * fault rates are bench/sandbox/bench_proc_fault.c.
 */
#include "bench.h"
#include "raw_uffd.h"
#include "sandbox/sandbox.h"
#include "uffd/pageserver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* The baseline: the raw handler (raw_uffd.h) serving the same guest. */
static double run_raw(const struct ms_sandbox_paused *paused, const char *path, uint64_t block,
		      double *verify_s, uint64_t *faults)
{
	struct ms_raw_uffd *r = ms_raw_uffd_start(path, source, MEM, block);
	double total = restore_and_verify(paused, -1, path, verify_s);
	*faults = ms_raw_uffd_faults(r);
	ms_raw_uffd_stop(r, path);
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
