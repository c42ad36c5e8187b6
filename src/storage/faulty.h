/*
 * faulty.h - a fault-injecting store wrapper, for tests.
 *
 * Wraps another store (borrowed: it must outlive the wrapper) and counts calls
 * per kind. A rule makes the N-th call (1-based, counted from when the rule was
 * set) of a kind fail with an error, sleep first, or truncate: a truncated put
 * stores nothing and fails as if the connection broke after a prefix (puts are
 * atomic, so a failed put must leave nothing visible); a truncated read returns
 * half the bytes asked for; a corrupted read returns them with one bit flipped
 * (bit rot on the wire: the next read is clean). Thread-safe.
 */
#ifndef MS_STORAGE_FAULTY_H
#define MS_STORAGE_FAULTY_H

#include "storage/store.h"

#include <stdint.h>

enum ms_faulty_op {
	MS_FAULTY_PUT,
	MS_FAULTY_READ,
	MS_FAULTY_SIZE,
	MS_FAULTY_REMOVE,
	MS_FAULTY_LIST,
	MS_FAULTY_META,
	MS_FAULTY_ANY,
	MS_FAULTY_OPS,
};

enum ms_faulty_action {
	MS_FAULTY_FAIL,	    /* return err without calling the inner store */
	MS_FAULTY_DELAY,    /* sleep delay_ns, then call the inner store */
	MS_FAULTY_TRUNCATE, /* put: fail with err, nothing stored; read: half the bytes */
	MS_FAULTY_CORRUPT,  /* read: the bytes with the first one flipped (other ops: as FAIL) */
};

struct ms_store *ms_store_faulty_new(struct ms_store *inner);
/* The same, owning inner: freeing the wrapper frees it (wrappers stacked for several rules). */
struct ms_store *ms_store_faulty_new_owning(struct ms_store *inner);
/* Calls a rule acted on so far (failed, delayed, truncated, corrupted). */
unsigned ms_store_faulty_fired(struct ms_store *store);
/* Arms one rule (replacing the previous one) for the nth next call of op. */
void ms_store_faulty_inject(struct ms_store *store, enum ms_faulty_op op, unsigned nth,
			    enum ms_faulty_action action, int err, int64_t delay_ns);
/*
 * Arms a repeating rule (replacing the previous one): every every-th next call
 * of op, for good (every 1: each call). The daemon's test_store_delay is this
 * with MS_FAULTY_PUT and MS_FAULTY_DELAY.
 */
void ms_store_faulty_inject_every(struct ms_store *store, enum ms_faulty_op op, unsigned every,
				  enum ms_faulty_action action, int err, int64_t delay_ns);
/*
 * Keys the next rule (until cleared): it applies only to calls whose key (a
 * list's prefix) contains substring, and counts only those (NULL or "": every
 * call again). Disarms the current rule; arm one after it.
 */
void ms_store_faulty_match(struct ms_store *store, const char *substring);
/* Disarms the rule and forgets the key match. */
void ms_store_faulty_clear(struct ms_store *store);
/* Calls of op made so far (MS_FAULTY_ANY: all). */
unsigned ms_store_faulty_calls(struct ms_store *store, enum ms_faulty_op op);

#endif
