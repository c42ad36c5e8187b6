/*
 * metrics.c - Prometheus text exposition of memsnapd's metrics.
 *
 * Names follow Prometheus conventions: base units (seconds, bytes), _total
 * for counters, one HELP and one TYPE line per family, label values from
 * fixed tables (nothing from a request ever becomes a label).
 */
#include "node/metrics.h"
#include "memsnap/memsnap.h"
#include "storage/checksums.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const double ms_duration_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
					    0.25,   0.5,   1,	   2.5,	  5,	10,    30};
static const double ms_ratio_bounds[] = {0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1};

static const char *const ms_timing_names[MS_TIMINGS] = {
    [MS_TIMING_STOP] = "stop",	     [MS_TIMING_RESUMABLE] = "resumable",
    [MS_TIMING_COMPARE] = "compare", [MS_TIMING_DRAIN] = "drain",
    [MS_TIMING_UPLOAD] = "upload",
};
static const char *const ms_diff_names[MS_DIFF_KINDS] = {
    [MS_DIFF_DIRTY] = "dirty", [MS_DIFF_STORED] = "stored"};

const char *ms_start_type_name(enum ms_start_type t)
{
	static const char *const names[MS_START_TYPES] = {
	    [MS_START_FRESH] = "fresh", [MS_START_WARM] = "warm", [MS_START_COLD] = "cold"};
	return (unsigned)t < MS_START_TYPES ? names[t] : "unknown";
}

/*
 * The process's start (the kernel's starttime in /proc/self/stat, in clock
 * ticks after boot, plus btime of /proc/stat); the time of the call if
 * either cannot be read.
 */
static double ms_process_start_seconds(void)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	double fallback = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
	char buf[1024];
	FILE *f = fopen("/proc/self/stat", "re");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = '\0';
	/* field 2 (comm) may hold spaces: count fields from its closing ')' */
	char *p = strrchr(buf, ')');
	unsigned long long ticks = 0;
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (!p || sscanf(p + 1, "%llu", &ticks) != 1)
		return fallback;
	unsigned long long btime = 0;
	char line[256];
	bool found = false;
	if ((f = fopen("/proc/stat", "re"))) {
		while (!found && fgets(line, sizeof(line), f))
			found = sscanf(line, "btime %llu", &btime) == 1;
		fclose(f);
	}
	long hz = sysconf(_SC_CLK_TCK);
	if (!found || hz <= 0)
		return fallback;
	return (double)btime + (double)ticks / (double)hz;
}

static void ms_histogram_init(struct ms_histogram *h, const double *bounds, unsigned n)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
	h->bounds = bounds;
	h->nbounds = n;
}

void ms_metrics_init(struct ms_metrics *m)
{
	memset(m, 0, sizeof(*m));
	m->start_time_seconds = ms_process_start_seconds();
	unsigned nd = sizeof(ms_duration_bounds) / sizeof(double);
	unsigned nr = sizeof(ms_ratio_bounds) / sizeof(double);
	for (int i = 0; i < MS_START_TYPES; i++)
		ms_histogram_init(&m->create[i], ms_duration_bounds, nd);
	for (int i = 0; i < MS_TIMINGS; i++)
		ms_histogram_init(&m->pause_stage[i], ms_duration_bounds, nd);
	for (int i = 0; i < MS_DIFF_KINDS; i++)
		ms_histogram_init(&m->diff_ratio[i], ms_ratio_bounds, nr);
	ms_histogram_init(&m->prefetch_duration, ms_duration_bounds, nd);
}

void ms_metrics_fini(struct ms_metrics *m)
{
	for (int i = 0; i < MS_START_TYPES; i++)
		pthread_mutex_destroy(&m->create[i].lock);
	for (int i = 0; i < MS_TIMINGS; i++)
		pthread_mutex_destroy(&m->pause_stage[i].lock);
	for (int i = 0; i < MS_DIFF_KINDS; i++)
		pthread_mutex_destroy(&m->diff_ratio[i].lock);
	pthread_mutex_destroy(&m->prefetch_duration.lock);
}

void ms_histogram_observe(struct ms_histogram *h, double value)
{
	pthread_mutex_lock(&h->lock);
	unsigned b = 0;
	while (b < h->nbounds && value > h->bounds[b])
		b++;
	h->counts[b]++;
	h->sum += value;
	h->count++;
	pthread_mutex_unlock(&h->lock);
}

void ms_uffd_metrics_add(struct ms_uffd_metrics *dst, const struct ms_uffd_metrics *src)
{
#define ADD(f) atomic_fetch_add(&dst->f, atomic_load(&src->f))
	ADD(faults_read);
	ADD(faults_write);
	ADD(faults_wp);
	ADD(pages_source);
	ADD(pages_zero);
	ADD(pages_batched);
	ADD(pages_prefault);
	ADD(pages_prefetched);
	ADD(faults_eexist);
	ADD(faults_deferred);
	ADD(faults_esrch);
	ADD(faults_dropped);
	ADD(faults_inline);
	ADD(pages_sliced);
	ADD(slice_fallbacks);
	ADD(source_reads);
	ADD(source_retries);
	ADD(source_errors);
	ADD(events_remove);
	ADD(pages_removed);
	ADD(events_unmap);
	ADD(events_remap);
	ADD(events_other);
	ADD(errors);
	for (int i = 0; i < MS_UFFD_LATENCY_BUCKETS; i++)
		ADD(latency[i]);
	for (int f = 0; f < MS_PAGE_FROMS; f++) {
		for (int i = 0; i < MS_UFFD_LATENCY_BUCKETS; i++)
			ADD(fault_latency[f][i]);
		ADD(fault_ns[f]);
	}
#undef ADD
}

static void ms_family(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/*
 * One histogram series from per-bucket (not cumulative) counts; labels is
 * "" or a list of name="value" pairs without braces.
 */
static void ms_histogram_series(FILE *out, const char *name, const char *labels,
				const double *bounds, unsigned nbounds, const uint64_t *counts,
				double sum, uint64_t count)
{
	const char *sep = labels[0] ? "," : "";
	uint64_t cumulative = 0;
	for (unsigned b = 0; b < nbounds; b++) {
		cumulative += counts[b];
		fprintf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[b],
			(unsigned long long)cumulative);
	}
	cumulative += counts[nbounds];
	fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
		(unsigned long long)cumulative);
	if (labels[0]) {
		fprintf(out, "%s_sum{%s} %.9g\n", name, labels, sum);
		fprintf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)count);
	} else {
		fprintf(out, "%s_sum %.9g\n%s_count %llu\n", name, sum, name,
			(unsigned long long)count);
	}
}

/* One labelled histogram series; label may be NULL. */
static void ms_histogram_write(FILE *out, const char *name, const char *label, const char *value,
			       struct ms_histogram *h)
{
	pthread_mutex_lock(&h->lock);
	uint64_t counts[MS_HIST_MAX_BUCKETS + 1], count = h->count;
	double sum = h->sum;
	memcpy(counts, h->counts, sizeof(counts));
	pthread_mutex_unlock(&h->lock);
	char lp[128] = "";
	if (label)
		snprintf(lp, sizeof(lp), "%s=\"%s\"", label, value);
	ms_histogram_series(out, name, lp, h->bounds, h->nbounds, counts, sum, count);
}

/*
 * memsnap_pageserver_fault_duration_seconds{source}: fault read to page installed, by
 * where the page came from (uffd/pagesource.h enum ms_page_from), from the page servers'
 * per-session buckets (microsecond bounds) summed at scrape.
 */
static void ms_fault_latency_write(FILE *out, const struct ms_uffd_metrics *u)
{
	static const char *const names[MS_PAGE_FROMS] = {
	    [MS_PAGE_FROM_UNKNOWN] = "other", [MS_PAGE_FROM_MEMFD] = "memfd",
	    [MS_PAGE_FROM_LOCAL] = "local",   [MS_PAGE_FROM_PEER] = "peer",
	    [MS_PAGE_FROM_STORE] = "store",   [MS_PAGE_FROM_ZERO] = "zero",
	};
	double bounds[MS_UFFD_LATENCY_BUCKETS - 1];
	for (int b = 0; b < MS_UFFD_LATENCY_BUCKETS - 1; b++)
		bounds[b] = (double)ms_uffd_latency_bounds_us[b] / 1e6;
	const char *n = "memsnap_pageserver_fault_duration_seconds";
	ms_family(out, n, "histogram",
		  "Lazy resumes' page faults, read to installed, by where the page came from: "
		  "memfd (a paused guest's memory), local (diff file, cached chunks), peer, "
		  "store, zero (no I/O), other (a source that does not say).");
	for (int f = 0; f < MS_PAGE_FROMS; f++) {
		uint64_t counts[MS_UFFD_LATENCY_BUCKETS], count = 0;
		for (int b = 0; b < MS_UFFD_LATENCY_BUCKETS; b++)
			count += counts[b] = atomic_load(&u->fault_latency[f][b]);
		char labels[32];
		snprintf(labels, sizeof(labels), "source=\"%s\"", names[f]);
		ms_histogram_series(out, n, labels, bounds, MS_UFFD_LATENCY_BUCKETS - 1, counts,
				    (double)atomic_load(&u->fault_ns[f]) / 1e9, count);
	}
}

/* The store wrapper's request durations by op and their results (storage/timed.h). */
static void ms_store_timing_write(FILE *out, const struct ms_store_timing *t)
{
	const char *n = "memsnap_store_request_duration_seconds";
	ms_family(out, n, "histogram",
		  "Object-store calls by operation (put, get, head, delete, list, meta) and "
		  "backend, each call with its retries, whatever its result.");
	const char *backend = t->backend[0] ? t->backend : "none";
	for (int op = 0; op < MS_STORE_OPS; op++) {
		uint64_t counts[MS_STORE_TIMING_BOUNDS + 1], count = 0;
		for (int b = 0; b <= MS_STORE_TIMING_BOUNDS; b++)
			count += counts[b] = atomic_load(&t->buckets[op][b]);
		char labels[96];
		snprintf(labels, sizeof(labels), "op=\"%s\",backend=\"%s\"", ms_store_op_name(op),
			 backend);
		ms_histogram_series(out, n, labels, ms_store_timing_bounds, MS_STORE_TIMING_BOUNDS,
				    counts, (double)atomic_load(&t->sum_ns[op]) / 1e9, count);
	}
	ms_family(out, "memsnap_store_requests_total", "counter",
		  "Object-store calls by operation and result (ok, not_found, error).");
	for (int op = 0; op < MS_STORE_OPS; op++)
		for (int r = 0; r < MS_STORE_RESULTS; r++)
			fprintf(out, "memsnap_store_requests_total{op=\"%s\",result=\"%s\"} %llu\n",
				ms_store_op_name(op), ms_store_result_name(r),
				(unsigned long long)atomic_load(&t->results[op][r]));
}

static void ms_counter(FILE *out, const char *name, const char *help, uint64_t v)
{
	ms_family(out, name, "counter", help);
	fprintf(out, "%s %llu\n", name, (unsigned long long)v);
}

static void ms_gauge(FILE *out, const char *name, const char *help, double v)
{
	ms_family(out, name, "gauge", help);
	fprintf(out, "%s %.17g\n", name, v);
}

int ms_metrics_render(struct ms_metrics *m, const struct ms_metrics_live *live, FILE *out)
{
	const char *n = "memsnap_sandbox_create_duration_seconds";
	ms_family(out, n, "histogram",
		  "Time to create a sandbox until its guest reported, by start type "
		  "(fresh image, warm from this node's template cache, cold from the store).");
	for (int t = 0; t < MS_START_TYPES; t++)
		ms_histogram_write(out, n, "start_type", ms_start_type_name(t), &m->create[t]);
	ms_counter(out, "memsnap_sandbox_create_failures_total",
		   "Sandbox creations and resumes that failed.", atomic_load(&m->creates_failed));
	ms_family(out, "memsnap_sandboxes", "gauge", "Sandboxes on this node by state.");
	fprintf(out, "memsnap_sandboxes{state=\"running\"} %llu\n",
		(unsigned long long)live->sandboxes_running);
	fprintf(out, "memsnap_sandboxes{state=\"paused\"} %llu\n",
		(unsigned long long)live->sandboxes_paused);

	n = "memsnap_pause_stage_duration_seconds";
	ms_family(out, n, "histogram",
		  "Pause pipeline stage durations: stop (VM stopped and saved), resumable "
		  "(pipeline started), compare, drain, upload.");
	for (int s = 0; s < MS_TIMINGS; s++)
		ms_histogram_write(out, n, "stage", ms_timing_names[s], &m->pause_stage[s]);
	ms_family(out, "memsnap_pauses_total", "counter", "Pauses by final result.");
	fprintf(out, "memsnap_pauses_total{result=\"published\"} %llu\n",
		(unsigned long long)atomic_load(&m->pauses_published));
	fprintf(out, "memsnap_pauses_total{result=\"failed\"} %llu\n",
		(unsigned long long)atomic_load(&m->pauses_failed));
	n = "memsnap_snapshot_diff_ratio";
	ms_family(out, n, "histogram",
		  "Per pause: written pages over memory pages (kind=dirty) and stored pages "
		  "over memory pages after dedup (kind=stored).");
	for (int k = 0; k < MS_DIFF_KINDS; k++)
		ms_histogram_write(out, n, "kind", ms_diff_names[k], &m->diff_ratio[k]);
	ms_family(out, "memsnap_dedup_pages_total", "counter",
		  "Dirty pages through the dedup compare, by result.");
	fprintf(out, "memsnap_dedup_pages_total{result=\"compared\"} %llu\n",
		(unsigned long long)atomic_load(&m->pipeline.pages_dirty));
	fprintf(out, "memsnap_dedup_pages_total{result=\"equal\"} %llu\n",
		(unsigned long long)atomic_load(&m->pipeline.pages_equal));
	fprintf(out, "memsnap_dedup_pages_total{result=\"zero\"} %llu\n",
		(unsigned long long)atomic_load(&m->pipeline.pages_zero));
	fprintf(out, "memsnap_dedup_pages_total{result=\"kept\"} %llu\n",
		(unsigned long long)atomic_load(&m->pipeline.pages_kept));
	ms_counter(out, "memsnap_upload_bytes_total",
		   "Bytes put into the object store by pauses (diff data, snapfile, header).",
		   atomic_load(&m->pipeline.upload_bytes));
	ms_counter(out, "memsnap_upload_failures_total",
		   "Pauses whose upload failed after the pipeline's retries.",
		   atomic_load(&m->pipeline.upload_failures));
	ms_family(out, "memsnap_inflight_served_pages_total", "counter",
		  "Pages resumes read straight from a paused guest's memory, by phase: provisional "
		  "header (before dedup), packed (deduped, before the drain finished).");
	fprintf(out, "memsnap_inflight_served_pages_total{phase=\"provisional\"} %llu\n",
		(unsigned long long)atomic_load(&m->pipeline.inflight_pages_provisional));
	fprintf(out, "memsnap_inflight_served_pages_total{phase=\"packed\"} %llu\n",
		(unsigned long long)atomic_load(&m->pipeline.inflight_pages_packed));
	ms_family(out, "memsnap_failed_pause_held_bytes", "gauge",
		  "Guest memory still held by failed pauses for the sandboxes reading it (bytes; "
		  "released when none is left, or after failed_hold).");
	fprintf(out, "memsnap_failed_pause_held_bytes %llu\n",
		(unsigned long long)atomic_load(&m->pipeline.failed_held_bytes));
	ms_counter(out, "memsnap_memfd_swap_grace_elapsed_total",
		   "Pauses whose guest memory was released by the grace timeout, before the "
		   "swap to the deduped header came.",
		   atomic_load(&m->pipeline.swap_grace_elapsed));
	ms_counter(out, "memsnap_upload_retries_total",
		   "Object-store puts tried again after a transient error (timeout, reset).",
		   atomic_load(&m->pipeline.upload_retries));
	/* process-wide: counted wherever an object is read (storage/checksums.h) */
	ms_family(out, "memsnap_integrity_failures_total", "counter",
		  "Fetches of a stored object whose bytes did not match their checksum (or "
		  "codec CRC), by object kind; each is fetched once more before a read fails.");
	for (int o = 0; o < MS_INTEGRITY_OBJECTS; o++)
		fprintf(out, "memsnap_integrity_failures_total{object=\"%s\"} %llu\n",
			ms_integrity_object_name((enum ms_integrity_object)o),
			(unsigned long long)ms_integrity_failures((enum ms_integrity_object)o));

	/* the page servers of lazy resumes: ended sessions plus live ones */
	struct ms_uffd_metrics u;
	memset(&u, 0, sizeof(u));
	ms_uffd_metrics_add(&u, &m->uffd_closed);
	ms_uffd_metrics_add(&u, &live->uffd);
	ms_family(out, "memsnap_pageserver_faults_total", "counter",
		  "Page faults served by lazy resumes' page servers, by result.");
	static const struct {
		const char *result;
		size_t off;
	} results[] = {
	    {"source", offsetof(struct ms_uffd_metrics, pages_source)},
	    {"zero", offsetof(struct ms_uffd_metrics, pages_zero)},
	    {"exists", offsetof(struct ms_uffd_metrics, faults_eexist)},
	    {"deferred", offsetof(struct ms_uffd_metrics, faults_deferred)},
	    {"gone", offsetof(struct ms_uffd_metrics, faults_esrch)},
	    {"dropped", offsetof(struct ms_uffd_metrics, faults_dropped)},
	    {"error", offsetof(struct ms_uffd_metrics, source_errors)},
	};
	for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++)
		fprintf(out, "memsnap_pageserver_faults_total{result=\"%s\"} %llu\n",
			results[i].result,
			(unsigned long long)atomic_load(
			    (_Atomic uint64_t *)((char *)&u + results[i].off)));
	ms_fault_latency_write(out, &u);
	ms_counter(
	    out, "memsnap_prefetch_pages_total",
	    "Pages lazy resumes installed ahead of the guest's faults from a prefetch trace.",
	    atomic_load(&u.pages_prefetched));
	ms_counter(out, "memsnap_prefetch_skipped_pages_total",
		   "Prefetch pages not installed: present, written or removed when their run came.",
		   atomic_load(&m->prefetch_skipped));
	ms_counter(
	    out, "memsnap_prefetch_traces_refused_total",
	    "Prefetch traces in a build's metadata.json that failed their checks (the resume "
	    "went on without prefetch).",
	    atomic_load(&m->prefetch_refused));
	n = "memsnap_prefetch_duration_seconds";
	ms_family(
	    out, n, "histogram",
	    "How long each resume's prefetch ran (until done, or stopped by a pause or delete).");
	ms_histogram_write(out, n, NULL, NULL, &m->prefetch_duration);
	ms_counter(out, "memsnap_pageserver_source_retries_total",
		   "Page-server source reads retried.", atomic_load(&u.source_retries));
	ms_counter(out, "memsnap_pageserver_session_failures_total",
		   "Page-server sessions that failed.", atomic_load(&u.errors));

	ms_gauge(out, "memsnap_diffstore_bytes", "Disk bytes held by the diff store.",
		 (double)live->diffs.bytes);
	ms_gauge(out, "memsnap_diffstore_entries", "Entries in the diff store.",
		 (double)live->diffs.entries);
	ms_gauge(out, "memsnap_diffstore_pinned_entries", "Pinned diff store entries.",
		 (double)live->diffs.pinned);
	ms_counter(out, "memsnap_diffstore_evictions_total",
		   "Diff store evictions (disk pressure and explicit).", live->diffs.evictions);
	ms_counter(out, "memsnap_diffstore_expirations_total", "Diff store TTL expiries.",
		   live->diffs.expirations);

	ms_gauge(out, "memsnap_template_cache_entries", "Templates cached on this node.",
		 (double)live->templates);
	ms_counter(out, "memsnap_template_cache_hits_total",
		   "Resumes that found their build in the template cache.",
		   atomic_load(&m->template_hits));
	ms_counter(out, "memsnap_template_cache_misses_total",
		   "Resumes that fetched their build from the object store.",
		   atomic_load(&m->template_misses));
	ms_counter(out, "memsnap_template_cache_evictions_total",
		   "Templates evicted from the cache (TTL).", atomic_load(&m->template_evictions));
	ms_family(out, "memsnap_recovery_removed_total", "counter",
		  "Leftovers of a daemon that died, removed at start or by the janitor, by kind.");
	static const char *const kinds[MS_RECOVERY_KINDS] = {
	    "cache_entry", "store_object", "peer_record", "upload_lease", "incomplete_put"};
	for (int k = 0; k < MS_RECOVERY_KINDS; k++)
		fprintf(out, "memsnap_recovery_removed_total{kind=\"%s\"} %llu\n", kinds[k],
			(unsigned long long)atomic_load(&m->recovery_removed[k]));
	ms_counter(
	    out, "memsnap_builds_lost_total",
	    "Builds whose upload a crash cut short (no header in the store): found at start.",
	    atomic_load(&m->builds_lost));
	if (live->test_store_faults[0] >= 0 || live->test_store_faults[1] >= 0 ||
	    live->test_store_faults[2] >= 0) { /* only with the test hook test_store_faults */
		ms_family(
		    out, "memsnap_test_store_faults_total", "counter",
		    "Faults the test hook test_store_faults injected into the store, by kind.");
		static const char *const fault_kinds[3] = {"put_timeout", "put_refused",
							   "read_truncate"};
		for (int k = 0; k < 3; k++)
			if (live->test_store_faults[k] >= 0)
				fprintf(out, "memsnap_test_store_faults_total{kind=\"%s\"} %lld\n",
					fault_kinds[k], (long long)live->test_store_faults[k]);
	}
	/* peers: what this node served to others, and how its reads of others' builds went */
	const struct ms_node_peers_live *pl = &live->peers;
	ms_family(out, "memsnap_peer_server_requests_total", "counter",
		  "Requests other nodes made to this node's peer server, by answer.");
	static const struct {
		const char *answer;
		size_t off;
	} answers[] = {
	    {"available", offsetof(struct ms_peer_server_stats, available)},
	    {"not_available", offsetof(struct ms_peer_server_stats, not_available)},
	    {"use_storage", offsetof(struct ms_peer_server_stats, use_storage)},
	    {"bad_request", offsetof(struct ms_peer_server_stats, bad_requests)},
	    {"unauthorized", offsetof(struct ms_peer_server_stats, unauthorized)},
	    {"uncertified", offsetof(struct ms_peer_server_stats, uncertified)},
	    {"dropped", offsetof(struct ms_peer_server_stats, dropped)},
	};
	for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++)
		fprintf(out, "memsnap_peer_server_requests_total{answer=\"%s\"} %llu\n",
			answers[i].answer,
			(unsigned long long)*(const uint64_t *)((const char *)&pl->server +
								answers[i].off));
	ms_counter(out, "memsnap_peer_server_bytes_total",
		   "Data bytes this node's peer server sent to other nodes.",
		   pl->server.data_bytes);
	ms_family(out, "memsnap_peer_reads_total", "counter",
		  "Reads of builds not yet uploaded, by who served them: a peer, or the store "
		  "(after the build moved there or its peer was gone).");
	fprintf(out, "memsnap_peer_reads_total{source=\"peer\"} %llu\n",
		(unsigned long long)pl->peer_reads);
	fprintf(out, "memsnap_peer_reads_total{source=\"store\"} %llu\n",
		(unsigned long long)pl->storage_reads);
	ms_counter(out, "memsnap_peer_read_bytes_total", "Bytes read from peers.", pl->peer_bytes);
	ms_counter(out, "memsnap_peer_failures_total",
		   "Peer reads that failed after their retries (then read from the store).",
		   pl->peer_failures);
	ms_counter(out, "memsnap_peer_misses_total",
		   "Peer reads answered not_available (then read from the store).", pl->misses);
	ms_counter(out, "memsnap_peer_builds_moved_total",
		   "Builds whose reads moved from their peer to the store for good.", pl->moved);
	ms_counter(out, "memsnap_peer_headers_total",
		   "Cold resumes that took their header from a peer.", pl->headers_from_peer);
	ms_counter(out, "memsnap_peer_registry_errors_total",
		   "Registry records (peers/{build}) that could not be written or removed.",
		   pl->registry_errors);
	ms_family(out, "memsnap_http_requests_total", "counter", "API requests by status class.");
	static const char *const classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
	for (int c = 0; c < 6; c++)
		fprintf(out, "memsnap_http_requests_total{code=\"%s\"} %llu\n", classes[c],
			(unsigned long long)atomic_load(&m->http_requests[c]));
	ms_gauge(out, "memsnap_uptime_seconds", "Seconds since the daemon started.",
		 live->uptime_seconds);
	ms_store_timing_write(out, &m->store_timing);
	ms_family(out, "memsnap_build_info", "gauge",
		  "Always 1; the version label says which memsnapd this is.");
	fprintf(out, "memsnap_build_info{version=\"%s\"} 1\n", MEMSNAP_VERSION);
	ms_gauge(out, "process_start_time_seconds",
		 "Start time of the process since the Unix epoch, in seconds.",
		 m->start_time_seconds);
	return ferror(out) ? -EIO : 0;
}
