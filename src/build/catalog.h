/*
 * catalog.h - what a store holds, build by build: the objects under each
 * "{build_id}/", what each header maps to, the leases (storage/lease.h) that
 * keep builds in use, and from that the two decisions of a build's lifecycle:
 * what a collector may remove (ms_catalog_gc_plan) and whether one build may
 * be deleted (ms_catalog_dependents).
 *
 * A build is reached when a header in the store maps pages to it (its own
 * header included). A build without a header is one of three things: an
 * upload still under way (its uploads/ or peers/ lease is live, or it is
 * younger than the collector's age limit), a pause that failed or a node that
 * died between data and header (the leftovers the collector removes), or data
 * a child's header still maps to (reached: never removed).
 *
 * Invariants of the plan:
 *  1. Never an object of a reached build, of a build with a live lease, or of
 *     one written within older_than_ms (the newest of its objects counts).
 *  2. Headers go before data: within one build the plan lists the header
 *     first, so a plan cut short leaves data without a header (collectable
 *     again), never a header without its data.
 *  3. A header that does not parse keeps its build (and is reported): a
 *     collector never guesses.
 *
 * Thread-safety: a catalog is a snapshot of the store, read-only after load.
 */
#ifndef MS_BUILD_CATALOG_H
#define MS_BUILD_CATALOG_H

#include "storage/store.h"
#include "util/uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ms_catalog_build {
	ms_uuid id;
	unsigned objects;    /* objects under "{id}/" */
	uint64_t bytes;	     /* their sizes, summed */
	int64_t mtime_ms;    /* the newest object's write time (0: unknown) */
	bool has_header;     /* {id}/memfile.header exists */
	int header_error;    /* it exists but did not load or parse (0: fine) */
	uint64_t generation; /* from the header */
	uint64_t mem_bytes;  /* the header's device size */
	ms_uuid parent;	     /* the newest build it layers over (has_parent) */
	bool has_parent;
	ms_uuid *refs; /* the other builds its header maps pages to (sorted) */
	size_t nrefs;
	bool reached; /* some header (its own included) maps pages to it */
	bool leased;  /* a live uploads/ or peers/ lease names it */
	char **keys;  /* its objects' keys, headers first (malloc'd) */
	uint64_t *key_bytes;
};

/* A lease object seen in the store. */
struct ms_catalog_lease {
	char key[96]; /* "uploads/{id}" or "peers/{id}" */
	ms_uuid build_id;
	uint64_t bytes;
	bool live; /* parsed, matches its key, not expired */
};

struct ms_catalog {
	struct ms_catalog_build *builds; /* sorted by id */
	size_t count;
	struct ms_catalog_lease *leases;
	size_t nleases;
	uint64_t total_bytes; /* every object under a build (leases not counted) */
	unsigned other_keys;  /* objects that are neither (left alone) */
};

/* Reads the whole store (one listing, then each header). 0 or an error; *out owned. */
int ms_catalog_load(struct ms_store *store, int64_t now_ms, struct ms_catalog **out);
void ms_catalog_free(struct ms_catalog *catalog);
/* The build id, or NULL. Borrowed from the catalog. */
const struct ms_catalog_build *ms_catalog_find(const struct ms_catalog *catalog, const ms_uuid *id);
/*
 * The builds whose headers map pages to id, id itself left out: the ones that
 * need it. Up to max go into out; returns how many there are.
 */
size_t ms_catalog_dependents(const struct ms_catalog *catalog, const ms_uuid *id, ms_uuid *out,
			     size_t max);

struct ms_gc_item {
	char key[96];
	uint64_t bytes;
	const char *why; /* "no header reaches it", "expired lease", "malformed lease" */
};

struct ms_gc_plan {
	struct ms_gc_item *items;
	size_t count;
	uint64_t bytes;
	unsigned kept_young;  /* unreached builds kept for their age */
	unsigned kept_leased; /* unreached builds kept for a live lease */
	unsigned kept_broken; /* builds kept because their header did not parse */
};

/*
 * What a collector may remove from the store the catalog was loaded from
 * (invariants above): objects of unreached, unleased builds older than
 * older_than_ms, and leases that expired or do not parse. *plan owned by the
 * caller (ms_gc_plan_fini).
 */
int ms_catalog_gc_plan(const struct ms_catalog *catalog, int64_t now_ms, int64_t older_than_ms,
		       struct ms_gc_plan *plan);
/*
 * Removes the plan's objects in order; *removed counts them. An object already
 * gone is fine. Stops at the first other error.
 */
int ms_gc_plan_run(struct ms_store *store, const struct ms_gc_plan *plan, size_t *removed);
void ms_gc_plan_fini(struct ms_gc_plan *plan);

#endif
