/*
 * pageserver.h - the userfaultfd page server: Firecracker's handshake, then
 * one restore session per connection, served from a page source.
 *
 * A server listens on a unix stream socket (mode 0600). Each accepted
 * connection must deliver Firecracker's handshake (handshake.h) within
 * accept_timeout_ms; a malformed one is logged and closed, and the server goes
 * on accepting. A good one becomes a session:
 *
 *   handshake --> SERVING --(source failed after retries, or ioctl error)--> FAILED
 *                    |                                                        |
 *                    +--(peer process exited / session or server stopped)--> CLOSED
 *
 * A session serves page faults from the source (UFFDIO_COPY, zero pages with
 * UFFDIO_ZEROPAGE or a zero copy), tracks every page (tracker.h), handles
 * REMOVE/UNMAP/REMAP, and on failure signals its event fd and the
 * on_session_event callback so the VMM side can tear the sandbox down instead
 * of hanging. FAILED sessions keep reading events (a guest madvise never
 * blocks) but install nothing.
 *
 * Thread-safety: every function may be called from any thread unless noted.
 */
#ifndef MS_UFFD_PAGESERVER_H
#define MS_UFFD_PAGESERVER_H

#include "uffd/pagesource.h"
#include "uffd/trace.h"
#include "util/pageset.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct ms_pageserver;
struct ms_uffd_session;

enum ms_uffd_session_state {
	MS_UFFD_SESSION_SERVING = 0,
	MS_UFFD_SESSION_FAILED,
	MS_UFFD_SESSION_CLOSED,
};

/* Latency buckets: upper bounds in microseconds; the last bucket is everything above. */
#define MS_UFFD_LATENCY_BUCKETS 10
extern const uint64_t ms_uffd_latency_bounds_us[MS_UFFD_LATENCY_BUCKETS - 1];

/*
 * Counters of one session (or summed over a server). Plain atomics: read them
 * any time with atomic_load; they only grow.
 */
struct ms_uffd_metrics {
	/* faults by access type */
	_Atomic uint64_t faults_read;  /* MISSING, read access */
	_Atomic uint64_t faults_write; /* MISSING, write access */
	_Atomic uint64_t faults_wp;    /* write to a write-protected page */
	/* results */
	_Atomic uint64_t pages_source;	   /* pages installed with source data */
	_Atomic uint64_t pages_zero;	   /* pages installed as zeros */
	_Atomic uint64_t pages_batched;	   /* of pages_source: neighbours installed with a fault */
	_Atomic uint64_t pages_prefault;   /* pages installed by prefault */
	_Atomic uint64_t pages_prefetched; /* pages installed ahead of faults by a prefetch
					      (ms_uffd_session_install) */
	_Atomic uint64_t faults_eexist;	   /* already present: woken */
	_Atomic uint64_t faults_deferred;  /* EAGAIN or short copy: retried later */
	_Atomic uint64_t faults_esrch;	   /* faulting process gone: dropped */
	_Atomic uint64_t faults_dropped;   /* arrived after the session failed */
	_Atomic uint64_t faults_inline;	   /* served on the event thread (source is_cached) */
	/* of pages_source: copied by the kernel straight from a view of the source (its slice
	 * op), not read into a buffer first */
	_Atomic uint64_t pages_sliced;
	/* installs from a slice that failed (a view the kernel could not read): read instead */
	_Atomic uint64_t slice_fallbacks;
	_Atomic uint64_t source_reads;
	_Atomic uint64_t source_retries;
	_Atomic uint64_t source_errors; /* reads that failed after every retry */
	_Atomic uint64_t events_remove;
	_Atomic uint64_t pages_removed;
	_Atomic uint64_t events_unmap;
	_Atomic uint64_t events_remap;
	_Atomic uint64_t events_other;
	_Atomic uint64_t errors; /* session failures */
	/* fault latency: event read to page installed */
	_Atomic uint64_t latency[MS_UFFD_LATENCY_BUCKETS];
	/* the same by where the fault's page came from (enum ms_page_from; WP faults are in
	 * latency only), with the sum of the latencies in ns */
	_Atomic uint64_t fault_latency[MS_PAGE_FROMS][MS_UFFD_LATENCY_BUCKETS];
	_Atomic uint64_t fault_ns[MS_PAGE_FROMS];
};

/* Called on the session's event thread when it leaves SERVING; must not block long. */
typedef void (*ms_uffd_session_event_fn)(void *arg, struct ms_uffd_session *session,
					 enum ms_uffd_session_state state, int err);

struct ms_pageserver_options {
	unsigned workers;      /* fetch threads per session; 0 = 4 */
	uint64_t batch_bytes;  /* aligned block a fault may install (power of two, 4 KiB..2 MiB);
				  0 = one page */
	int accept_timeout_ms; /* connection to complete handshake; 0 = 10000 */
	int spin_us;	       /* after serving faults, busy-poll this long before sleeping (saves a
				  cross-CPU wakeup per fault), yielding the CPU between polls;
				  0 = 50, < 0 = never */
	ms_uffd_session_event_fn on_session_event; /* optional */
	void *event_arg;
	/* Optional: called on the acceptor thread with each new session as soon as its
	 * handshake is in, before any fault of it can have been served late (a prefetch
	 * starts here); the session is valid during the call (take a reference to keep
	 * it). Must not block long. */
	void (*on_session_start)(void *arg, struct ms_uffd_session *session);
	void *start_arg;
};

/*
 * Creates the socket at socket_path (an existing socket file there is
 * replaced; any other file is an error), chmod 0600, and starts accepting.
 * The source (ops + ctx) must outlive the server. NULL on error with *err set
 * (-EINVAL for bad arguments or options, or the socket's or a thread's error).
 */
struct ms_pageserver *ms_pageserver_new(const char *socket_path,
					const struct ms_page_source_ops *ops, void *ctx,
					const struct ms_pageserver_options *options, int *err);
/* Stops accepting, stops every session (waits for their threads), removes the socket.
 * Idempotent. Sessions handed out stay readable until unref'd. */
void ms_pageserver_stop(struct ms_pageserver *srv);
/* Stops, then frees. */
void ms_pageserver_free(struct ms_pageserver *srv);

/*
 * The next session in accept order not yet handed out, with a reference the
 * caller releases with ms_uffd_session_unref. -ETIMEDOUT, MS_ECLOSED after stop.
 */
int ms_pageserver_next_session(struct ms_pageserver *srv, int64_t timeout_ns,
			       struct ms_uffd_session **out);
/* Handshakes accepted / rejected so far. */
uint64_t ms_pageserver_sessions_accepted(struct ms_pageserver *srv);
uint64_t ms_pageserver_handshakes_rejected(struct ms_pageserver *srv);

struct ms_uffd_session *ms_uffd_session_ref(struct ms_uffd_session *s);
void ms_uffd_session_unref(struct ms_uffd_session *s);

enum ms_uffd_session_state ms_uffd_session_state(struct ms_uffd_session *s);
/*
 * 0 while serving or closed cleanly; the failure's error once FAILED. offset (may be NULL)
 * gets the device offset of the source read whose failure FAILED the session, or UINT64_MAX
 * (serving, closed, or failed by something else: an ioctl error), read with the error.
 */
int ms_uffd_session_error(struct ms_uffd_session *s, uint64_t *offset);
/* An eventfd that becomes readable when the session leaves SERVING (fails or closes).
 * Borrowed: valid until the last unref. */
int ms_uffd_session_event_fd(struct ms_uffd_session *s);
/* Waits until the state is not SERVING: 0, or -ETIMEDOUT. */
int ms_uffd_session_wait(struct ms_uffd_session *s, int64_t timeout_ns);
/* Stops serving: the event thread and workers exit, the uffd is closed. Idempotent. */
void ms_uffd_session_stop(struct ms_uffd_session *s);

/*
 * Installs the pages at the given device offsets (any alignment: the page
 * containing each) ahead of faults, as reads (write-protected when the
 * registration has WP). Pages already installed, removed or in flight are
 * skipped. Blocks until every page is installed or skipped; 0, or the
 * session's error, MS_ECLOSED when not serving, -EINVAL for an offset
 * outside the image or not covered by a region.
 */
int ms_uffd_session_prefault(struct ms_uffd_session *s, const uint64_t *offsets, size_t count);

/*
 * The install step of a prefetch: installs len bytes at device offset off
 * (both page aligned, inside the image), already fetched into buf, ahead of the
 * faults, as reads (write-protected when the registration has WP). Only pages
 * not yet present are installed: a page the guest faulted in, wrote, or
 * removed (MADV_DONTNEED: it must read as zero) is skipped, and a REMOVE not
 * yet read when the copy runs makes it fail with EAGAIN and retry after the
 * event is read, so a late prefetch never undoes the guest's write or remove.
 * It runs on the caller's thread, one batch block at a time under the
 * session's install lock, which the event thread gets first whenever it waits
 * for it (faults go first). Blocks until done; *installed (may be NULL) = pages installed. 0,
 * -EINVAL, the session's error, MS_ECLOSED when not serving. buf is borrowed until return.
 */
int ms_uffd_session_install(struct ms_uffd_session *s, uint64_t off, const void *buf, uint64_t len,
			    uint64_t *installed);
/* Several installs: as ms_uffd_session_install for each, in order; installed is set per
 * run; the first error ends it. */
struct ms_uffd_install_run {
	uint64_t off;
	const void *buf;
	uint64_t len;
	uint64_t installed; /* out */
};
int ms_uffd_session_install_runs(struct ms_uffd_session *s, struct ms_uffd_install_run *runs,
				 size_t n);

/* The next pause's page sets (4 KiB units; new sets, caller frees): dirty = written pages,
 * empty = pages that read as zero (zero installs and removed ranges). */
int ms_uffd_session_export(struct ms_uffd_session *s, struct ms_pageset **dirty,
			   struct ms_pageset **empty);

/*
 * The session's first-touch trace so far (trace.h), block size = the session's
 * page size: every page a fault asked for ("r" or "w"; the neighbours batched
 * with it were not touched and are left out) and every page installed by a
 * prefault/prefetch ("p"), each once, in install order. A copy (ms_uffd_trace_fini); 0 or -ENOMEM.
 * Any thread, any state.
 */
int ms_uffd_session_trace(struct ms_uffd_session *s, struct ms_uffd_trace *out);

const struct ms_uffd_metrics *ms_uffd_session_metrics(struct ms_uffd_session *s);
/* The guest-memory memfd sent as the second fd, or -1. Borrowed until the last unref. */
int ms_uffd_session_memfd(struct ms_uffd_session *s);
/* The VMM's pid (SO_PEERCRED). */
pid_t ms_uffd_session_peer_pid(struct ms_uffd_session *s);
/* Handshake page size of the session (4096 or 2 MiB). */
uint64_t ms_uffd_session_page_size(struct ms_uffd_session *s);
/* Pages per batch block (options.batch_bytes / page size, at least 1): what a fault installs. */
uint64_t ms_uffd_session_block_pages(struct ms_uffd_session *s);
/* Bytes of the device (the page source's size). */
uint64_t ms_uffd_session_image_size(struct ms_uffd_session *s);
/* true when the registration takes write-protected installs (known after the first
 * read-fault install; false before). */
bool ms_uffd_session_has_wp(struct ms_uffd_session *s);

#endif
