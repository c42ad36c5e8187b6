/*
 * pause_int.h - the pause pipeline's private struct, shared by the state
 * machine (pause.c) and its upload stage (pause_upload.c). Not for other modules.
 *
 * Who touches what: fields marked "immutable" are set before the pipeline
 * thread starts; "set before X" fields are written once by the thread that
 * enters state X, before it enters it (the lock's release/acquire orders them
 * for anyone who saw X reached), and never again; "lock" fields are guarded by
 * ms_pause.lock.
 */
#ifndef MS_SNAPSHOT_PAUSE_INT_H
#define MS_SNAPSHOT_PAUSE_INT_H

#include "build/storage.h"
#include "snapshot/memfd.h"
#include "snapshot/pause.h"

#include <pthread.h>
#include <stdatomic.h>

struct ms_pause {
	struct ms_pause_config config;	   /* immutable; strings borrowed */
	struct ms_build_storage storage;   /* immutable: the new file's resolver */
	struct ms_layered *parent;	   /* immutable, borrowed */
	struct ms_header_ref *parent_head; /* immutable: the parent's durable header */
	struct ms_memfd *memfd;		   /* immutable reference; unmapped by the release */
	struct ms_pageset *dirty, *empty;  /* immutable */
	void *snapfile;			   /* immutable */
	size_t snapfile_len;
	void *metadata; /* immutable: metadata.json (config.metadata points here), or NULL */
	size_t metadata_len;
	ms_uuid real_id, prov_id; /* immutable */
	/* set before PROVISIONAL (NULL without a provisional header) */
	struct ms_header_ref *prov_head;
	struct ms_source *identity; /* in-flight serving: the memfd at identity offsets */
	struct ms_source *waiting;  /* without: reads wait for the deduped header */
	/* set before DEDUPED, in-flight serving only: the memfd through the packed index */
	struct ms_source *packed;
	struct ms_layered *file; /* set before PROVISIONAL, else before COMPARED */
	struct ms_future *stages[MS_PAUSE_STATES]; /* one per state; [FAILED] is NULL */
	/* settled after the drain: the diff file's checksum table (struct ms_sums *) */
	struct ms_future *data_sums;
	struct ms_dedup_result result; /* set before DEDUPED */
	char diff_path[4096];	       /* set before DEDUPED */
	/* set before DEDUPED: the deduped header, for the swap (taken by it) and as
	 * the durable one (COMPARED's value, what the upload finalizes) */
	struct ms_header *deduped;
	struct ms_header_ref *durable;
	struct ms_layered *deduped_view; /* the deduped header alone: straddling reads */
	struct ms_header *final;	 /* set before UPLOADED: what publish swaps in */
	/* pipeline thread (then ms_pause_free) */
	pthread_t thread, swap_thread, release_thread;
	bool thread_started, swap_started, release_started;
	bool prov_pinned, real_pinned;		      /* the pins held in the diff store */
	uint64_t counted_provisional, counted_packed; /* memfd pages summed into counters */
	atomic_bool cancelled;			      /* the pause's cancellation token */
	int64_t t_start;			      /* immutable */
	pthread_mutex_t lock;
	pthread_cond_t cond;	     /* the failed hold's wait: users, retry, cancel, free */
	uint32_t reached;	     /* lock: one bit per state reached */
	struct ms_pause_stats stats; /* lock */
	unsigned users;		     /* lock: ms_pause_user_ref */
	bool held;		     /* lock: failed, memory still mapped, in the gauge */
	bool retried;		     /* lock: a retry took the memory over */
	bool freeing;		     /* lock: ms_pause_free is waiting */
};

/* Counts a caller-owned counter, if the caller gave any. */
#define MS_PAUSE_COUNT(p, field, n)                                                                \
	do {                                                                                       \
		if ((p)->config.counters)                                                          \
			atomic_fetch_add(&(p)->config.counters->field, (n));                       \
	} while (0)

/*
 * Waits for f like ms_future_wait_timeout (timeout_ns < 0: forever), but
 * answers MS_ECANCELED within a few ms of ms_pause_cancel.
 */
int ms_pause_await(struct ms_pause *p, struct ms_future *f, int64_t timeout_ns, void **value);
/* Sleeps ns; MS_ECANCELED (early) when cancelled. */
int ms_pause_sleep(struct ms_pause *p, int64_t ns);
/* Enters state (ms_pause_check asserted); the error of a pause that failed meanwhile. */
int ms_pause_enter(struct ms_pause *p, enum ms_pause_state state, void *value);

/* pause_upload.c: DRAINED -> UPLOADED (data, snapfile, header; p->final set). */
int ms_pause_upload(struct ms_pause *p);
/* pause_upload.c: the diff file's checksum table for peers, into p->data_sums. */
int ms_pause_data_sums(struct ms_pause *p);

#endif
