/*
 * bench_resume.c - resume.race_vs_control: a lazy resume of a paused pattern
 * guest (the guest then verifies all its memory) while that pause's dedup
 * compare is stalled - served from the still-mapped memfd through the
 * provisional header - vs a control resume of the same build with no pause in
 * flight (published, served from the local diff file). Goal: ratio <= 1.1.
 * Runs on every backend here: kvm (where /dev/kvm opens) and proc, reported as
 * resume.race_vs_control.<backend>: medians of 7 rounds (a fresh pause per round)
 * whose order alternates, so that neither side always runs first after a fill or
 * right after a drain and upload: even rounds resume the new build during its
 * stall and then published; odd rounds first resume the previous round's build
 * (published; same guest, same bytes) as the control, then the new one during
 * its stall. The ratio is the median of the rounds' ratios; each round is printed.
 */
#include "bench.h"
#include "build/storage.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "uffd/filesource.h"
#include "uffd/pageserver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIZE (256ull << 20)

static const struct ms_sandbox_ops *ops;

static double resume_ms(struct ms_layered *file, const char *sock,
			const struct ms_sandbox_paused *paused)
{
	struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = 65536};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts, &(int){0});
	if (!srv)
		exit(1);
	/* The previous publish's drain and upload leave dirty pages: their writeback
	 * must not land inside whichever resume happens to come next. */
	sync();
	ms_bench_warm_memory(SIZE +
			     (32u << 20)); /* the guest's memory, from pages the host backs */
	double t0 = ms_bench_now();
	struct ms_sandbox_spec r = {.mem_size = SIZE,
				    .memory = MS_SANDBOX_LAZY,
				    .lazy_socket = sock,
				    .snapfile = paused->snapfile,
				    .snapfile_len = paused->snapfile_len};
	struct ms_sandbox *p;
	if (ms_sandbox_create(ops, &r, &p) || ms_sandbox_run(p) ||
	    ms_sandbox_wait_report(p, 60LL * 1000000000))
		exit(1);
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[0] = MS_PATTERN_VERIFY;
	box[1] = 7;
	box[2] = 1;
	if (ms_sandbox_run(p) || ms_sandbox_wait_report(p, 60LL * 1000000000) || box[4] != 0)
		exit(1);
	double t = (ms_bench_now() - t0) * 1e3;
	ms_sandbox_destroy(p);
	ms_pageserver_free(srv);
	return t;
}

#define ROUNDS 7

struct round_pause {
	struct ms_pause *pause;
	struct ms_future *gate;
	struct ms_pageset *none;
	struct ms_sandbox_paused paused;
};

static void round_pause_free(struct round_pause *rp)
{
	if (!rp->pause)
		return;
	ms_pause_free(rp->pause);
	ms_future_unref(rp->gate);
	ms_pageset_free(rp->none);
	ms_pageset_free(rp->paused.written);
	free(rp->paused.snapfile);
	rp->pause = NULL;
}

/* Ends the stall of rp's compare and waits until the build is published. */
static int round_publish(struct round_pause *rp)
{
	ms_future_set(rp->gate, NULL);
	return ms_pause_wait(rp->pause, MS_PAUSE_PUBLISHED, -1) ? 1 : 0;
}

/*
 * One round: a fresh guest fills its memory and is paused with the compare
 * stalled (into *cur); *race: a resume during the stall; *control: a resume of
 * a published build: cur's after the race, or (first_control) prev's before it.
 * cur is published when the round ends. 0, or 1 on any failure.
 */
static int one_round(struct ms_store *store, struct ms_diffstore *diffs, const char *cache,
		     struct ms_layered *parent, const char *sock, struct round_pause *prev,
		     struct round_pause *cur, bool first_control, double *race, double *control)
{
	struct ms_sandbox_spec pcfg = {
	    .guest = MS_GUEST_PATTERN, .mem_size = SIZE, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *p;
	if (ms_sandbox_create(ops, &pcfg, &p))
		return 1;
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[0] = MS_PATTERN_FILL;
	box[1] = 7;
	box[2] = 1;
	if (ms_sandbox_run(p) || ms_sandbox_wait_report(p, 60LL * 1000000000))
		return 1;
	box[0] = 0;
	struct ms_sandbox_paused paused;
	if (ms_sandbox_pause(p, &paused))
		return 1;
	cur->paused = paused;
	cur->paused.memfd = -1; /* handed to the pause below */
	ms_sandbox_destroy(p);
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = store,
				      .diffs = diffs,
				      .cache_dir = cache,
				      .inflight = true,
				      .compare_gate = gate};
	struct ms_pageset *none = ms_pageset_new();
	struct ms_pause *pause;
	int memfd = paused.memfd;
	paused.memfd = -1;
	if (ms_pause_start(&cfg, parent, memfd, paused.written, none, paused.snapfile,
			   paused.snapfile_len, &pause))
		return 1;
	cur->pause = pause;
	cur->gate = gate;
	cur->none = none;
	/* the control first: the previous build, published, while this one is stalled */
	if (first_control)
		*control = resume_ms(ms_pause_file(prev->pause), sock, &prev->paused);
	/* the race: the compare is stalled for the whole resume */
	*race = resume_ms(ms_pause_file(pause), sock, &paused);
	if (ms_pause_wait(pause, MS_PAUSE_COMPARED, 0) != -ETIMEDOUT)
		return 1; /* the measurement must overlap the stalled compare */
	if (round_publish(cur))
		return 1;
	/* the control after: the same build, published, no pause in flight */
	if (!first_control)
		*control = resume_ms(ms_pause_file(pause), sock, &paused);
	return 0;
}

static int run(void)
{
	char dir[] = "/tmp/memsnap-bench-resume.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char cache[128], store_dir[128], sock[128];
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	snprintf(store_dir, sizeof(store_dir), "%s/store", dir);
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	mkdir(cache, 0700);
	int err;
	struct ms_store *store = ms_store_fs_new(store_dir, &err);
	struct ms_diffstore_config dcfg = {.cache_dir = cache};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage bs = {
	    .store = store, .diffs = diffs, .cache_dir = cache, .data = MS_ARTIFACT_MEMFILE};
	ms_uuid template_id;
	ms_uuid_generate(&template_id);
	struct ms_layered *parent =
	    ms_layered_new(ms_header_new_base(&template_id, MS_HEADER_V4, 4096, SIZE, false),
			   ms_build_storage_resolve, &bs);
	char name[64];
	snprintf(name, sizeof(name), "resume.race_vs_control.%s", ops->name);
	/* alternating rounds: one resume does not tell noise from a difference */
	double races[ROUNDS], controls[ROUNDS], ratios[ROUNDS];
	struct round_pause pauses[2] = {{0}};
	for (int round = 0; round < ROUNDS; round++) {
		struct round_pause *prev = &pauses[(round + 1) % 2], *cur = &pauses[round % 2];
		if (one_round(store, diffs, cache, parent, sock, prev, cur, round % 2 == 1,
			      &races[round], &controls[round]))
			return 1;
		ratios[round] = races[round] / controls[round];
		fprintf(stderr, "%s round %d (%s first): race %.1f ms, control %.1f ms, %.2f\n",
			name, round, round % 2 ? "control" : "race", races[round], controls[round],
			ratios[round]);
		round_pause_free(prev);
	}
	round_pause_free(&pauses[(ROUNDS - 1) % 2]);
	double race = ms_bench_median(races, ROUNDS), control = ms_bench_median(controls, ROUNDS);
	double ratio = ms_bench_median(ratios, ROUNDS);
	fprintf(stderr,
		"%s: %.1f ms during the stalled compare, %.1f ms control (medians of %d "
		"alternating rounds); median ratio %.2f\n",
		name, race, control, ROUNDS, ratio);
	ms_bench_report_spread(name, race, "ms", "resume of a published build, no pause in flight",
			       control, ratio, ratios, ROUNDS, 1.1);
	ms_layered_free(parent);
	ms_diffstore_free(diffs);
	ms_store_free(store);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}

int main(void)
{
	const char *backends[] = {"kvm", "proc"}, *only = getenv("MEMSNAP_BENCH_BACKEND");
	for (int i = 0; i < 2; i++) {
		char why[160];
		if (only && strcmp(only, backends[i]) != 0)
			continue; /* MEMSNAP_BENCH_BACKEND=kvm|proc: that one only */
		if (ms_sandbox_backend_pick(backends[i], &ops, why, sizeof(why))) {
			fprintf(stderr, "bench_resume: %s\n", why);
			continue;
		}
		if (run())
			return 1;
	}
	return 0;
}
