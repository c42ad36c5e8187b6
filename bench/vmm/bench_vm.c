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
#include "bench_guest.h"
#include "raw_uffd.h"
#include "sandbox/sandbox.h"
#include "uffd/pageserver.h"
#include "util/log.h"

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
static uint64_t MEM; /* the guest's memory for the backend under test */
static const char WHO[] = "bench_vm";
static const uint8_t *source;	      /* the paused guest's memory */
static struct ms_bench_memsrc memsrc; /* source as a page source */

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
		ms_bench_die(WHO, "restore", err);
	/* the guest reports first (it faults its mailbox in), then verifies */
	err = ms_sandbox_run(sb);
	if (!err)
		err = ms_sandbox_wait_report(sb, 120 * SEC);
	if (err)
		ms_bench_die(WHO, "resume", err);
	double t1 = ms_bench_now();
	ms_bench_guest_step(WHO, sb, MS_PATTERN_VERIFY, 42, 1);
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
	int err;
	struct ms_pageserver *srv =
	    ms_pageserver_new(path, &ms_bench_memsrc_ops, &memsrc, &opts, &err);
	if (!srv)
		ms_bench_die(WHO, "ms_pageserver_new", err);
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
	ms_log_set_level(MS_LOG_WARN);
	char path[64], why[160];
	snprintf(path, sizeof(path), "/tmp/bench_vm.%d.sock", (int)getpid());
	struct ms_sandbox_paused paused;
	if (ms_sandbox_backend_pick("kvm", &ops, why, sizeof(why)) == 0) {
		MEM = 256ULL << 20;
		source = ms_bench_guest_snapshot(WHO, ops, MEM, &paused);
		memsrc = (struct ms_bench_memsrc){source, MEM};
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
