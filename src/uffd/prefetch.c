/*
 * prefetch.c - trace replay: fetch workers and one install thread
 * (prefetch.h has the design).
 *
 * Invariants:
 *  1. Runs are taken in trace order (next_run only grows); each run ends
 *     exactly once: installed (fully or partly), skipped after a failed read,
 *     or freed by the stop.
 *  2. Once stop is set no worker starts a read and the installer installs
 *     nothing more; ms_uffd_prefetch_stop returns only after every thread
 *     has been joined.
 *  3. At most queue_cap fetched runs wait for the installer (the buffers a
 *     replay holds are bounded by (workers + queue_cap) * coalesce_bytes).
 */
#include "uffd/prefetch.h"
#include "uffd/pagesource.h"
#include "header/header.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PF_MOD			"uffd"
#define PF_INSTALL_BATCH	64  /* fetched runs handed to the session at once */
#define UFFD_PF_MAX_BLOCK_PAGES 512 /* the session's largest batch block */

struct pf_run {
	uint64_t off, len; /* device bytes */
	bool joins;	   /* read in one read with the run before it (pf_plan_reads) */
};

/* One read: runs [first, first + count) from the span [off, off + len) in buf. */
struct pf_fetched {
	struct pf_fetched *next;
	uint64_t off, len;
	size_t first, count;
	uint8_t *buf;
};

struct ms_uffd_prefetch {
	/* immutable after start */
	struct ms_uffd_session *session; /* one reference */
	const struct ms_page_source_ops *ops;
	void *ctx;
	uint64_t page_size;
	struct pf_run *runs;
	size_t nruns;
	unsigned nworkers;
	size_t queue_cap;
	pthread_t *workers;
	pthread_t installer;
	int64_t t0;

	pthread_mutex_t lock; /* guards everything below */
	/* three conditions, so that a wakeup reaches only the threads it concerns (one
	 * broadcast for everything woke all the workers on every fetched run) */
	pthread_cond_t room;  /* fetched runs left the queue, stop: the workers wait */
	pthread_cond_t work;  /* a run fetched, a worker left, stop: the installer waits */
	pthread_cond_t ended; /* the installer ended: ms_uffd_prefetch_wait waits */
	size_t next_run;
	struct pf_fetched *head, *tail;
	size_t queued;
	unsigned workers_left;
	bool stop;
	bool finished; /* the installer ended */
	bool joined;
	struct ms_uffd_prefetch_stats stats;
};

/* Appends page (device bytes off, one page) to runs: extends the last run when contiguous. */
static int pf_add_page(struct pf_run **runs, size_t *n, size_t *cap, uint64_t off, uint64_t ps,
		       uint64_t max)
{
	struct pf_run *last = *n ? &(*runs)[*n - 1] : NULL;
	if (last && last->off + last->len == off && last->len + ps <= max) {
		last->len += ps;
		return 0;
	}
	if (*n == *cap) {
		size_t grown = *cap ? *cap * 2 : 256;
		struct pf_run *more = realloc(*runs, grown * sizeof(*more));
		if (!more)
			return -ENOMEM;
		*runs = more;
		*cap = grown;
	}
	(*runs)[(*n)++] = (struct pf_run){.off = off, .len = ps};
	return 0;
}

/*
 * Runs that follow one another upwards with a gap of less than a batch block (the runs of one
 * block around its zero pages, or of neighbouring blocks) are read together, up to max bytes
 * from the first: one read of the span instead of one per run (a scattered working set gives
 * runs of a page or two). The pages in the gaps are read and dropped, never installed.
 */
static void pf_plan_reads(struct pf_run *runs, size_t n, uint64_t block_bytes, uint64_t max)
{
	uint64_t start = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t prev_end = i ? runs[i - 1].off + runs[i - 1].len : 0;
		runs[i].joins = i && runs[i].off >= prev_end &&
				runs[i].off - prev_end < block_bytes &&
				runs[i].off + runs[i].len - start <= max;
		if (!runs[i].joins)
			start = runs[i].off;
	}
}

/*
 * The reads of a replay, in trace order. Each trace block brings the batch block around it
 * (block_pages, aligned) as a fault on it would: the block itself, and every neighbour the
 * source holds data for (classify LOCAL or REMOTE). The trace names only the pages the guest
 * faulted on, so without this a replay installed only those and the guest still faulted on
 * the neighbours the fault path had batched (a workset guest: 3804 of 9947 pages). Pages are
 * taken once, in ascending order within a block; contiguous pages coalesce up to max bytes.
 */
static struct pf_run *pf_plan_runs(const struct ms_uffd_trace *trace,
				   const struct ms_page_source_ops *ops, void *ctx,
				   uint64_t block_pages, uint64_t image_size, uint64_t max,
				   size_t *nruns, uint64_t *npages)
{
	const uint64_t ps = trace->block_size;
	const uint64_t pages = image_size / ps;
	if (block_pages > UFFD_PF_MAX_BLOCK_PAGES)
		block_pages = UFFD_PF_MAX_BLOCK_PAGES;
	if (block_pages < 1 || !ops->classify)
		block_pages = 1;
	uint64_t *seen = calloc(pages / 64 + 1, sizeof(*seen));
	struct pf_run *runs = NULL;
	size_t n = 0, cap = 0;
	uint64_t taken = 0;
	int err = seen ? 0 : -ENOMEM;
	uint8_t kinds[UFFD_PF_MAX_BLOCK_PAGES];
	for (size_t i = 0; i < trace->count && !err; i++) {
		uint64_t b = trace->indices[i];
		if (b >= pages || (seen[b / 64] >> (b % 64) & 1))
			continue;
		uint64_t first = b - b % block_pages, end = first + block_pages;
		if (end > pages)
			end = pages;
		if (block_pages > 1)
			ops->classify(ctx, first * ps, ps, (size_t)(end - first), kinds);
		for (uint64_t q = first; q < end && !err; q++) {
			unsigned kind =
			    block_pages > 1 ? MS_PAGE_KIND(kinds[q - first]) : MS_PAGE_REMOTE;
			bool want = q == b || kind == MS_PAGE_REMOTE || kind == MS_PAGE_LOCAL;
			if (!want || (seen[q / 64] >> (q % 64) & 1))
				continue;
			seen[q / 64] |= 1ULL << (q % 64);
			taken++;
			err = pf_add_page(&runs, &n, &cap, q * ps, ps, max);
		}
	}
	free(seen);
	if (err) {
		free(runs);
		return NULL;
	}
	if (!runs && !(runs = malloc(sizeof(*runs))))
		return NULL;
	pf_plan_reads(runs, n, block_pages * ps, max);
	*nruns = n;
	*npages = taken;
	return runs;
}

static void pf_push_locked(struct ms_uffd_prefetch *p, struct pf_fetched *f)
{
	MS_ASSERT_HELD(&p->lock);
	f->next = NULL;
	if (p->tail)
		p->tail->next = f;
	else
		p->head = f;
	p->tail = f;
	p->queued++;
}

static struct pf_fetched *pf_pop_locked(struct ms_uffd_prefetch *p)
{
	MS_ASSERT_HELD(&p->lock);
	struct pf_fetched *f = p->head;
	if (f) {
		p->head = f->next;
		if (!p->head)
			p->tail = NULL;
		p->queued--;
	}
	return f;
}

static void *pf_worker_main(void *arg)
{
	struct ms_uffd_prefetch *p = arg;
	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		while (!p->stop && p->queued >= p->queue_cap)
			pthread_cond_wait(&p->room, &p->lock);
		if (p->stop || p->next_run == p->nruns)
			break;
		size_t first = p->next_run++;
		while (p->next_run < p->nruns && p->runs[p->next_run].joins)
			p->next_run++;
		size_t count = p->next_run - first;
		pthread_mutex_unlock(&p->lock);
		const struct pf_run *last = &p->runs[first + count - 1];
		uint64_t off = p->runs[first].off, len = last->off + last->len - off;
		struct pf_fetched *f = malloc(sizeof(*f));
		uint8_t *buf = malloc(len);
		int err = f && buf ? p->ops->read(p->ctx, buf, off, (size_t)len) : -ENOMEM;
		pthread_mutex_lock(&p->lock);
		p->stats.reads++;
		if (err) {
			ms_debug(PF_MOD, "prefetch: read [%llu, +%llu): %s; left to the faults",
				 (unsigned long long)off, (unsigned long long)len,
				 ms_strerror(err));
			p->stats.read_errors++;
			free(buf);
			free(f);
			continue;
		}
		*f = (struct pf_fetched){
		    .off = off, .len = len, .first = first, .count = count, .buf = buf};
		pf_push_locked(p, f);
		pthread_cond_signal(&p->work);
	}
	p->workers_left--;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void *pf_install_main(void *arg)
{
	struct ms_uffd_prefetch *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->stop && !p->head && p->workers_left)
			pthread_cond_wait(&p->work, &p->lock);
		if (p->stop || !p->head)
			break; /* stopped, or every worker is done and nothing is left */
		/* what was fetched so far is installed in one batch (on this thread, under the
		 * session's install lock), every run of a read pointing into that read's buffer */
		struct pf_fetched *batch[PF_INSTALL_BATCH];
		size_t n = 0, total = 0;
		while (n < PF_INSTALL_BATCH && p->head && (!n || total < PF_INSTALL_BATCH)) {
			batch[n] = pf_pop_locked(p);
			total += batch[n++]->count;
		}
		for (size_t i = 0; i < n; i++)
			pthread_cond_signal(&p->room); /* room for n workers */
		pthread_mutex_unlock(&p->lock);
		struct ms_uffd_install_run *runs = malloc(total * sizeof(*runs));
		int err = runs ? 0 : -ENOMEM;
		for (size_t i = 0, k = 0; i < n && runs; i++)
			for (size_t r = batch[i]->first; r < batch[i]->first + batch[i]->count; r++)
				runs[k++] = (struct ms_uffd_install_run){
				    .off = p->runs[r].off,
				    .buf = batch[i]->buf + (p->runs[r].off - batch[i]->off),
				    .len = p->runs[r].len};
		if (!err)
			err = ms_uffd_session_install_runs(p->session, runs, total);
		pthread_mutex_lock(&p->lock);
		for (size_t i = 0, k = 0; i < n; i++) {
			for (size_t r = 0; r < batch[i]->count; r++, k++) {
				uint64_t installed = runs && !err ? runs[k].installed : 0;
				p->stats.pages_installed += installed;
				p->stats.pages_skipped +=
				    p->runs[batch[i]->first + r].len / p->page_size - installed;
			}
			free(batch[i]->buf);
			free(batch[i]);
		}
		free(runs);
		if (err) { /* the session is not serving any more: nothing can be installed */
			ms_debug(PF_MOD, "prefetch: the session ended (%s)", ms_strerror(err));
			p->stop = true;
			pthread_cond_broadcast(&p->room);
		}
	}
	p->stats.stopped = p->stop;
	p->stats.done = !p->stop;
	p->stats.duration_ns = ms_clock_now_ns() - p->t0;
	p->finished = true;
	pthread_cond_broadcast(&p->ended);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void pf_free_queue_locked(struct ms_uffd_prefetch *p)
{
	MS_ASSERT_HELD(&p->lock);
	struct pf_fetched *f;
	while ((f = pf_pop_locked(p))) {
		free(f->buf);
		free(f);
	}
}

/* Frees p once none of its threads runs (start's failure, free). */
static void pf_release(struct ms_uffd_prefetch *p)
{
	ms_uffd_session_unref(p->session);
	pthread_cond_destroy(&p->room);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->ended);
	pthread_mutex_destroy(&p->lock);
	free(p->workers);
	free(p->runs);
	free(p);
}

struct ms_uffd_prefetch *ms_uffd_prefetch_start(struct ms_uffd_session *s,
						const struct ms_page_source_ops *ops, void *ctx,
						const struct ms_uffd_trace *trace,
						const struct ms_uffd_prefetch_options *options,
						int *err)
{
	*err = -EINVAL;
	uint64_t ps = ms_uffd_session_page_size(s);
	if (trace->block_size != ps)
		return NULL;
	*err = -ENOMEM;
	struct ms_uffd_prefetch *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->ops = ops;
	p->ctx = ctx;
	p->page_size = ps;
	p->t0 = ms_clock_now_ns();
	p->nworkers = options && options->fetch_workers ? options->fetch_workers
							: MS_UFFD_PREFETCH_WORKERS_DEFAULT;
	uint64_t coalesce = options && options->coalesce_bytes ? options->coalesce_bytes
							       : MS_UFFD_PREFETCH_COALESCE_DEFAULT;
	if (coalesce < ps)
		coalesce = ps;
	p->queue_cap = 2 * (size_t)p->nworkers;
	p->stats.blocks = trace->count;
	if (!(p->runs = pf_plan_runs(trace, ops, ctx, ms_uffd_session_block_pages(s),
				     ms_uffd_session_image_size(s), coalesce, &p->nruns,
				     &p->stats.pages_planned)) ||
	    !(p->workers = calloc(p->nworkers, sizeof(*p->workers)))) {
		free(p->runs);
		free(p);
		return NULL;
	}
	p->stats.runs = p->nruns;
	p->session = ms_uffd_session_ref(s);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->room, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->ended, NULL);
	unsigned started = 0;
	pthread_mutex_lock(&p->lock);
	p->workers_left = p->nworkers;
	pthread_mutex_unlock(&p->lock);
	int rc = 0;
	for (; started < p->nworkers && !rc; started++)
		rc = pthread_create(&p->workers[started], NULL, pf_worker_main, p);
	if (rc) {
		started--;
		pthread_mutex_lock(&p->lock);
		p->workers_left -= p->nworkers - started; /* those never ran */
		pthread_mutex_unlock(&p->lock);
	}
	if (!rc)
		rc = pthread_create(&p->installer, NULL, pf_install_main, p);
	if (rc) {
		pthread_mutex_lock(&p->lock);
		p->stop = true;
		pthread_cond_broadcast(&p->room);
		pthread_mutex_unlock(&p->lock);
		for (unsigned i = 0; i < started; i++)
			pthread_join(p->workers[i], NULL);
		pthread_mutex_lock(&p->lock);
		pf_free_queue_locked(p);
		pthread_mutex_unlock(&p->lock);
		pf_release(p);
		*err = -rc;
		return NULL;
	}
	size_t reads = 0;
	for (size_t i = 0; i < p->nruns; i++)
		reads += !p->runs[i].joins;
	ms_info(
	    PF_MOD,
	    "prefetch: %zu trace blocks, %llu pages with their batch blocks, in %zu runs and %zu "
	    "reads, %u fetch workers",
	    trace->count, (unsigned long long)p->stats.pages_planned, p->nruns, reads, p->nworkers);
	*err = 0;
	return p;
}

void ms_uffd_prefetch_stop(struct ms_uffd_prefetch *p)
{
	pthread_mutex_lock(&p->lock);
	if (p->joined) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->joined = true;
	p->stop = !p->finished || p->stop;
	pthread_cond_broadcast(&p->room);
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nworkers; i++)
		pthread_join(p->workers[i], NULL);
	pthread_join(p->installer, NULL);
	pthread_mutex_lock(&p->lock);
	pf_free_queue_locked(p);
	pthread_mutex_unlock(&p->lock);
}

int ms_uffd_prefetch_wait(struct ms_uffd_prefetch *p, int64_t timeout_ns)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ns / MS_NSEC_PER_SEC;
	deadline.tv_nsec += timeout_ns % MS_NSEC_PER_SEC;
	if (deadline.tv_nsec >= MS_NSEC_PER_SEC) {
		deadline.tv_sec++;
		deadline.tv_nsec -= MS_NSEC_PER_SEC;
	}
	int err = 0;
	pthread_mutex_lock(&p->lock);
	while (!p->finished && !err)
		err = -pthread_cond_timedwait(&p->ended, &p->lock, &deadline);
	if (p->finished)
		err = 0;
	pthread_mutex_unlock(&p->lock);
	return err;
}

void ms_uffd_prefetch_get_stats(struct ms_uffd_prefetch *p, struct ms_uffd_prefetch_stats *out)
{
	pthread_mutex_lock(&p->lock);
	*out = p->stats;
	if (!p->finished)
		out->duration_ns = ms_clock_now_ns() - p->t0;
	pthread_mutex_unlock(&p->lock);
}

void ms_uffd_prefetch_free(struct ms_uffd_prefetch *p)
{
	if (!p)
		return;
	ms_uffd_prefetch_stop(p);
	pf_release(p);
}

/* ---- the trace a resume replays ---- */

static const char *const pf_source_names[] = {
    [MS_PREFETCH_INIT] = "init",
    [MS_PREFETCH_LAST_CYCLE] = "last-cycle",
    [MS_PREFETCH_BOTH] = "both",
    [MS_PREFETCH_OFF] = "off",
};

int ms_uffd_prefetch_source_parse(const char *name, enum ms_uffd_prefetch_source *out)
{
	for (size_t i = 0; i < sizeof(pf_source_names) / sizeof(pf_source_names[0]); i++)
		if (!strcmp(name, pf_source_names[i])) {
			*out = (enum ms_uffd_prefetch_source)i;
			return 0;
		}
	return -EINVAL;
}

const char *ms_uffd_prefetch_source_name(enum ms_uffd_prefetch_source source)
{
	return (unsigned)source <= MS_PREFETCH_OFF ? pf_source_names[source] : "?";
}

static int pf_append(struct ms_uffd_trace *t, size_t *cap, uint64_t block, uint8_t access)
{
	if (t->count == *cap) {
		size_t grown = *cap ? *cap * 2 : 256;
		uint64_t *indices = realloc(t->indices, grown * sizeof(*indices));
		if (!indices)
			return -ENOMEM;
		t->indices = indices;
		uint8_t *types = realloc(t->access, grown);
		if (!types)
			return -ENOMEM;
		t->access = types;
		*cap = grown;
	}
	t->indices[t->count] = block;
	t->access[t->count++] = access;
	return 0;
}

int ms_uffd_prefetch_plan(enum ms_uffd_prefetch_source source, const struct ms_uffd_trace *init,
			  const struct ms_header *header, uint64_t block_size, uint64_t max_bytes,
			  struct ms_uffd_trace *out)
{
	memset(out, 0, sizeof(*out));
	out->block_size = block_size;
	if (source == MS_PREFETCH_OFF)
		return 0;
	uint64_t blocks = header->meta.size / block_size;
	uint64_t *seen = calloc(blocks / 64 + 1, sizeof(*seen));
	if (!seen)
		return -ENOMEM;
	size_t cap = 0;
	int err = 0;
	if ((source == MS_PREFETCH_INIT || source == MS_PREFETCH_BOTH) && init &&
	    init->block_size == block_size)
		for (size_t i = 0; i < init->count && !err; i++) {
			uint64_t b = init->indices[i];
			if (b >= blocks || (seen[b / 64] >> (b % 64) & 1))
				continue;
			seen[b / 64] |= 1ULL << (b % 64);
			err = pf_append(out, &cap, b, init->access[i]);
		}
	uint64_t budget = max_bytes / block_size;
	if (source == MS_PREFETCH_LAST_CYCLE || source == MS_PREFETCH_BOTH)
		for (size_t m = 0; m < header->mappings.count && !err && budget; m++) {
			const struct ms_mapping *e = &header->mappings.entries[m];
			if (ms_uuid_cmp(&e->build_id, &header->meta.build_id) != 0)
				continue;
			for (uint64_t b = e->offset / block_size;
			     b < (e->offset + e->length + block_size - 1) / block_size &&
			     b < blocks && budget && !err;
			     b++) {
				if (seen[b / 64] >> (b % 64) & 1)
					continue;
				seen[b / 64] |= 1ULL << (b % 64);
				budget--;
				err = pf_append(out, &cap, b, MS_UFFD_ACCESS_PREFETCH);
			}
		}
	free(seen);
	if (err)
		ms_uffd_trace_fini(out);
	return err;
}
