/*
 * bench_prefetch.c - prefetch at resume (uffd/prefetch.h), on every backend here
 * (kvm where /dev/kvm opens, proc):
 *
 *   resume.prefetch_vs_none.<backend>  a cold resume from the S3 test server of a
 *       256 MiB workset guest, until its VERIFY ends, replaying the trace an
 *       earlier resume recorded / the same resume with prefetch off. Median of 5
 *       alternating rounds, a fresh diff store and chunk cache each time. Goal <= 0.3.
 *   resume.prefetch_vs_warm.<backend>  the prefetched cold resume / a warm resume
 *       of the same build on its own node (its local diff file). Goal <= 1.5.
 *   resume.prefetch_vs_link.<backend>  the prefetched cold resume / the build's data
 *       object alone fetched cold through a fresh chunk cache, every chunk at once
 *       (no guest): how near the resume comes to the store's own speed. Goal <= 1.5.
 *   resume.prefetch_vs_none_s3model.<backend>  the same two cold resumes, both through
 *       the S3 link model (linkmodel.h: 25 ms to the first byte of every read, 150 MB/s a
 *       stream, 16 streams, on top of the test server), so that fetch latency, which
 *       loopback does not have and prefetch exists to hide, is there. Goal <= 0.3.
 *   resume.prefetch_vs_warm_s3model.<backend>  that prefetched cold resume / the warm
 *       resume above. Goal <= 1.5.
 *   prefetch.hit_ratio.<backend>  trace pages the next resume's guest touched /
 *       trace pages (the rest is waste: prefetch.waste_ratio = 1 - hit ratio).
 *
 * Without MEMSNAP_S3_ENDPOINT (scripts/run-bench.sh starts the server) it says so
 * and reports nothing. MEMSNAP_BENCH_BACKEND=kvm|proc runs one backend only. The objects
 * a run puts (under its own prefix) are removed when it ends.
 */
#include "bench.h"
#include "linkmodel.h"
#include "build/buildfile.h"
#include "build/storage.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "storage/s3.h"
#include "uffd/filesource.h"
#include "uffd/prefetch.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIZE   (256ull << 20)
#define ROUNDS 5
#define SEED   7
#define EPOCH  1
#define SEC    1000000000LL

static const struct ms_sandbox_ops *ops;

/* What one resume cost besides time: store bytes and chunk fetches (cold only), faults. */
struct resume_counts {
	uint64_t store_bytes, sessions, faults, prefetched;
	double ready_ms, prefetch_ms; /* the guest resumed (its first report); prefetch ended */
};

struct resume_ctx {
	struct ms_layered *file;
	const struct ms_uffd_trace *trace; /* NULL: no prefetch */
	struct ms_uffd_prefetch *pf;
};

static void start_prefetch(void *arg, struct ms_uffd_session *s)
{
	struct resume_ctx *c = arg;
	int err;
	c->pf =
	    ms_uffd_prefetch_start(s, &ms_layered_page_source_ops, c->file, c->trace, NULL, &err);
}

/* A lazy resume from file until VERIFY ends: its ms, and (record) the session's trace. */
static double resume_ms(struct ms_layered *file, const char *sock,
			const struct ms_sandbox_paused *paused, const struct ms_uffd_trace *trace,
			struct ms_uffd_trace *record, struct resume_counts *counts)
{
	struct resume_ctx c = {.file = file, .trace = trace};
	struct ms_pageserver_options opts = {.workers = 4,
					     .batch_bytes = 65536,
					     .on_session_start = trace ? start_prefetch : NULL,
					     .start_arg = &c};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts, &(int){0});
	if (!srv)
		exit(1);
	/* the guest's memory and a cold resume's cache file, from pages the host backs */
	ms_bench_warm_memory(2 * SIZE + (32u << 20));
	double t0 = ms_bench_now();
	struct ms_sandbox_spec r = {.mem_size = SIZE,
				    .memory = MS_SANDBOX_LAZY,
				    .lazy_socket = sock,
				    .snapfile = paused->snapfile,
				    .snapfile_len = paused->snapfile_len};
	struct ms_sandbox *p;
	if (ms_sandbox_create(ops, &r, &p) || ms_sandbox_run(p) ||
	    ms_sandbox_wait_report(p, 60 * SEC))
		exit(1);
	if (counts)
		counts->ready_ms = (ms_bench_now() - t0) * 1e3;
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[0] = MS_PATTERN_VERIFY;
	box[1] = SEED;
	box[2] = EPOCH;
	if (ms_sandbox_run(p) || ms_sandbox_wait_report(p, 60 * SEC) || box[4] != 0) {
		fprintf(stderr, "bench_prefetch: verify failed (%llu)\n",
			(unsigned long long)box[4]);
		exit(1);
	}
	double t = (ms_bench_now() - t0) * 1e3;
	struct ms_uffd_session *s;
	if (ms_pageserver_next_session(srv, 0, &s) || (record && ms_uffd_session_trace(s, record)))
		exit(1);
	if (counts) {
		const struct ms_uffd_metrics *m = ms_uffd_session_metrics(s);
		counts->faults = atomic_load(&m->faults_read) + atomic_load(&m->faults_write);
		counts->prefetched = atomic_load(&m->pages_prefetched);
	}
	ms_uffd_session_unref(s);
	if (c.pf && counts) {
		struct ms_uffd_prefetch_stats ps;
		ms_uffd_prefetch_wait(c.pf, 60 * SEC);
		ms_uffd_prefetch_get_stats(c.pf, &ps);
		counts->prefetch_ms = (double)ps.duration_ns / 1e6;
	}
	ms_uffd_prefetch_free(c.pf);
	ms_sandbox_destroy(p);
	ms_pageserver_free(srv);
	return t;
}

/* A fresh, empty build cache over store under dir/NAME<serial> (cold: nothing cached yet). */
static void fresh_cache(struct ms_build_cache *c, struct ms_store *store, const char *dir,
			const char *name)
{
	static unsigned serial;
	char path[256];
	snprintf(path, sizeof(path), "%s/%s%u", dir, name, serial++);
	if (ms_build_cache_init(c, store, path, NULL))
		exit(1);
}

/* Frees the cache and removes its directory. */
static void drop_cache(struct ms_build_cache *c)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", c->cache_dir);
	ms_build_cache_fini(c);
	if (system(cmd) != 0)
		exit(1);
}

/* A cold resume: a fresh diff store and chunk cache over the store's build. */
static double cold_ms(struct ms_store *store, const ms_uuid *id, const char *dir, const char *sock,
		      const struct ms_sandbox_paused *paused, const struct ms_uffd_trace *trace,
		      struct ms_uffd_trace *record)
{
	struct ms_build_cache c;
	fresh_cache(&c, store, dir, "cold");
	struct ms_header *h;
	if (ms_build_storage_load_header(store, id, MS_ARTIFACT_MEMFILE_HEADER, &h))
		exit(1);
	struct ms_layered *file = ms_build_cache_file(&c, h, NULL, NULL);
	if (!file)
		exit(1);
	struct resume_counts counts = {0};
	double t = resume_ms(file, sock, paused, trace, record, &counts);
	char key[128];
	struct ms_source *src;
	if (!ms_build_storage_key(&c.storage, id, key, sizeof(key)) &&
	    !ms_diffstore_get(c.diffs, key, &src)) {
		struct ms_chunker_stats cs;
		ms_chunker_get_stats(src, &cs);
		counts.store_bytes = cs.fetched_bytes;
		counts.sessions = cs.sessions;
		ms_source_unref(src);
	}
	fprintf(
	    stderr,
	    "bench_prefetch %s: cold %s %.1f ms: %.1f MiB from the store in %llu chunk fetches, "
	    "%llu faults, %llu pages prefetched; resumed at %.1f ms, prefetch took %.1f ms\n",
	    ops->name, trace ? "prefetch" : "none", t, (double)counts.store_bytes / (1 << 20),
	    (unsigned long long)counts.sessions, (unsigned long long)counts.faults,
	    (unsigned long long)counts.prefetched, counts.ready_ms, counts.prefetch_ms);
	ms_layered_free(file);
	drop_cache(&c);
	return t;
}

struct chunk_read {
	struct ms_source *src;
	uint64_t off, len;
	pthread_t thread;
	int err;
};

static void *chunk_read_main(void *arg)
{
	struct chunk_read *c = arg;
	uint8_t *buf = malloc(c->len);
	c->err = buf ? ms_source_read(c->src, buf, c->off, c->len) : -ENOMEM;
	free(buf);
	return NULL;
}

/* The build's own data object, cold: a fresh chunk cache, one reader per chunk, all at once. */
static double link_ms(struct ms_store *store, const ms_uuid *id, const char *dir)
{
	struct ms_build_cache c;
	fresh_cache(&c, store, dir, "link");
	struct ms_header *h;
	struct ms_source *src;
	if (ms_build_storage_load_header(store, id, MS_ARTIFACT_MEMFILE_HEADER, &h) ||
	    ms_build_storage_resolve(&c.storage, id, h, &src))
		exit(1);
	uint64_t size = ms_source_size(src), chunk = MS_CHUNK_SIZE_DEFAULT;
	size_t n = (size_t)((size + chunk - 1) / chunk);
	struct chunk_read *reads = calloc(n, sizeof(*reads));
	double t0 = ms_bench_now();
	for (size_t i = 0; i < n; i++) {
		reads[i] = (struct chunk_read){.src = src, .off = i * chunk};
		reads[i].len = size - reads[i].off < chunk ? size - reads[i].off : chunk;
		if (pthread_create(&reads[i].thread, NULL, chunk_read_main, &reads[i]))
			exit(1);
	}
	for (size_t i = 0; i < n; i++) {
		pthread_join(reads[i].thread, NULL);
		if (reads[i].err)
			exit(1);
	}
	double t = (ms_bench_now() - t0) * 1e3;
	fprintf(stderr,
		"bench_prefetch: the data object cold, %.1f MiB in %zu chunks at once: %.1f ms\n",
		(double)size / (1 << 20), n, t);
	free(reads);
	ms_source_unref(src);
	ms_header_free(h);
	drop_cache(&c);
	return t;
}

/*
 * Reports name: the median of a[] against the median of b[] over ROUNDS paired rounds
 * (ratio: the quotient of the medians), with the spread of the rounds' own a[r] / b[r].
 */
static void report_rounds(const char *name, const double *a, const double *b, const char *baseline,
			  double goal)
{
	double ratios[ROUNDS];
	for (int r = 0; r < ROUNDS; r++)
		ratios[r] = a[r] / b[r];
	double ma = ms_bench_median(a, ROUNDS), mb = ms_bench_median(b, ROUNDS);
	ms_bench_report_spread(name, ma, "ms", baseline, mb, ma / mb, ratios, ROUNDS, goal);
}

/* A build of a workset guest: paused after fill_cmd and published to the store. */
struct build {
	struct ms_sandbox_paused paused; /* its snapfile, for the resumes */
	struct ms_pause *pause;		 /* its warm file and build id */
};

static int publish(struct ms_build_cache *bc, struct ms_layered *parent, uint64_t fill_cmd,
		   struct build *b)
{
	struct ms_sandbox_spec spec = {
	    .guest = MS_GUEST_WORKSET, .mem_size = SIZE, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *p;
	if (ms_sandbox_create(ops, &spec, &p))
		return 1;
	uint64_t *box = (uint64_t *)ms_sandbox_ram(p);
	box[0] = fill_cmd;
	box[1] = SEED;
	box[2] = EPOCH;
	if (ms_sandbox_run(p) || ms_sandbox_wait_report(p, 60 * SEC))
		return 1;
	box[0] = 0;
	if (ms_sandbox_pause(p, &b->paused))
		return 1;
	ms_sandbox_destroy(p);
	struct ms_pause_config cfg = {
	    .store = bc->store, .diffs = bc->diffs, .cache_dir = bc->cache_dir};
	struct ms_pageset *none = ms_pageset_new();
	int memfd = b->paused.memfd;
	b->paused.memfd = -1;
	int err = !none ||
		  ms_pause_start(&cfg, parent, memfd, b->paused.written, none, b->paused.snapfile,
				 b->paused.snapfile_len, &b->pause) ||
		  ms_pause_wait(b->pause, MS_PAUSE_PUBLISHED, -1);
	ms_pageset_free(none);
	return err;
}

static void build_fini(struct build *b)
{
	ms_pause_free(b->pause);
	ms_sandbox_paused_fini(&b->paused);
}

static int run(struct ms_store *store, struct ms_store *modelled)
{
	char dir[] = "/tmp/memsnap-bench-prefetch.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char cache[128], sock[128];
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	struct ms_build_cache bc;
	if (ms_build_cache_init(&bc, store, cache, NULL))
		return 1;
	ms_uuid base_id;
	ms_uuid_generate(&base_id);
	struct ms_layered *parent = ms_build_cache_file(
	    &bc, ms_header_new_base(&base_id, MS_HEADER_V4, 4096, SIZE, false), NULL, NULL);
	if (!parent)
		return 1;
	/* the build: only the working set written (its data object is the set alone) */
	struct build set;
	if (publish(&bc, parent, MS_PATTERN_FILL, &set))
		return 1;
	const ms_uuid *id = ms_pause_build_id(set.pause);
	const struct ms_sandbox_paused *paused = &set.paused;
	/* the trace: what a first cold resume touched */
	struct ms_uffd_trace trace, touched;
	cold_ms(store, id, dir, sock, paused, NULL, &trace);
	double with[ROUNDS], without[ROUNDS], warm[ROUNDS], link[ROUNDS];
	uint64_t hits = 0;
	for (int r = 0; r < ROUNDS; r++) {
		with[r] = cold_ms(store, id, dir, sock, paused, &trace, NULL);
		without[r] = cold_ms(store, id, dir, sock, paused, NULL, r == 0 ? &touched : NULL);
		warm[r] = resume_ms(ms_pause_file(set.pause), sock, paused, NULL, NULL, NULL);
		link[r] = link_ms(store, id, dir);
	}
	/* hits: trace pages the next resume's guest touched */
	uint8_t *in = calloc(SIZE / 4096, 1);
	for (size_t i = 0; i < touched.count; i++)
		in[touched.indices[i]] = 1;
	for (size_t i = 0; i < trace.count; i++)
		hits += in[trace.indices[i]];
	free(in);
	char name[64];
	snprintf(name, sizeof(name), "resume.prefetch_vs_none.%s", ops->name);
	report_rounds(name, with, without, "the same cold resume from S3 without prefetch", 0.3);
	snprintf(name, sizeof(name), "resume.prefetch_vs_warm.%s", ops->name);
	report_rounds(name, with, warm, "a warm resume of the build on its own node", 1.5);
	snprintf(name, sizeof(name), "resume.prefetch_vs_link.%s", ops->name);
	report_rounds(name, with, link, "the build's data object fetched cold, every chunk at once",
		      1.5);
	double w = ms_bench_median(with, ROUNDS), n = ms_bench_median(without, ROUNDS),
	       h = ms_bench_median(warm, ROUNDS), l = ms_bench_median(link, ROUNDS);
	fprintf(stderr,
		"bench_prefetch %s: %zu trace pages; cold %.1f ms with prefetch, %.1f ms without, "
		"warm %.1f ms, the data object alone %.1f ms (medians of %d)\n",
		ops->name, trace.count, w, n, h, l, ROUNDS);
	snprintf(name, sizeof(name), "prefetch.hit_ratio.%s", ops->name);
	ms_bench_report(name, (double)hits, "pages", "pages in the trace", (double)trace.count,
			1.0);
	snprintf(name, sizeof(name), "prefetch.waste_ratio.%s", ops->name);
	ms_bench_report(name, (double)(trace.count - hits), "pages", "pages in the trace",
			(double)trace.count, 0.0);
	ms_uffd_trace_fini(&trace);
	ms_uffd_trace_fini(&touched);
	build_fini(&set);

	/* the build of a whole memory (every page written), of which the resume touches the
	 * set, read through the S3 link model */
	struct build whole;
	if (publish(&bc, parent, MS_WORKSET_FILL_ALL, &whole))
		return 1;
	id = ms_pause_build_id(whole.pause);
	paused = &whole.paused;
	cold_ms(modelled, id, dir, sock, paused, NULL, &trace);
	double mwith[ROUNDS], mwithout[ROUNDS], mwarm[ROUNDS];
	for (int r = 0; r < ROUNDS; r++) {
		mwith[r] = cold_ms(modelled, id, dir, sock, paused, &trace, NULL);
		mwithout[r] = cold_ms(modelled, id, dir, sock, paused, NULL, NULL);
		mwarm[r] = resume_ms(ms_pause_file(whole.pause), sock, paused, NULL, NULL, NULL);
	}
	snprintf(name, sizeof(name), "resume.prefetch_vs_none_s3model.%s", ops->name);
	report_rounds(name, mwith, mwithout,
		      "the same cold resume without prefetch, both through the S3 link model", 0.3);
	snprintf(name, sizeof(name), "resume.prefetch_vs_warm_s3model.%s", ops->name);
	report_rounds(name, mwith, mwarm, "a warm resume of the whole-memory build on its own node",
		      1.5);
	double mw = ms_bench_median(mwith, ROUNDS), mn = ms_bench_median(mwithout, ROUNDS),
	       mh = ms_bench_median(mwarm, ROUNDS);
	fprintf(stderr,
		"bench_prefetch %s: a whole-memory build through the S3 link model (%.0f ms to the "
		"first byte, %.0f MB/s a stream, %u streams): cold %.1f ms with prefetch, %.1f ms "
		"without, warm %.1f ms (medians of %d)\n",
		ops->name, (double)MS_LINK_MODEL_S3.ttfb_ns / 1e6,
		MS_LINK_MODEL_S3.bytes_per_sec / 1e6, MS_LINK_MODEL_S3.streams, mw, mn, mh, ROUNDS);
	ms_uffd_trace_fini(&trace);
	build_fini(&whole);
	ms_layered_free(parent);
	ms_build_cache_fini(&bc);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}

struct keys {
	char **v;
	size_t n, cap;
};

static int collect_key(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	(void)size;
	(void)mtime_ms;
	struct keys *k = ctx;
	if (k->n == k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 64;
		char **v = realloc(k->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		k->v = v;
		k->cap = cap;
	}
	if (!(k->v[k->n] = strdup(key)))
		return -ENOMEM;
	k->n++;
	return 0;
}

/* Removes every object this run put under its prefix: the S3 test server is small (a
 * memstore of 1 GiB by default, 4 GiB under scripts/run-bench.sh), and the builds of runs
 * that kept theirs filled it until every PUT on the machine timed out. */
static void remove_objects(struct ms_store *store)
{
	struct keys k = {0};
	int err = ms_store_list(store, "", collect_key, &k);
	for (size_t i = 0; i < k.n; i++) {
		if (!err)
			err = ms_store_remove(store, k.v[i]);
		free(k.v[i]);
	}
	free(k.v);
	if (err)
		fprintf(stderr, "bench_prefetch: removing the run's objects: %s\n",
			ms_strerror(err));
}

int main(void)
{
	const char *endpoint = getenv("MEMSNAP_S3_ENDPOINT");
	if (!endpoint || !*endpoint) {
		fprintf(stderr, "bench_prefetch: MEMSNAP_S3_ENDPOINT not set (scripts/run-bench.sh "
				"starts the S3 server); skipped\n");
		return 0;
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "bench-prefetch-%d", (int)getpid());
	struct ms_s3_config cfg = {.endpoint = endpoint,
				   .bucket = "memsnap-bench",
				   .prefix = prefix,
				   .access_key = getenv("MEMSNAP_S3_ACCESS_KEY"),
				   .secret_key = getenv("MEMSNAP_S3_SECRET_KEY"),
				   .region = getenv("MEMSNAP_S3_REGION")};
	int err;
	struct ms_store *store = ms_store_s3_new(&cfg, &err);
	if (!store || (err = ms_store_s3_create_bucket(store))) {
		fprintf(stderr, "bench_prefetch: s3 store: %s\n", ms_strerror(err));
		return 1;
	}
	struct ms_store *modelled = ms_link_model_store(store, &MS_LINK_MODEL_S3);
	if (!modelled)
		return 1;
	const char *backends[] = {"kvm", "proc"};
	const char *only = getenv("MEMSNAP_BENCH_BACKEND"); /* one backend only, by hand */
	for (int i = 0; i < 2; i++) {
		char why[160];
		if (only && *only && strcmp(only, backends[i]))
			continue;
		if (ms_sandbox_backend_pick(backends[i], &ops, why, sizeof(why))) {
			fprintf(stderr, "bench_prefetch: %s\n", why);
			continue;
		}
		int failed = run(store, modelled);
		remove_objects(
		    store); /* a backend's builds (over 300 MiB) leave the server at once */
		if (failed)
			return 1;
	}
	ms_store_free(modelled);
	ms_store_free(store);
	return 0;
}
