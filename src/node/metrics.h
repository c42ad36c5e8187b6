/*
 * metrics.h - memsnapd's counters and histograms, and their Prometheus text
 * exposition (format 0.0.4, hand-written: HELP, TYPE, samples; histograms
 * with cumulative le buckets, _sum and _count).
 *
 * Counters only grow and are plain atomics; a histogram takes its own mutex
 * for an observation. Gauges that describe live state (sandboxes, the diff
 * store, the template cache) are not stored here: the daemon samples them at
 * scrape time and hands them to ms_metrics_render() in a struct ms_metrics_live.
 */
#ifndef MS_NODE_METRICS_H
#define MS_NODE_METRICS_H

#include "cache/diffstore.h"
#include "node/peers.h"
#include "snapshot/pause.h"
#include "storage/timed.h"
#include "uffd/pageserver.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define MS_HIST_MAX_BUCKETS 16

struct ms_histogram {
	pthread_mutex_t lock; /* guards counts, sum, count */
	unsigned nbounds;
	const double *bounds; /* upper bounds, ascending; +Inf is implicit */
	uint64_t counts[MS_HIST_MAX_BUCKETS + 1];
	double sum;
	uint64_t count;
};

enum ms_start_type { MS_START_FRESH, MS_START_WARM, MS_START_COLD, MS_START_TYPES };
enum ms_pause_timing {
	MS_TIMING_STOP,	     /* sandbox stopped, state saved, memory handed over */
	MS_TIMING_RESUMABLE, /* pipeline started: the build can be resumed */
	MS_TIMING_COMPARE,   /* pause -> deduped header swapped in */
	MS_TIMING_DRAIN,     /* compared -> diff file written, memfd released */
	MS_TIMING_UPLOAD,    /* drained -> uploaded and published */
	MS_TIMINGS,
};
enum ms_diff_kind { MS_DIFF_DIRTY, MS_DIFF_STORED, MS_DIFF_KINDS };
/* What the recovery after a crash removed (recovery.c). */
enum ms_recovery_kind {
	MS_RECOVERY_CACHE_ENTRY,    /* an entry of the cache dir left by the last daemon */
	MS_RECOVERY_STORE_OBJECT,   /* an object of a lost build (data, snapfile, metadata) */
	MS_RECOVERY_PEER_RECORD,    /* a peers/ record of a build this node no longer serves */
	MS_RECOVERY_UPLOAD_LEASE,   /* an uploads/ lease of an upload that died with the node */
	MS_RECOVERY_INCOMPLETE_PUT, /* a put the node died in: an fs temp file, an S3 multipart */
	MS_RECOVERY_KINDS,
};

struct ms_metrics {
	struct ms_histogram create[MS_START_TYPES];
	struct ms_histogram pause_stage[MS_TIMINGS];
	struct ms_histogram diff_ratio[MS_DIFF_KINDS];
	_Atomic uint64_t creates_failed;
	/* prefetch at resume: pages skipped (present, written or removed when their run came),
	 * traces refused (bad metadata.json), how long each prefetch ran */
	_Atomic uint64_t prefetch_skipped, prefetch_refused;
	struct ms_histogram prefetch_duration;
	/*
	 * Pauses by result, counted when the node records a pause's end (before its
	 * build shows done): the pipeline's own published/failed counters land only
	 * after its last state settled, so a scrape right after "published" could
	 * miss them.
	 */
	_Atomic uint64_t pauses_published, pauses_failed;
	/* every pause's pipeline counts here: pages, upload bytes and failures */
	struct ms_pause_counters pipeline;
	_Atomic uint64_t template_hits, template_misses, template_evictions;
	_Atomic uint64_t recovery_removed[MS_RECOVERY_KINDS];
	_Atomic uint64_t builds_lost;	   /* uploads a crash cut short: found at start */
	_Atomic uint64_t http_requests[6]; /* by status class: 1xx..5xx, [0] other */
	/* page-server counters of sessions that ended (live ones are added at scrape) */
	struct ms_uffd_metrics uffd_closed;
	struct ms_store_timing store_timing; /* the daemon's store is wrapped in storage/timed.h */
	double start_time_seconds;	     /* process start, Unix time */
};

/* Live state sampled at scrape time. */
struct ms_metrics_live {
	uint64_t sandboxes_running, sandboxes_paused;
	uint64_t templates;
	struct ms_diffstore_stats diffs;
	struct ms_uffd_metrics uffd; /* summed over live sessions */
	struct ms_node_peers_live peers;
	double uptime_seconds;
	int64_t test_store_faults[3]; /* faults injected, by enum ms_node_store_fault; -1: off */
};

void ms_metrics_init(struct ms_metrics *m);
void ms_metrics_fini(struct ms_metrics *m);
void ms_histogram_observe(struct ms_histogram *h, double value);
/* dst += src, counter by counter (for summing sessions). */
void ms_uffd_metrics_add(struct ms_uffd_metrics *dst, const struct ms_uffd_metrics *src);
/* Writes the exposition. 0 or -errno. */
int ms_metrics_render(struct ms_metrics *m, const struct ms_metrics_live *live, FILE *out);
const char *ms_start_type_name(enum ms_start_type t);

#endif
