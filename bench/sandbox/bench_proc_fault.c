/*
 * bench_proc_fault.c - proc.fault_rate_4k and proc.fault_rate_64k: faults per
 * second of a lazily restored proc sandbox served by memsnap's page server,
 * against a raw UFFDIO_COPY handler serving the same kind of process, same run.
 *
 * A `pattern` guest (64 MiB) fills its memory and is paused; the paused memfd,
 * mapped read-only here, is the source for both servers. Each round restores
 * the snapshot lazily into a fresh sandbox process, lets it report once (it
 * faults in its mailbox, code and stack), then times the VERIFY epoch: the
 * guest reads every data page and checks it. The faults of that epoch alone
 * are counted (the page server's session metrics, the raw handler's counter).
 *
 *   value     page server (ms_pageserver, 1 worker, batch_bytes = block) faults/s
 *   baseline  the raw handler (bench/raw_uffd.h), faults/s; goal: ratio >= 0.9
 *
 * 4k installs one 4 KiB page per fault, 64k the aligned 64 KiB block around
 * it (the page server's batch_bytes, as bench/uffd's pageserver.fault_rate_64k).
 * One untimed warm-up round of each, then ROUNDS alternating rounds; the
 * median is reported, every round is printed. A third series, the page server
 * with spin_us < 0 (it sleeps in poll() at once, as the raw handler does), is
 * printed only: it separates the page server's per-fault code from its
 * busy-poll.
 *
 * The raw handler is what a minimal correct Firecracker-style handler must do
 * for this sandbox (sandbox/memory.c: MISSING|WP registration, WP_ASYNC,
 * EVENT_REMOVE, non-blocking uffd):
 *  1. answer the handshake (one sendmsg: JSON regions + uffd + memfd);
 *  2. read every pending event before installing (a REMOVE holds mmap_changing;
 *     installs then fail with EAGAIN and are retried after the next read);
 *  3. install read faults with UFFDIO_COPY_MODE_WP (else every page read counts
 *     as written), write faults writable; removed pages as zeros;
 *  4. a block that is partly present (EEXIST, or a short copy: EAGAIN with
 *     copy > 0) falls back to the faulting page, then to UFFDIO_WAKE;
 *  5. a WP fault (none arrive with WP_ASYNC, but one must never be left
 *     unanswered) is resolved by clearing the protection, which wakes it.
 * It runs before the sandbox is created: the host's mapping of RAM stays
 * PROT_NONE until the guest's first report, and that report needs the handler.
 *
 * MEMSNAP_BENCH_PLACEMENT=same pins the server's threads and the sandbox to one
 * CPU, =split puts them on two (CPU 0: server, CPU 1: sandbox and the tracer);
 * unset, the scheduler places them. On a small machine placement decides the
 * cost of a blocking handler's wakeups, so it is printed with the results.
 */
#include "bench.h"
#include "bench_guest.h"
#include "raw_uffd.h"
#include "sandbox/sandbox.h"
#include "uffd/pageserver.h"
#include "util/log.h"

#include <errno.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE   4096ULL
#define MEM    (64ULL << 20)
#define ROUNDS 7
#define SEC    1000000000LL

static const struct ms_sandbox_ops *ops;
static const char WHO[] = "bench_proc_fault";
static const uint8_t *source;	      /* the paused guest's memory, read-only */
static struct ms_bench_memsrc memsrc; /* source as a page source */

/* ---- one round ---- */

enum placement { PLACE_ANY, PLACE_SAME, PLACE_SPLIT };
static enum placement placement;
static cpu_set_t started_on; /* the affinity the bench was started with */

/* Pins the calling thread (threads it creates, and children it forks, inherit it) to
 * cpu, or back to started_on when cpu < 0. */
static void pin_self(int cpu)
{
	cpu_set_t set = started_on;
	if (cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
	}
	if (sched_setaffinity(0, sizeof(set), &set))
		ms_bench_die(WHO, "sched_setaffinity", errno);
}

enum server { SERVER_RAW, SERVER_PAGESERVER, SERVER_PAGESERVER_NOSPIN };

struct epoch {
	double seconds; /* the VERIFY epoch */
	uint64_t faults;
};

static uint64_t session_faults(struct ms_uffd_session *s)
{
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(s);
	return atomic_load(&m->faults_read) + atomic_load(&m->faults_write) +
	       atomic_load(&m->faults_wp);
}

static struct epoch run_round(const struct ms_sandbox_paused *paused, const char *path,
			      enum server which, uint64_t block)
{
	struct ms_raw_uffd *raw = NULL;
	struct ms_pageserver *srv = NULL;
	struct ms_uffd_session *session = NULL;
	if (placement != PLACE_ANY)
		pin_self(placement == PLACE_SAME ? 1 : 0);
	if (which == SERVER_RAW) {
		raw = ms_raw_uffd_start(path, source, MEM, block);
	} else {
		struct ms_pageserver_options opts = {
		    .workers = 1,
		    .batch_bytes = block,
		    .spin_us = which == SERVER_PAGESERVER_NOSPIN ? -1 : 0};
		int err;
		if (!(srv = ms_pageserver_new(path, &ms_bench_memsrc_ops, &memsrc, &opts, &err)))
			ms_bench_die(WHO, "ms_pageserver_new", err);
	}
	struct ms_sandbox_spec spec = {.mem_size = MEM,
				       .memory = MS_SANDBOX_LAZY,
				       .eager_fd = -1,
				       .lazy_socket = path,
				       .snapfile = paused->snapfile,
				       .snapfile_len = paused->snapfile_len};
	if (placement != PLACE_ANY)
		pin_self(1);
	struct ms_sandbox *sb;
	int err = ms_sandbox_create(ops, &spec, &sb);
	if (err)
		ms_bench_die(WHO, "lazy restore", err);
	/* the guest reports first (mailbox, code and stack fault in), then verifies */
	if ((err = ms_sandbox_run(sb)) || (err = ms_sandbox_wait_report(sb, 120 * SEC)))
		ms_bench_die(WHO, "resume", err);
	if (srv && (err = ms_pageserver_next_session(srv, 5 * SEC, &session)))
		ms_bench_die(WHO, "page server session", err);
	uint64_t f0 = raw ? ms_raw_uffd_faults(raw) : session_faults(session);
	double t0 = ms_bench_now();
	ms_bench_guest_step(WHO, sb, MS_PATTERN_VERIFY, 42, 1);
	double t1 = ms_bench_now();
	uint64_t f1 = raw ? ms_raw_uffd_faults(raw) : session_faults(session);
	uint64_t mismatches = ((uint64_t *)ms_sandbox_ram(sb))[MS_GUEST_RESULT0 / 8];
	ms_sandbox_destroy(sb);
	if (mismatches) {
		fprintf(stderr, "bench_proc_fault: %llu pages differ after the lazy restore\n",
			(unsigned long long)mismatches);
		exit(1);
	}
	if (raw) {
		ms_raw_uffd_stop(raw, path);
	} else {
		ms_uffd_session_unref(session);
		ms_pageserver_free(srv);
	}
	if (placement != PLACE_ANY)
		pin_self(-1);
	return (struct epoch){.seconds = t1 - t0, .faults = f1 - f0};
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Median, min and max of faults/s over the rounds; prints each round. */
static double summarize(const char *label, const struct epoch *e, int n, double *us_per_fault)
{
	double rate[ROUNDS], us[ROUNDS];
	fprintf(stderr, "  %-22s", label);
	for (int i = 0; i < n; i++) {
		rate[i] = (double)e[i].faults / e[i].seconds;
		us[i] = e[i].seconds * 1e6 / (double)e[i].faults;
		fprintf(stderr, " %.0f", rate[i]);
	}
	qsort(rate, (size_t)n, sizeof(double), cmp_double);
	qsort(us, (size_t)n, sizeof(double), cmp_double);
	fprintf(stderr,
		" faults/s\n  %-22s median %.0f faults/s (min %.0f, max %.0f), %.1f us/fault, "
		"%llu faults/epoch\n",
		"", rate[n / 2], rate[0], rate[n - 1], us[n / 2], (unsigned long long)e[0].faults);
	*us_per_fault = us[n / 2];
	return rate[n / 2];
}

static void fault_rate(const struct ms_sandbox_paused *paused, const char *path, uint64_t block,
		       const char *name)
{
	struct epoch raw[ROUNDS], srv[ROUNDS], nospin[ROUNDS];
	run_round(paused, path, SERVER_RAW, block); /* warm-up, untimed */
	run_round(paused, path, SERVER_PAGESERVER, block);
	for (int i = 0; i < ROUNDS; i++) {
		raw[i] = run_round(paused, path, SERVER_RAW, block);
		srv[i] = run_round(paused, path, SERVER_PAGESERVER, block);
		nospin[i] = run_round(paused, path, SERVER_PAGESERVER_NOSPIN, block);
		if (raw[i].faults != srv[i].faults || raw[i].faults != nospin[i].faults)
			fprintf(stderr,
				"bench_proc_fault: %s round %d: faults differ: %llu %llu %llu\n",
				name, i, (unsigned long long)raw[i].faults,
				(unsigned long long)srv[i].faults,
				(unsigned long long)nospin[i].faults);
	}
	double us_raw, us_srv, us_nospin;
	static const char *const where[] = {"scheduler's choice", "one CPU", "two CPUs"};
	fprintf(stderr, "%s (%llu KiB per fault, %d rounds, server and sandbox: %s):\n", name,
		(unsigned long long)(block >> 10), ROUNDS, where[placement]);
	double rate_raw = summarize("raw handler", raw, ROUNDS, &us_raw);
	double rate_srv = summarize("page server", srv, ROUNDS, &us_srv);
	double rate_nospin = summarize("page server, no spin", nospin, ROUNDS, &us_nospin);
	fprintf(stderr, "  ratio %.2f (no spin: %.2f)\n", rate_srv / rate_raw,
		rate_nospin / rate_raw);
	ms_bench_report(name, rate_srv, "faults/s", "raw UFFDIO_COPY handler", rate_raw, 0.9);
}

int main(void)
{
	ms_log_set_level(MS_LOG_WARN);
	ops = ms_sandbox_proc_ops();
	const char *place = getenv("MEMSNAP_BENCH_PLACEMENT");
	if (place && strcmp(place, "same") == 0)
		placement = PLACE_SAME;
	else if (place && strcmp(place, "split") == 0)
		placement = PLACE_SPLIT;
	else if (place && *place)
		ms_bench_die(WHO, "MEMSNAP_BENCH_PLACEMENT (same, split or unset)", EINVAL);
	if (sched_getaffinity(0, sizeof(started_on), &started_on))
		ms_bench_die(WHO, "sched_getaffinity", errno);
	if (placement != PLACE_ANY && (!CPU_ISSET(0, &started_on) || !CPU_ISSET(1, &started_on)))
		ms_bench_die(WHO, "MEMSNAP_BENCH_PLACEMENT needs CPUs 0 and 1", EINVAL);
	char path[64];
	snprintf(path, sizeof(path), "/tmp/bench_proc_fault.%d.sock", (int)getpid());
	struct ms_sandbox_paused paused;
	source = ms_bench_guest_snapshot(WHO, ops, MEM, &paused);
	memsrc = (struct ms_bench_memsrc){source, MEM};
	fault_rate(&paused, path, PAGE, "proc.fault_rate_4k");
	fault_rate(&paused, path, 65536, "proc.fault_rate_64k");
	munmap((void *)source, MEM);
	ms_sandbox_paused_fini(&paused);
	return 0;
}
