/*
 * cancel.h - a thread's cancellation token, for waits far below its owner.
 *
 * A pause's compare reads its parent through layers of sources (layered file,
 * routing source, chunker) that take no token. The compare sets its pause's
 * token on its own thread for the length of the reads; a wait deep below (a
 * chunk fetch that other readers may share) looks at it, gives up with
 * MS_ECANCELED when it is set and leaves the shared work going on.
 *
 * Thread-safety: the token is the calling thread's own; the flag it points at
 * is atomic and owned by the caller, who keeps it alive while it is set.
 */
#ifndef MS_UTIL_CANCEL_H
#define MS_UTIL_CANCEL_H

#include <stdatomic.h>
#include <stdbool.h>

/* How soon a wait that looks at the token sees it set. */
#define MS_CANCEL_POLL_NS (10 * 1000 * 1000)

/* Sets this thread's token (NULL: none); returns the previous one, to put back. */
const atomic_bool *ms_cancel_swap(const atomic_bool *token);
/* This thread's token, or NULL. */
const atomic_bool *ms_cancel_token(void);
/* true when this thread has a token and it is set. */
bool ms_cancel_requested(void);

#endif
