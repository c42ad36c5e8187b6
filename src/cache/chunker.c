/* Over 800 lines: sessions, their lanes and read-ahead are one state machine under one lock. */
/*
 * chunker.c - on-demand chunk fetch into a sparse cache file, one session per chunk.
 *
 * Session state machine (all transitions under chunker->lock):
 *
 *   fetching ──all pieces written (+ verified)─▶ mark chunk present ──▶ done(0)
 *      │  ├─store/decode/write error──────────────────────────────────▶ done(err)
 *      │  ├─deadline passed (seen by the thread or by any waiter)──────▶ done(-ETIMEDOUT)
 *      │  └─source closed or freed─────────────────────────────────────▶ done(MS_ECLOSED)
 *   (done: off the in-flight list; the session is freed by the last of its thread and waiters)
 *
 * Invariants:
 *  1. ready and piece_done only grow, and only while !done; bytes [chunk_off,
 *     chunk_off + ready) and every piece marked in piece_done are in the cache
 *     file whenever a waiter reads them. ready is the prefix of done pieces.
 *  2. A lane marks its piece present (ms_piece_done) and the thread the whole chunk
 *     (immediately before it sets done(0)) only while !done, under the lock: a reader
 *     that finds neither an unfinished session nor its bytes present (under the lock)
 *     may start a new session, which skips the pieces already present.
 *  3. ch->sessions lists exactly the sessions that are not done. A session is
 *     referenced by its (detached) thread and by each waiter, and freed by the
 *     last of them, under the lock.
 *  4. Session threads hold no reference on the source: free (the last unref)
 *     fails every session and waits until running == 0 before releasing anything;
 *     a thread touches nothing of the chunker after it decremented running. A
 *     session's lane threads are joined by its thread before that.
 *  5. A piece is claimed by exactly one lane (next_piece, under the lock); a lane
 *     error stops the other lanes at their next claim and fails the session.
 *  6. ra_mark[i] is set only when a read-ahead session for chunk i was started, and
 *     cleared by the first read that touches chunk i (atomic exchange: one reader
 *     slides the window per mark).
 */
#include "cache/chunker.h"
#include "cache/cachefile.h"
#include "util/cancel.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"
#include "util/nofork.h"

#include "storage/checksums.h"
#include "storage/frames.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct ms_chunker;

/*
 * Lane buffers kept for the next session: a fresh 1 MiB malloc per lane and session
 * is a fresh mapping, so every piece paid its page faults and unmap (perf of
 * bench_cold_s3: exc_page_fault, clear_page, TLB shootdowns).
 */
#define MS_CHUNKER_BUFS 8

struct ms_fetch_session {
	struct ms_chunker *chunker;    /* immutable; outlives the session (invariant 4) */
	uint64_t chunk_off;	       /* immutable: the session's own origin */
	uint64_t chunk_len;	       /* immutable */
	int64_t frame;		       /* immutable: frame index, -1 for an uncompressed chunk */
	int64_t deadline_ns;	       /* immutable */
	bool speculative;	       /* immutable: started by read-ahead, not by a reader */
	uint32_t pieces;	       /* immutable: read_size pieces of an uncompressed chunk */
	pthread_cond_t cond;	       /* broadcast on progress and on done */
	uint64_t ready;		       /* guarded by chunker->lock */
	uint32_t next_piece;	       /* guarded by chunker->lock: the next one to claim */
	int lane_err;		       /* guarded by chunker->lock: the first lane's error */
	uint8_t *piece_done;	       /* guarded by chunker->lock: 1 = in the cache file */
	bool done;		       /* guarded by chunker->lock */
	int err;		       /* guarded by chunker->lock; set with done */
	unsigned refs;		       /* guarded by chunker->lock: the thread + each waiter */
	struct ms_fetch_session *next; /* guarded by chunker->lock */
};

struct ms_chunker {
	struct ms_source base;
	struct ms_store *store;	       /* immutable, borrowed */
	char *key;		       /* immutable */
	struct ms_frame_table *frames; /* immutable; NULL for an uncompressed object */
	struct ms_cachefile *cache;    /* immutable; internally synchronized */
	uint64_t chunk_size;	       /* immutable */
	uint64_t read_size;	       /* immutable */
	int64_t timeout_ns;	       /* immutable */
	uint32_t parallel;	       /* immutable */
	uint32_t readahead;	       /* immutable; 0: none */
	uint64_t chunk_count;	       /* immutable */
	atomic_uchar *ra_mark;	       /* per chunk, lock-free (invariant 6) */
	pthread_mutex_t lock;
	pthread_cond_t idle;		   /* signalled when running drops to 0 */
	struct ms_fetch_session *sessions; /* guarded by lock: sessions not done (invariant 3) */
	unsigned running;		   /* guarded by lock: session threads not yet returned */
	void *bufs[MS_CHUNKER_BUFS]; /* guarded by lock: idle lane buffers of buf_size bytes */
	unsigned nbufs;		     /* guarded by lock */
	size_t buf_size;	     /* immutable: min(read_size, chunk_size) */
	atomic_uint_least64_t stat_sessions, stat_failures, stat_timeouts, stat_bytes,
	    stat_readahead;
};

static const struct ms_source_ops ms_chunker_ops;

bool ms_source_is_chunker(const struct ms_source *src)
{
	return src && src->ops == &ms_chunker_ops;
}

/* ---- geometry ---- */

struct ms_chunk {
	uint64_t off;
	uint64_t len;
	int64_t frame;
};

static int ms_chunk_locate(const struct ms_chunker *ch, uint64_t pos, struct ms_chunk *out)
{
	uint64_t size = ch->base.size;
	if (!ch->frames) {
		out->off = pos - pos % ch->chunk_size;
		out->len = size - out->off < ch->chunk_size ? size - out->off : ch->chunk_size;
		out->frame = -1;
		return 0;
	}
	uint32_t index;
	if (ms_frame_table_locate(ch->frames, (int64_t)pos, &index) != 0)
		return MS_ECORRUPT; /* a gap in the frame table */
	const struct ms_frame *f = &ch->frames->frames[index];
	out->off = (uint64_t)f->start_u;
	uint64_t len = (uint64_t)f->size_u;
	out->len = size - out->off < len ? size - out->off : len;
	out->frame = index;
	return 0;
}

static uint64_t ms_chunk_index(const struct ms_chunker *ch, const struct ms_chunk *c)
{
	return c->frame >= 0 ? (uint64_t)c->frame : c->off / ch->chunk_size;
}

/* Chunk number index (< chunk_count). */
static void ms_chunk_nth(const struct ms_chunker *ch, uint64_t index, struct ms_chunk *out)
{
	if (ch->frames)
		ms_chunk_locate(ch, (uint64_t)ch->frames->frames[index].start_u, out);
	else
		ms_chunk_locate(ch, index * ch->chunk_size, out);
}

/* ---- the fetch thread ---- */

static bool ms_session_abandoned(struct ms_fetch_session *s)
{
	struct ms_chunker *ch = s->chunker;
	pthread_mutex_lock(&ch->lock);
	bool done = s->done;
	pthread_mutex_unlock(&ch->lock);
	return done;
}

static int ms_session_check(struct ms_fetch_session *s)
{
	if (ms_session_abandoned(s))
		return -ECANCELED; /* already failed by a waiter or by close; result unused */
	if (ms_clock_now_ns() >= s->deadline_ns)
		return -ETIMEDOUT;
	return 0;
}

/* Claims the next piece (invariant 5); false when there is none or the session stops. */
static bool ms_piece_claim(struct ms_fetch_session *s, uint32_t *piece)
{
	struct ms_chunker *ch = s->chunker;
	pthread_mutex_lock(&ch->lock);
	while (s->next_piece < s->pieces && s->piece_done[s->next_piece])
		s->next_piece++; /* present before the session started (ms_session_start_locked) */
	bool ok = !s->done && !s->lane_err && s->next_piece < s->pieces;
	if (ok)
		*piece = s->next_piece++;
	pthread_mutex_unlock(&ch->lock);
	return ok;
}

/*
 * Piece is in the cache file: its bytes are marked present at once (when its ends
 * fall on block boundaries, as they do for every geometry the build storage uses),
 * so a reader of them no longer waits for the rest of the chunk.
 */
static void ms_piece_done(struct ms_fetch_session *s, uint32_t piece)
{
	struct ms_chunker *ch = s->chunker;
	uint64_t pos = (uint64_t)piece * ch->read_size;
	uint64_t len = s->chunk_len - pos < ch->read_size ? s->chunk_len - pos : ch->read_size;
	pthread_mutex_lock(&ch->lock);
	if (!s->done) {
		ms_cachefile_mark_cached(ch->cache, s->chunk_off + pos,
					 len); /* -EINVAL: unaligned */
		s->piece_done[piece] = 1;
		uint64_t prefix = s->ready / ch->read_size;
		while (prefix < s->pieces && s->piece_done[prefix])
			prefix++;
		s->ready =
		    prefix * ch->read_size < s->chunk_len ? prefix * ch->read_size : s->chunk_len;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&ch->lock);
}

static void *ms_lane_buf_get(struct ms_chunker *ch)
{
	pthread_mutex_lock(&ch->lock);
	void *buf = ch->nbufs ? ch->bufs[--ch->nbufs] : NULL;
	pthread_mutex_unlock(&ch->lock);
	return buf ? buf : ms_nofork_alloc(ch->buf_size); /* no sandbox fork shares it */
}

static void ms_lane_buf_put(struct ms_chunker *ch, void *buf)
{
	if (!buf)
		return;
	pthread_mutex_lock(&ch->lock);
	if (ch->nbufs < MS_CHUNKER_BUFS) {
		ch->bufs[ch->nbufs++] = buf;
		buf = NULL;
	}
	pthread_mutex_unlock(&ch->lock);
	ms_nofork_free(buf, ch->buf_size);
}

/* One lane: fetches pieces until none is left; the first error stops every lane. */
static int ms_fetch_pieces(struct ms_fetch_session *s)
{
	struct ms_chunker *ch = s->chunker;
	size_t buf_len = ch->read_size < s->chunk_len ? ch->read_size : s->chunk_len;
	unsigned char *buf = ms_lane_buf_get(ch);
	int err = buf ? 0 : -ENOMEM;
	uint32_t piece;
	while (!err && ms_piece_claim(s, &piece)) {
		if (ms_clock_now_ns() >= s->deadline_ns) {
			err = -ETIMEDOUT;
			break;
		}
		uint64_t pos = (uint64_t)piece * ch->read_size;
		size_t n = s->chunk_len - pos < buf_len ? s->chunk_len - pos : buf_len;
		size_t got = 0;
		err = ms_store_read_range(ch->store, ch->key, s->chunk_off + pos, buf, n, &got);
		if (err)
			break;
		atomic_fetch_add(&ch->stat_bytes, got);
		if (got != n) {
			ms_warn("cache", "%s: object ends at %llu, expected %llu bytes", ch->key,
				(unsigned long long)(s->chunk_off + pos + got),
				(unsigned long long)ch->base.size);
			err = MS_ECORRUPT;
			break;
		}
		err = ms_cachefile_write(ch->cache, buf, s->chunk_off + pos, n);
		if (!err)
			ms_piece_done(s, piece);
	}
	ms_lane_buf_put(ch, buf);
	if (err) {
		pthread_mutex_lock(&ch->lock);
		if (!s->lane_err)
			s->lane_err = err;
		pthread_mutex_unlock(&ch->lock);
	}
	return err;
}

static void *ms_lane_run(void *arg)
{
	ms_fetch_pieces(arg);
	return NULL;
}

/* Up to parallel lanes (this thread is one of them), joined before returning. */
static int ms_fetch_uncompressed(struct ms_fetch_session *s)
{
	struct ms_chunker *ch = s->chunker;
	pthread_t lanes[16];
	uint32_t want = ch->parallel < s->pieces ? ch->parallel : s->pieces;
	if (want > 1 + sizeof(lanes) / sizeof(lanes[0]))
		want = 1 + sizeof(lanes) / sizeof(lanes[0]);
	uint32_t started = 0;
	while (started + 1 < want && pthread_create(&lanes[started], NULL, ms_lane_run, s) == 0)
		started++; /* fewer lanes than asked when a thread cannot start */
	ms_fetch_pieces(s);
	for (uint32_t i = 0; i < started; i++)
		pthread_join(lanes[i], NULL);
	pthread_mutex_lock(&ch->lock);
	int err = s->lane_err;
	if (!err && s->done)
		err = -ECANCELED; /* failed by a waiter or by close; result unused */
	pthread_mutex_unlock(&ch->lock);
	return err;
}

static int ms_fetch_frame(struct ms_fetch_session *s)
{
	struct ms_chunker *ch = s->chunker;
	const struct ms_frame *f = &ch->frames->frames[s->frame];
	int err = -ENOMEM;
	unsigned char *packed = malloc((size_t)f->size_c);
	if (!packed)
		return -ENOMEM;
	unsigned char *plain = malloc((size_t)f->size_u);
	if (!plain)
		goto out_packed;
	/* a frame that does not decode is counted and fetched once more (verified.h) */
	for (int attempt = 0; attempt < 2; attempt++) {
		err = ms_session_check(s);
		if (err)
			goto out_plain;
		size_t got = 0;
		err = ms_store_read_range(ch->store, ch->key, (uint64_t)f->start_c, packed,
					  (size_t)f->size_c, &got);
		if (err)
			goto out_plain;
		atomic_fetch_add(&ch->stat_bytes, got);
		err = got != (size_t)f->size_c ? MS_ECORRUPT : ms_session_check(s);
		if (!err)
			err = ms_frames_decode(ch->frames->type, packed, (size_t)f->size_c, plain,
					       (size_t)f->size_u);
		if (err != MS_ECHECKSUM && err != MS_ECORRUPT)
			break;
		if (!attempt) /* one damaged read counts once, fetched again or not */
			ms_integrity_count(ms_integrity_classify(ch->key));
		ms_warn("cache", "%s: frame %lld at %lld (%d bytes) does not decode: %s%s", ch->key,
			(long long)s->frame, (long long)f->start_c, f->size_c, ms_strerror(err),
			attempt ? "" : "; fetching it once more");
	}
	if (err)
		goto out_plain;
	err = ms_cachefile_write(ch->cache, plain, s->chunk_off, s->chunk_len);
out_plain:
	free(plain);
out_packed:
	free(packed);
	return err;
}

/* ---- sessions (callers hold ch->lock) ---- */

/* Marks s done with err (0: success) and takes it off the in-flight list. */
static void ms_session_finish_locked(struct ms_chunker *ch, struct ms_fetch_session *s, int err)
{
	MS_ASSERT_HELD(&ch->lock);
	if (s->done)
		return;
	s->done = true;
	s->err = err;
	if (err) {
		atomic_fetch_add(&ch->stat_failures, 1);
		if (err == -ETIMEDOUT)
			atomic_fetch_add(&ch->stat_timeouts, 1);
	}
	struct ms_fetch_session **link = &ch->sessions;
	while (*link && *link != s)
		link = &(*link)->next;
	if (*link)
		*link = s->next;
	s->next = NULL;
	pthread_cond_broadcast(&s->cond);
}

static void ms_session_unref_locked(struct ms_fetch_session *s)
{
	MS_ASSERT_HELD(&s->chunker->lock);
	assert(s->refs > 0);
	if (--s->refs > 0)
		return;
	pthread_cond_destroy(&s->cond);
	free(s->piece_done);
	free(s);
}

static void *ms_session_run(void *arg)
{
	struct ms_fetch_session *s = arg;
	struct ms_chunker *ch = s->chunker;
	int err = s->frame < 0 ? ms_fetch_uncompressed(s) : ms_fetch_frame(s);
	if (err && err != -ECANCELED)
		ms_warn("cache", "%s: fetch of [%llu, +%llu) failed: %s", ch->key,
			(unsigned long long)s->chunk_off, (unsigned long long)s->chunk_len,
			ms_strerror(err));

	pthread_mutex_lock(&ch->lock);
	if (!s->done) {
		/* Invariant 2: present before done(0), in one critical section. */
		if (err == 0)
			err = ms_cachefile_mark_cached(ch->cache, s->chunk_off, s->chunk_len);
		if (err == 0)
			s->ready = s->chunk_len;
		ms_session_finish_locked(ch, s, err);
	}
	ms_session_unref_locked(s);
	if (--ch->running == 0)
		pthread_cond_broadcast(&ch->idle);
	pthread_mutex_unlock(&ch->lock); /* invariant 4: ch is not touched after this */
	return NULL;
}

/* The unfinished session of chunk c, or NULL (a stuck one is failed: start afresh). */
static struct ms_fetch_session *ms_session_find_locked(struct ms_chunker *ch,
						       const struct ms_chunk *c, int64_t now)
{
	MS_ASSERT_HELD(&ch->lock);
	for (struct ms_fetch_session *s = ch->sessions, *next; s; s = next) {
		next = s->next;
		if (s->chunk_off != c->off)
			continue;
		if (now < s->deadline_ns)
			return s;
		ms_session_finish_locked(ch, s, -ETIMEDOUT);
	}
	return NULL;
}

/*
 * Starts a session for chunk c on its own thread, referenced by that thread and,
 * unless speculative, by the calling waiter.
 */
static int ms_session_start_locked(struct ms_chunker *ch, const struct ms_chunk *c, int64_t now,
				   bool speculative, struct ms_fetch_session **out)
{
	MS_ASSERT_HELD(&ch->lock);
	int err = -ENOMEM;
	struct ms_fetch_session *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->chunker = ch;
	s->chunk_off = c->off;
	s->chunk_len = c->len;
	s->frame = c->frame;
	s->deadline_ns = now + ch->timeout_ns;
	s->speculative = speculative;
	s->pieces = c->frame < 0 ? (uint32_t)((c->len + ch->read_size - 1) / ch->read_size) : 1;
	s->piece_done = calloc(s->pieces, 1);
	if (!s->piece_done)
		goto fail_session;
	/* Pieces a failed or timed-out session of this chunk left present are not fetched again. */
	for (uint32_t p = 0; c->frame < 0 && p < s->pieces; p++) {
		uint64_t pos = (uint64_t)p * ch->read_size;
		uint64_t len = c->len - pos < ch->read_size ? c->len - pos : ch->read_size;
		s->piece_done[p] = ms_cachefile_is_cached(ch->cache, c->off + pos, len);
		if (s->piece_done[p] && s->ready == pos)
			s->ready = pos + len;
	}
	s->refs = speculative ? 1 : 2; /* the thread (and this waiter) */
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	err = -pthread_cond_init(&s->cond, &attr);
	pthread_condattr_destroy(&attr);
	if (err)
		goto fail_session;
	pthread_attr_t thread_attr;
	err = -pthread_attr_init(&thread_attr);
	if (err)
		goto fail_cond;
	pthread_attr_setdetachstate(&thread_attr, PTHREAD_CREATE_DETACHED);
	pthread_t thread;
	err = -pthread_create(&thread, &thread_attr, ms_session_run, s);
	pthread_attr_destroy(&thread_attr);
	if (err)
		goto fail_cond;
	ch->running++;
	s->next = ch->sessions;
	ch->sessions = s;
	atomic_fetch_add(&ch->stat_sessions, 1);
	if (speculative)
		atomic_fetch_add(&ch->stat_readahead, 1);
	*out = s;
	return 0;

fail_cond:
	pthread_cond_destroy(&s->cond);
fail_session:
	free(s->piece_done);
	free(s);
	return err;
}

/*
 * The session that will provide chunk c, with one waiter reference taken: the
 * in-flight one, or a new one. *out = NULL when the chunk is present.
 * *started: a new session was started for this reader (a demand miss).
 */
static int ms_session_acquire_locked(struct ms_chunker *ch, const struct ms_chunk *c,
				     struct ms_fetch_session **out, bool *started)
{
	MS_ASSERT_HELD(&ch->lock);
	*out = NULL;
	if (atomic_load(&ch->base.closed))
		return MS_ECLOSED;
	if (ms_cachefile_is_cached(ch->cache, c->off, c->len))
		return 0;
	int64_t now = ms_clock_now_ns();
	struct ms_fetch_session *s = ms_session_find_locked(ch, c, now);
	if (s) {
		s->refs++;
		*out = s;
		return 0;
	}
	*started = true;
	return ms_session_start_locked(ch, c, now, false, out);
}

/* Chunk index is present or on its way. */
static bool ms_chunk_coming_locked(struct ms_chunker *ch, uint64_t index)
{
	MS_ASSERT_HELD(&ch->lock);
	struct ms_chunk c;
	ms_chunk_nth(ch, index, &c);
	return ms_cachefile_is_cached(ch->cache, c.off, c.len) ||
	       ms_session_find_locked(ch, &c, ms_clock_now_ns()) != NULL;
}

/* Starts speculative sessions for the readahead chunks from index first on. */
static void ms_readahead_locked(struct ms_chunker *ch, uint64_t first)
{
	MS_ASSERT_HELD(&ch->lock);
	int64_t now = ms_clock_now_ns();
	for (uint64_t i = first; i < first + ch->readahead && i < ch->chunk_count; i++) {
		struct ms_chunk c;
		ms_chunk_nth(ch, i, &c);
		if (ms_cachefile_is_cached(ch->cache, c.off, c.len) ||
		    ms_session_find_locked(ch, &c, now))
			continue;
		struct ms_fetch_session *s;
		if (ms_session_start_locked(ch, &c, now, true, &s) != 0)
			return; /* only a guess: the reader will fetch it when it needs it */
		atomic_store(&ch->ra_mark[i], 1);
	}
}

/*
 * A read of chunks [first, last]: a demand miss that continues a stream (chunk
 * first - 1 present or coming) starts the window after last; a marked chunk slides it.
 */
static void ms_readahead_after_read_locked(struct ms_chunker *ch, uint64_t first, uint64_t last,
					   bool missed)
{
	MS_ASSERT_HELD(&ch->lock);
	if (!ch->readahead || atomic_load(&ch->base.closed))
		return;
	bool go = missed && (first == 0 || ms_chunk_coming_locked(ch, first - 1));
	for (uint64_t i = first; i <= last; i++)
		if (atomic_exchange(&ch->ra_mark[i], 0))
			go = true;
	if (go)
		ms_readahead_locked(ch, last + 1);
}

/* Bytes [chunk_off + from, chunk_off + to) of s are in the cache file. */
static bool ms_session_has_locked(struct ms_chunker *ch, const struct ms_fetch_session *s,
				  uint64_t from, uint64_t to)
{
	MS_ASSERT_HELD(&ch->lock);
	if (to <= s->ready)
		return true;
	if (s->frame >= 0)
		return false;
	for (uint64_t p = from / ch->read_size; p * ch->read_size < to; p++)
		if (!s->piece_done[p])
			return false;
	return true;
}

/*
 * Waits until bytes [chunk_off + from, chunk_off + to) of session s are in the
 * cache file, the session failed, the reader's deadline passed, or the reader's
 * thread token (util/cancel.h) was set: MS_ECANCELED, and, as for the deadline,
 * the session goes on for its other readers. Drops the waiter reference. Takes
 * and releases ch->lock.
 */
static int ms_session_wait(struct ms_chunker *ch, struct ms_fetch_session *s, uint64_t from,
			   uint64_t to, int64_t reader_deadline_ns)
{
	int err = 0;
	pthread_mutex_lock(&ch->lock);
	while (!s->done && !ms_session_has_locked(ch, s, from, to)) {
		int64_t now = ms_clock_now_ns();
		if (now >= s->deadline_ns) {
			ms_session_finish_locked(ch, s, -ETIMEDOUT);
			break;
		}
		if (now >= reader_deadline_ns) {
			err = -ETIMEDOUT; /* this reader gives up; the session goes on */
			break;
		}
		if (ms_cancel_requested()) {
			err = MS_ECANCELED; /* so does a cancelled one */
			break;
		}
		int64_t until =
		    s->deadline_ns < reader_deadline_ns ? s->deadline_ns : reader_deadline_ns;
		if (ms_cancel_token() && now + MS_CANCEL_POLL_NS < until)
			until = now + MS_CANCEL_POLL_NS;
		struct timespec ts = {.tv_sec = until / MS_NSEC_PER_SEC,
				      .tv_nsec = until % MS_NSEC_PER_SEC};
		pthread_cond_timedwait(&s->cond, &ch->lock, &ts);
	}
	if (!err && !ms_session_has_locked(ch, s, from, to))
		err = s->err ? s->err : -EIO;
	ms_session_unref_locked(s);
	pthread_mutex_unlock(&ch->lock);
	return err;
}

/* ---- reads ---- */

#define MS_CHUNKER_INLINE_SESSIONS 8

/* A fully cached read of [off, off + len) still slides the read-ahead window. */
static void ms_chunker_hit(struct ms_chunker *ch, uint64_t off, uint64_t len)
{
	struct ms_chunk first, last;
	if (!ch->readahead || ms_chunk_locate(ch, off, &first) ||
	    ms_chunk_locate(ch, off + len - 1, &last))
		return;
	uint64_t i = ms_chunk_index(ch, &first), j = ms_chunk_index(ch, &last);
	bool marked = false;
	for (uint64_t k = i; k <= j && !marked; k++)
		marked = atomic_load_explicit(&ch->ra_mark[k], memory_order_relaxed) != 0;
	if (!marked)
		return;
	pthread_mutex_lock(&ch->lock);
	ms_readahead_after_read_locked(ch, i, j, false);
	pthread_mutex_unlock(&ch->lock);
}

/*
 * Waits for the part [seg_off, seg_end) of chunk c that session s provides. A reader
 * that joined a read-ahead session that failed starts its own session once.
 */
static int ms_chunker_wait_chunk(struct ms_chunker *ch, const struct ms_chunk *c,
				 struct ms_fetch_session *s, uint64_t seg_off, uint64_t seg_end,
				 int64_t deadline_ns)
{
	bool speculative = s->speculative;
	int err = ms_session_wait(ch, s, seg_off - c->off, seg_end - c->off, deadline_ns);
	if (!err || !speculative || err == MS_ECLOSED || ms_clock_now_ns() >= deadline_ns)
		return err;
	bool started = false;
	pthread_mutex_lock(&ch->lock);
	err = ms_session_acquire_locked(ch, c, &s, &started);
	pthread_mutex_unlock(&ch->lock);
	if (!err && s)
		err = ms_session_wait(ch, s, seg_off - c->off, seg_end - c->off, deadline_ns);
	return err;
}

/*
 * Makes [off, off + len) present (or at least written, for a progressive wait) and,
 * when dst is given, copies it out. All sessions are started before the first wait,
 * so a read spanning several chunks fetches them in parallel.
 */
static int ms_chunker_fetch(struct ms_chunker *ch, void *dst, uint64_t off, size_t len,
			    int64_t deadline_ns)
{
	if (ms_cachefile_is_cached(ch->cache, off, len)) {
		ms_chunker_hit(ch, off, len);
		return dst ? ms_cachefile_read(ch->cache, dst, off, len) : 0;
	}

	uint64_t end = off + len;
	size_t count = 0;
	struct ms_chunk c;
	for (uint64_t pos = off; pos < end; pos = c.off + c.len, count++) {
		int err = ms_chunk_locate(ch, pos, &c);
		if (err)
			return err;
	}
	struct ms_fetch_session *inline_sessions[MS_CHUNKER_INLINE_SESSIONS];
	struct ms_chunk inline_chunks[MS_CHUNKER_INLINE_SESSIONS];
	struct ms_fetch_session **sessions = inline_sessions;
	struct ms_chunk *chunks = inline_chunks;
	if (count > MS_CHUNKER_INLINE_SESSIONS) {
		sessions = calloc(count, sizeof(*sessions));
		chunks = calloc(count, sizeof(*chunks));
		if (!sessions || !chunks) {
			free(sessions);
			free(chunks);
			return -ENOMEM;
		}
	}

	int err = 0;
	size_t acquired = 0;
	bool missed = false;
	pthread_mutex_lock(&ch->lock);
	for (uint64_t pos = off; acquired < count; acquired++) {
		ms_chunk_locate(ch, pos, &chunks[acquired]); /* checked above */
		err =
		    ms_session_acquire_locked(ch, &chunks[acquired], &sessions[acquired], &missed);
		if (err)
			break;
		pos = chunks[acquired].off + chunks[acquired].len;
	}
	if (err) {
		for (size_t i = 0; i < acquired; i++)
			if (sessions[i])
				ms_session_unref_locked(sessions[i]);
		pthread_mutex_unlock(&ch->lock);
		goto out;
	}
	ms_readahead_after_read_locked(ch, ms_chunk_index(ch, &chunks[0]),
				       ms_chunk_index(ch, &chunks[count - 1]), missed);
	pthread_mutex_unlock(&ch->lock);

	size_t i = 0;
	for (; i < count; i++) {
		const struct ms_chunk *ci = &chunks[i];
		uint64_t seg_off = off > ci->off ? off : ci->off;
		uint64_t seg_end = end < ci->off + ci->len ? end : ci->off + ci->len;
		if (sessions[i]) {
			err = ms_chunker_wait_chunk(ch, ci, sessions[i], seg_off, seg_end,
						    deadline_ns);
			sessions[i] = NULL;
			if (err)
				break;
		}
		if (dst) {
			err = ms_cachefile_read_unchecked(ch->cache,
							  (unsigned char *)dst + (seg_off - off),
							  seg_off, seg_end - seg_off);
			if (err)
				break;
		}
	}
	if (err) {
		pthread_mutex_lock(&ch->lock);
		for (; i < count; i++)
			if (sessions[i])
				ms_session_unref_locked(sessions[i]);
		pthread_mutex_unlock(&ch->lock);
	}
out:
	if (sessions != inline_sessions) {
		free(sessions);
		free(chunks);
	}
	return err;
}

int ms_chunker_read_deadline(struct ms_source *src, void *dst, uint64_t off, size_t len,
			     int64_t deadline_ns)
{
	if (!ms_source_is_chunker(src))
		return -EINVAL;
	if (atomic_load(&src->closed))
		return MS_ECLOSED;
	if (off > src->size || len > src->size - off)
		return -ERANGE;
	if (len == 0)
		return 0;
	if (!dst)
		return -EINVAL;
	return ms_chunker_fetch((struct ms_chunker *)src, dst, off, len, deadline_ns);
}

static int ms_chunker_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	return ms_chunker_fetch((struct ms_chunker *)src, dst, off, len, INT64_MAX);
}

static int ms_chunker_slice(struct ms_source *src, uint64_t off, size_t len, const void **ptr)
{
	struct ms_chunker *ch = (struct ms_chunker *)src;
	if (len > 0 && !ms_cachefile_is_cached(ch->cache, off, len)) {
		/* Wait for whole chunks: only a finished session marks bytes present. */
		struct ms_chunk first, last;
		int err = ms_chunk_locate(ch, off, &first);
		if (!err)
			err = ms_chunk_locate(ch, off + len - 1, &last);
		if (!err)
			err = ms_chunker_fetch(ch, NULL, first.off, last.off + last.len - first.off,
					       INT64_MAX);
		if (err)
			return err;
	}
	return ms_cachefile_slice(ch->cache, off, len, ptr);
}

static bool ms_chunker_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	return ms_cachefile_is_cached(((struct ms_chunker *)src)->cache, off, len);
}

static uint64_t ms_chunker_disk_bytes(struct ms_source *src)
{
	return ms_cachefile_disk_bytes(((struct ms_chunker *)src)->cache);
}

static void ms_chunker_fail_all(struct ms_chunker *ch)
{
	pthread_mutex_lock(&ch->lock);
	while (ch->sessions)
		ms_session_finish_locked(ch, ch->sessions, MS_ECLOSED);
	pthread_mutex_unlock(&ch->lock);
}

static void ms_chunker_close(struct ms_source *src)
{
	struct ms_chunker *ch = (struct ms_chunker *)src;
	ms_chunker_fail_all(ch);
	ms_cachefile_unlink(ch->cache);
}

static void ms_chunker_free(struct ms_source *src)
{
	struct ms_chunker *ch = (struct ms_chunker *)src;
	/* No reader is left (they hold references), so no new session can appear;
	 * wait for the threads (a store call stuck past the timeout delays this). */
	pthread_mutex_lock(&ch->lock);
	while (ch->sessions)
		ms_session_finish_locked(ch, ch->sessions, MS_ECLOSED);
	while (ch->running > 0)
		pthread_cond_wait(&ch->idle, &ch->lock);
	pthread_mutex_unlock(&ch->lock);
	ms_cachefile_free(ch->cache);
	for (unsigned i = 0; i < ch->nbufs; i++)
		ms_nofork_free(ch->bufs[i], ch->buf_size);
	ms_frame_table_free(ch->frames);
	free(ch->ra_mark);
	pthread_cond_destroy(&ch->idle);
	pthread_mutex_destroy(&ch->lock);
	free(ch->key);
	free(ch);
}

void ms_chunker_get_stats(struct ms_source *src, struct ms_chunker_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!ms_source_is_chunker(src))
		return;
	struct ms_chunker *ch = (struct ms_chunker *)src;
	out->sessions = atomic_load(&ch->stat_sessions);
	out->failures = atomic_load(&ch->stat_failures);
	out->timeouts = atomic_load(&ch->stat_timeouts);
	out->fetched_bytes = atomic_load(&ch->stat_bytes);
	out->readahead = atomic_load(&ch->stat_readahead);
}

static const struct ms_source_ops ms_chunker_ops = {
    .name = "chunker",
    .read = ms_chunker_read,
    .slice = ms_chunker_slice,
    .is_cached = ms_chunker_is_cached,
    .disk_bytes = ms_chunker_disk_bytes,
    .close = ms_chunker_close,
    .free = ms_chunker_free,
};

/* ---- construction ---- */

static int ms_chunker_check_frames(const struct ms_frame_table *frames, uint64_t size,
				   uint32_t block_size)
{
	int err = ms_frame_table_validate(frames);
	if (err)
		return err;
	if ((uint64_t)ms_frame_table_size_u(frames) < size)
		return MS_ECORRUPT; /* the frames do not cover the object */
	for (uint32_t i = 0; i < frames->count; i++)
		if ((uint64_t)frames->frames[i].start_u % block_size != 0)
			return MS_ECORRUPT; /* a block would straddle two frames */
	return 0;
}

struct ms_source *ms_chunker_new(struct ms_store *store, const char *key, uint64_t size,
				 const struct ms_frame_table *frames, const char *cache_path,
				 const struct ms_chunker_config *config, int *err)
{
	struct ms_chunker_config cfg = config ? *config : (struct ms_chunker_config){0};
	if (!cfg.chunk_size)
		cfg.chunk_size = MS_CHUNK_SIZE_DEFAULT;
	if (!cfg.read_size)
		cfg.read_size = MS_CHUNK_READ_SIZE_DEFAULT;
	if (!cfg.fetch_timeout_ns)
		cfg.fetch_timeout_ns = MS_CHUNK_TIMEOUT_DEFAULT;
	if (!cfg.block_size)
		cfg.block_size = 4096;
	if (!cfg.parallel)
		cfg.parallel = MS_CHUNK_PARALLEL_DEFAULT;
	if (!cfg.readahead)
		cfg.readahead = MS_CHUNK_READAHEAD_DEFAULT;
	if (cfg.readahead == MS_CHUNK_READAHEAD_OFF)
		cfg.readahead = 0;
	*err = -EINVAL;
	if (!store || !ms_store_key_valid(key) || !cache_path || cfg.fetch_timeout_ns < 0 ||
	    cfg.block_size < 512 || (cfg.block_size & (cfg.block_size - 1)) ||
	    cfg.chunk_size % cfg.block_size != 0 || cfg.read_size > SIZE_MAX ||
	    cfg.chunk_size / cfg.read_size > UINT32_MAX || cfg.readahead > 64)
		return NULL;
	bool compressed = frames && frames->type != MS_COMPRESS_NONE;
	if (frames && !compressed && frames->count != 0) {
		*err = MS_ECORRUPT;
		return NULL;
	}
	if (compressed) {
		*err = ms_chunker_check_frames(frames, size, cfg.block_size);
		if (*err)
			return NULL;
	}

	*err = -ENOMEM;
	struct ms_chunker *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->key = strdup(key);
	if (!ch->key)
		goto fail_chunker;
	if (compressed) {
		ch->frames = ms_frame_table_copy(frames);
		if (!ch->frames)
			goto fail_key;
	}
	ch->chunk_count = compressed ? frames->count : (size + cfg.chunk_size - 1) / cfg.chunk_size;
	ch->ra_mark = calloc(ch->chunk_count ? ch->chunk_count : 1, sizeof(*ch->ra_mark));
	if (!ch->ra_mark)
		goto fail_frames;
	*err = ms_cachefile_create(cache_path, size, cfg.block_size, &ch->cache);
	if (*err)
		goto fail_marks;
	ms_cachefile_set_remove(ch->cache, true);
	ch->store = store;
	ch->chunk_size = cfg.chunk_size;
	ch->read_size = cfg.read_size;
	ch->buf_size = (size_t)(cfg.read_size < cfg.chunk_size ? cfg.read_size : cfg.chunk_size);
	if (ch->buf_size == 0)
		ch->buf_size = 1;
	ch->timeout_ns = cfg.fetch_timeout_ns;
	ch->parallel = cfg.parallel;
	ch->readahead = cfg.readahead;
	pthread_mutex_init(&ch->lock, NULL);
	pthread_cond_init(&ch->idle, NULL);
	atomic_init(&ch->stat_sessions, 0);
	atomic_init(&ch->stat_failures, 0);
	atomic_init(&ch->stat_timeouts, 0);
	atomic_init(&ch->stat_bytes, 0);
	atomic_init(&ch->stat_readahead, 0);
	ms_source_init(&ch->base, &ms_chunker_ops, size);
	*err = 0;
	return &ch->base;

fail_marks:
	free(ch->ra_mark);
fail_frames:
	ms_frame_table_free(ch->frames);
fail_key:
	free(ch->key);
fail_chunker:
	free(ch);
	return NULL;
}
