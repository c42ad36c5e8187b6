/*
 * demo_sandbox.c - "memsnap demo sandbox": a real guest in a sandbox (kvm where /dev/kvm
 * opens, else proc) fills its memory, is paused with the dedup compare stalled, resumed
 * warm while dedup is stalled (the guest verifies every page), resumed again as a control
 * once the build is published, and resumed cold from the store with an empty cache.
 * Prints the timings.
 */
#include "build/buildfile.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/demo.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "storage/artifact.h"
#include "uffd/pageserver.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define P MS_PAGE_SIZE

static const char demo_sandbox_usage[] =
    "usage: memsnap demo sandbox --store URI [--backend auto|kvm|proc] [--mem MIB] [--stall "
    "SECONDS]\n";
static const char demo_sandbox_help[] =
    "usage: memsnap demo sandbox --store URI [--backend auto|kvm|proc] [--mem MIB] [--stall "
    "SECONDS]\n\n"
    "Runs the pattern guest in a sandbox (kvm where /dev/kvm opens, else proc;\n"
    "the kvm backend is not built yet, so auto picks proc), fills its memory, pauses\n"
    "it with the dedup compare stalled for SECONDS (default 5), resumes it warm\n"
    "while dedup is stalled (the guest verifies every page), lets dedup, drain and\n"
    "upload finish, then resumes it cold from the store with an empty cache and\n"
    "verifies again. Prints the timings.\n";

/* Restores paused lazily from file through a page server; the guest then verifies itself. */
static int demo_sandbox_resume(const struct ms_sandbox_ops *backend, struct ms_layered *file,
			       const char *sock, const struct ms_sandbox_paused *paused,
			       uint64_t size, uint64_t seed, uint64_t epoch, uint64_t *mismatches,
			       double *ms, uint64_t *faults)
{
	int err;
	struct ms_pageserver *srv = ms_demo_pageserver(sock, file, &err);
	if (!srv)
		return err;
	int64_t t0 = ms_clock_now_ns();
	struct ms_sandbox_spec spec = {.mem_size = size,
				       .memory = MS_SANDBOX_LAZY,
				       .lazy_socket = sock,
				       .snapfile = paused->snapfile,
				       .snapfile_len = paused->snapfile_len};
	struct ms_sandbox *p = NULL;
	struct ms_uffd_session *session = NULL;
	err = ms_sandbox_create(backend, &spec, &p);
	/* the guest reports once (faulting its mailbox in), then verifies all its memory */
	if (!err && !(err = ms_sandbox_run(p)) &&
	    !(err = ms_sandbox_wait_report(p, 30 * MS_NSEC_PER_SEC))) {
		uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
		box[MS_GUEST_CMD / 8] = MS_PATTERN_VERIFY;
		box[MS_GUEST_ARG0 / 8] = seed;
		box[MS_GUEST_ARG1 / 8] = epoch;
		if (!(err = ms_sandbox_run(p)) &&
		    !(err = ms_sandbox_wait_report(p, 60 * MS_NSEC_PER_SEC)))
			*mismatches = box[MS_GUEST_RESULT0 / 8];
	}
	*ms = (double)(ms_clock_now_ns() - t0) / 1e6;
	if (err == -ECHILD)
		fprintf(stderr, "memsnap: the sandbox died: %s\n", ms_sandbox_death_cause(p));
	if (!err && !ms_pageserver_next_session(srv, 0, &session)) {
		const struct ms_uffd_metrics *m = ms_uffd_session_metrics(session);
		*faults = atomic_load(&m->faults_read) + atomic_load(&m->faults_write);
		ms_uffd_session_unref(session);
	}
	ms_sandbox_destroy(p);
	ms_pageserver_free(srv);
	return err;
}

int ms_cli_demo_sandbox(int argc, char **argv)
{
	struct ms_demo_opts o = {.backend = "auto", .mib = 64, .stall = 5};
	int rc;
	if (!ms_demo_parse(argc, argv, "sbmt", demo_sandbox_help, demo_sandbox_usage, &o, &rc))
		return rc;
	const char *store_uri = o.store_uri;
	uint64_t mib = o.mib;
	double stall = o.stall;
	const struct ms_sandbox_ops *backend_ops;
	char why[160];
	int picked = ms_sandbox_backend_pick(o.backend, &backend_ops, why, sizeof(why));
	if (picked == -EINVAL) {
		fprintf(stderr, "memsnap: %s\n", why);
		fputs(demo_sandbox_usage, stderr);
		return 2;
	}
	if (picked) {
		fprintf(stderr, "memsnap: %s; use --backend proc\n", why);
		return 1;
	}
	if (!getenv("MEMSNAP_LOG"))
		ms_log_set_level(MS_LOG_WARN);
	printf("sandbox: %s\n", why);
	int err;
	rc = 1;
	uint64_t size = mib << 20, seed = 0x5eed, epoch = 1;
	struct ms_demo_work w;
	if ((err = ms_demo_work_init(&w, "sandbox")))
		return ms_cli_fail("work dir", err);
	const char *node_a = w.node_a, *sock = w.sock;
	struct ms_store *store = ms_cli_store_open(store_uri, NULL, &err);
	struct ms_build_file *parent = NULL, *cold = NULL;
	struct ms_pause *pause = NULL;
	struct ms_sandbox *p = NULL;
	struct ms_sandbox_paused paused = {.memfd = -1};
	struct ms_future *gate = ms_future_new(NULL);
	if (!store) {
		rc = ms_cli_fail(store_uri, err);
		goto out;
	}
	err = -ENOMEM;
	if (!gate)
		goto fail;
	/* run: the guest fills its memory */
	int64_t t0 = ms_clock_now_ns();
	struct ms_sandbox_spec fresh = {
	    .guest = MS_GUEST_PATTERN, .mem_size = size, .memory = MS_SANDBOX_FRESH};
	if ((err = ms_sandbox_create(backend_ops, &fresh, &p)))
		goto fail;
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[MS_GUEST_CMD / 8] = MS_PATTERN_FILL;
	box[MS_GUEST_ARG0 / 8] = seed;
	box[MS_GUEST_ARG1 / 8] = epoch;
	if ((err = ms_sandbox_run(p)) || (err = ms_sandbox_wait_report(p, 60 * MS_NSEC_PER_SEC)))
		goto fail;
	box[MS_GUEST_CMD / 8] = 0; /* after a resume: report first */
	printf("run:    pattern guest, %llu MiB, filled in %.1f ms\n", (unsigned long long)mib,
	       (double)(ms_clock_now_ns() - t0) / 1e6);
	/* pause: stop, state, written set, memory handed to the pipeline */
	t0 = ms_clock_now_ns();
	if ((err = ms_sandbox_pause(p, &paused)))
		goto fail;
	double t_stop = (double)(ms_clock_now_ns() - t0) / 1e6;
	ms_sandbox_destroy(p);
	p = NULL;
	ms_uuid template_id;
	ms_uuid_generate(&template_id);
	/* a fresh sandbox's parent: the empty template (all nil) */
	if (!(parent = ms_build_file_new(
		  store, ms_header_new_base(&template_id, MS_HEADER_V4, P, size, false), node_a,
		  &err)))
		goto fail;
	struct ms_pause_config cfg = {.store = store,
				      .diffs = parent->cache.diffs,
				      .cache_dir = node_a,
				      .inflight = true,
				      .compare_gate = gate};
	int memfd = paused.memfd;
	paused.memfd = -1;
	struct ms_pageset *no_empty = ms_pageset_new();
	int64_t t1 = ms_clock_now_ns();
	err = no_empty ? ms_pause_start(&cfg, parent->file, memfd, paused.written, no_empty,
					paused.snapfile, paused.snapfile_len, &pause)
		       : -ENOMEM;
	ms_pageset_free(no_empty);
	if (err)
		goto fail;
	double t_resumable = (double)(ms_clock_now_ns() - t1) / 1e6;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(ms_pause_build_id(pause), id);
	printf("pause:  build %s: stopped and saved in %.2f ms (%llu pages written), resumable "
	       "%.2f ms later; dedup stalled %.0f s\n",
	       id, t_stop, (unsigned long long)ms_pageset_count(paused.written), t_resumable,
	       stall);
	/* warm resume while the compare is stalled */
	uint64_t bad = 1, faults = 0;
	double ms;
	if ((err = demo_sandbox_resume(backend_ops, ms_pause_file(pause), sock, &paused, size, seed,
				       epoch, &bad, &ms, &faults)))
		goto fail;
	bool stalled = ms_pause_wait(pause, MS_PAUSE_COMPARED, 0) == -ETIMEDOUT;
	printf("warm:   lazy restore + the guest verified every page: %llu mismatches, %.1f ms, "
	       "%llu faults; dedup %s\n",
	       (unsigned long long)bad, ms, (unsigned long long)faults,
	       stalled ? "still stalled: the resume did not wait for it" : "had finished");
	uint64_t warm_bad = bad;
	ms_clock_sleep_ns((int64_t)(stall * 1e9) - (ms_clock_now_ns() - t1));
	ms_future_set(gate, NULL);
	int64_t t2 = ms_clock_now_ns();
	if ((err = ms_pause_wait(pause, MS_PAUSE_PUBLISHED, -1)))
		goto fail;
	uint64_t n_dirty, n_equal, n_zero, n_kept;
	ms_pause_counts(pause, &n_dirty, &n_equal, &n_zero, &n_kept);
	double t_dedup = (double)(ms_clock_now_ns() - t2) / 1e6;
	printf("dedup:  %llu written pages -> %llu zero, %llu kept (diff %.2f MiB); compared, "
	       "drained, uploaded and published in %.1f ms\n",
	       (unsigned long long)n_dirty, (unsigned long long)n_zero, (unsigned long long)n_kept,
	       (double)(n_kept * P) / 1048576.0, t_dedup);
	/* the control: a warm resume of the same build with no pause in flight */
	double warm_ms = ms, control_ms;
	uint64_t control_bad = 1;
	if ((err = demo_sandbox_resume(backend_ops, ms_pause_file(pause), sock, &paused, size, seed,
				       epoch, &control_bad, &control_ms, &faults)))
		goto fail;
	printf("control: warm resume of the published build, no pause in flight: %llu "
	       "mismatches, %.1f ms\n",
	       (unsigned long long)control_bad, control_ms);
	warm_bad |= control_bad;
	/* cold resume: another node, an empty cache, everything from the store */
	if (!(cold = ms_build_file_open(store, ms_pause_build_id(pause), w.node_b, &err)))
		goto fail;
	/* the snapfile comes from the store too */
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_SNAPFILE,
			MS_COMPRESS_NONE);
	void *snap;
	size_t snap_len;
	if ((err = ms_store_read_all(store, key, 1 << 20, &snap, &snap_len)))
		goto fail;
	struct ms_sandbox_paused from_store = {
	    .memfd = -1, .snapfile = snap, .snapfile_len = snap_len};
	err = demo_sandbox_resume(backend_ops, cold->file, sock, &from_store, size, seed, epoch,
				  &bad, &ms, &faults);
	free(snap);
	if (err)
		goto fail;
	printf("cold:   lazy restore from the store + the guest verified every page: %llu "
	       "mismatches, %.1f ms, %llu faults\n",
	       (unsigned long long)bad, ms, (unsigned long long)faults);
	rc = warm_bad == 0 && bad == 0 ? 0 : 1;
	printf("\ntimings (backend %s, %llu MiB guest, every resume verified by the guest):\n"
	       "  %-46s %10.2f ms\n  %-46s %10.2f ms\n  %-46s %10.1f ms\n"
	       "  %-46s %10.1f ms\n  %-46s %10.2f\n  %-46s %10.1f ms\n  %-46s %10.1f ms\n"
	       "  %-46s %10.1f %%\n\n",
	       backend_ops->name, (unsigned long long)mib, "pause: stop, state, written set",
	       t_stop, "pause: resumable after", t_resumable, "warm resume while dedup is stalled",
	       warm_ms, "control resume (no pause in flight)", control_ms, "warm / control",
	       warm_ms / control_ms, "dedup + drain + upload + publish (after stall)", t_dedup,
	       "cold resume from the store, empty cache", ms, "dedup: pages dropped or zero",
	       n_dirty ? 100.0 * (double)(n_dirty - n_kept) / (double)n_dirty : 0.0);
	printf("demo: %s\n", rc ? "FAILED: the guest found wrong memory"
				: "ok, the guest verified all its memory, warm and cold");
	goto out;
fail:
	rc = ms_cli_fail("demo sandbox", err);
out:
	ms_cli_pause_free(pause, gate);
	ms_sandbox_destroy(p);
	if (paused.memfd >= 0)
		close(paused.memfd);
	ms_pageset_free(paused.written);
	free(paused.snapfile);
	ms_build_file_free(cold);
	ms_build_file_free(parent);
	ms_store_free(store);
	if (ms_demo_work_fini(&w) && !rc)
		rc = 1;
	return rc;
}
