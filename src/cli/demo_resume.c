/*
 * demo_resume.c - "memsnap demo resume": pause simulated guest memory over a base layer
 * in the store with the dedup compare stalled, resume it warm through the page server
 * while the compare is stalled, let dedup, drain and upload finish, then resume it cold
 * from the store with an empty cache. A stand-in VMM (demo_client.c) restores with
 * Firecracker's userfaultfd handshake and verifies every page.
 */
#include "build/buildfile.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/demo.h"
#include "cli/demo_client.h"
#include "snapshot/pause.h"
#include "uffd/pageserver.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define P MS_PAGE_SIZE

static const char demo_resume_usage[] =
    "usage: memsnap demo resume --store URI [--mem MIB] [--stall SECONDS]\n";
static const char demo_resume_help[] =
    "usage: memsnap demo resume --store URI [--mem MIB] [--stall SECONDS]\n\n"
    "Pauses MIB MiB (default 64) of simulated guest memory over a base\n"
    "layer in the store, with the dedup compare stalled for SECONDS\n"
    "(default 5); resumes it warm through the page server while the\n"
    "compare is stalled; lets dedup, drain and upload finish; then resumes\n"
    "it cold from the store with an empty cache. A stand-in VMM restores\n"
    "with Firecracker's userfaultfd handshake and verifies every page.\n";

/* Serves file on a fresh socket and has the stand-in VMM touch every page. */
static int demo_resume_once(struct ms_layered *file, const char *sock, const uint8_t *expect,
			    uint64_t size, struct ms_demo_touch *touch)
{
	int err;
	struct ms_pageserver *srv = ms_demo_pageserver(sock, file, &err);
	if (!srv)
		return err;
	err = ms_demo_client_touch(sock, expect, size, touch);
	ms_pageserver_free(srv);
	return err;
}

/* The guest ran: ~10 % of pages written (a third with equal bytes), ~2 % freed. */
static void demo_guest_writes(uint8_t *image, uint64_t pages, uint64_t *rng,
			      struct ms_pageset *dirty)
{
	for (uint64_t p = 0; p < pages; p++) {
		uint64_t r = ms_demo_rng(rng) % 1000;
		if (r < 100) {
			ms_pageset_add(dirty, (uint32_t)p);
			if (r % 3)
				ms_demo_fill(image + p * P, (uint32_t)(ms_demo_rng(rng) | 1));
		} else if (r < 120) {
			ms_pageset_add(dirty, (uint32_t)p);
			memset(image + p * P, 0, P);
		}
	}
}

/* A memfd holding image, as a paused guest's memory. */
static int demo_memfd(const uint8_t *image, uint64_t size, int *out)
{
	int memfd = memfd_create("guest", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, (off_t)size) ||
	    pwrite(memfd, image, size, 0) != (ssize_t)size) {
		int err = -errno;
		if (memfd >= 0)
			close(memfd);
		return err;
	}
	*out = memfd;
	return 0;
}

/* Lets the stalled pause go after stall seconds from t0 and prints its stages. */
static int demo_finish_pause(struct ms_pause *pause, struct ms_future *gate, double stall,
			     int64_t t0)
{
	ms_clock_sleep_ns((int64_t)(stall * 1e9) - (ms_clock_now_ns() - t0));
	ms_future_set(gate, NULL);
	int64_t t1 = ms_clock_now_ns();
	int err;
	if ((err = ms_pause_wait(pause, MS_PAUSE_COMPARED, -1)))
		return err;
	double t_cmp = (double)(ms_clock_now_ns() - t1) / 1e6;
	if ((err = ms_pause_wait(pause, MS_PAUSE_DRAINED, -1)))
		return err;
	double t_drain = (double)(ms_clock_now_ns() - t1) / 1e6;
	if ((err = ms_pause_wait(pause, MS_PAUSE_PUBLISHED, -1)))
		return err;
	double t_pub = (double)(ms_clock_now_ns() - t1) / 1e6;
	uint64_t n_dirty, n_equal, n_zero, n_kept;
	ms_pause_counts(pause, &n_dirty, &n_equal, &n_zero, &n_kept);
	printf("dedup:  %llu dirty -> %llu equal to the parent, %llu zero, %llu kept "
	       "(diff %.2f MiB)\n",
	       (unsigned long long)n_dirty, (unsigned long long)n_equal, (unsigned long long)n_zero,
	       (unsigned long long)n_kept, (double)(n_kept * P) / 1048576.0);
	printf("        compared +%.1f ms, drained +%.1f ms, uploaded and published +%.1f ms\n",
	       t_cmp, t_drain, t_pub);
	return 0;
}

int ms_cli_demo_resume(int argc, char **argv)
{
	struct ms_demo_opts o = {.mib = 64, .stall = 5};
	int rc;
	if (!ms_demo_parse(argc, argv, "smt", demo_resume_help, demo_resume_usage, &o, &rc))
		return rc;
	if (!getenv("MEMSNAP_LOG"))
		ms_log_set_level(MS_LOG_WARN); /* the demo prints its own story */
	int err;
	rc = 1;
	uint64_t mib = o.mib, pages = mib << 8, size = mib << 20, rng = 0xfeed;
	struct ms_demo_work w;
	if ((err = ms_demo_work_init(&w, "resume")))
		return ms_cli_fail("work dir", err);
	struct ms_store *store = ms_cli_store_open(o.store_uri, NULL, &err);
	struct ms_build_file *parent = NULL, *cold = NULL;
	struct ms_pause *pause = NULL;
	struct ms_future *gate = ms_future_new(NULL);
	uint8_t *image = malloc(size);
	uint32_t *model = calloc(pages, sizeof(uint32_t));
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	if (!store) {
		rc = ms_cli_fail(o.store_uri, err);
		goto out;
	}
	err = -ENOMEM;
	if (!gate || !image || !model || !dirty || !empty)
		goto fail;
	/* the template: a base layer in the store */
	struct ms_demo_layer base = {.model = model};
	ms_uuid_generate(&base.id);
	for (uint64_t p = 0; p < pages; p++) {
		model[p] = p % 16 ? (uint32_t)(ms_demo_rng(&rng) | 1) : 0;
		ms_demo_fill(image + p * P, model[p]);
	}
	size_t stored;
	if ((err = ms_demo_base_header(&base, pages)) ||
	    (err = ms_demo_publish(store, &base, image, size, false, MS_HEADER_V4, &stored)))
		goto fail;
	parent = ms_build_file_new(store, base.header, w.node_a, &err);
	base.header = NULL;
	if (!parent)
		goto fail;
	demo_guest_writes(image, pages, &rng, dirty);
	int memfd = -1;
	if ((err = demo_memfd(image, size, &memfd)))
		goto fail;
	printf("demo: %llu MiB of guest memory over a base layer in %s; the sandbox backends are\n"
	       "      not built yet, so a stand-in VMM restores with Firecracker's userfaultfd "
	       "handshake\n",
	       (unsigned long long)mib, o.store_uri);
	/* pause, the compare stalled */
	struct ms_pause_config pcfg = {.store = store,
				       .diffs = parent->cache.diffs,
				       .cache_dir = w.node_a,
				       .inflight = true,
				       .compare_gate = gate};
	int64_t t0 = ms_clock_now_ns();
	if ((err = ms_pause_start(&pcfg, parent->file, memfd, dirty, empty, "demo-state", 10,
				  &pause)))
		goto fail;
	double t_pause = (double)(ms_clock_now_ns() - t0) / 1e6;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(ms_pause_build_id(pause), id);
	printf(
	    "pause:  build %s resumable after %.2f ms (%llu dirty pages); dedup stalled %.0f s\n",
	    id, t_pause, (unsigned long long)ms_pageset_count(dirty), o.stall);
	/* warm resume while the compare is stalled */
	struct ms_demo_touch warm;
	if ((err = demo_resume_once(ms_pause_file(pause), w.sock, image, size, &warm)))
		goto fail;
	bool still_stalled = ms_pause_wait(pause, MS_PAUSE_COMPARED, 0) == -ETIMEDOUT;
	printf("warm:   %llu pages verified, %llu mismatches, %.1f ms (%.0f MiB/s); dedup %s\n",
	       (unsigned long long)warm.pages, (unsigned long long)warm.mismatches,
	       warm.seconds * 1e3, (double)mib / warm.seconds,
	       still_stalled ? "still stalled: the resume did not wait for it" : "already done");
	if ((err = demo_finish_pause(pause, gate, o.stall, t0)))
		goto fail;
	/* cold resume on "another node": an empty cache, everything from the store */
	if (!(cold = ms_build_file_open(store, ms_pause_build_id(pause), w.node_b, &err)))
		goto fail;
	struct ms_demo_touch cold_touch;
	if ((err = demo_resume_once(cold->file, w.sock, image, size, &cold_touch)))
		goto fail;
	printf(
	    "cold:   %llu pages verified, %llu mismatches, %.1f ms (%.0f MiB/s) from the store\n",
	    (unsigned long long)cold_touch.pages, (unsigned long long)cold_touch.mismatches,
	    cold_touch.seconds * 1e3, (double)mib / cold_touch.seconds);
	bool ok = !warm.mismatches && !cold_touch.mismatches && warm.pages == pages &&
		  cold_touch.pages == pages;
	printf("demo: %s\n",
	       ok ? "ok, every byte matches (warm and cold)" : "FAILED: memory differs");
	rc = ok ? 0 : 1;
	goto out;
fail:
	rc = ms_cli_fail("demo resume", err);
out:
	ms_cli_pause_free(pause, gate);
	ms_build_file_free(cold);
	ms_build_file_free(parent);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	free(model);
	free(image);
	ms_store_free(store);
	if (ms_demo_work_fini(&w))
		rc = rc ? rc : 1;
	return rc;
}
