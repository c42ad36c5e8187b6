/*
 * memsnap/pause.h - the pause pipeline: a paused guest's memory becomes a new build over
 * its parent. It is resumable at once (served from the memory), while in the background
 * its written pages are compared with the parent's (equal ones dropped, zero ones become
 * nil), the survivors drained into a diff file and uploaded with the snapfile and the
 * header, data first. (libmemsnap)
 */
#ifndef MEMSNAP_PAUSE_H
#define MEMSNAP_PAUSE_H

#include "memsnap/build.h"

#include <stddef.h>
#include <stdint.h>

enum memsnap_pause_stage {
	MEMSNAP_PAUSE_RESUMABLE = 0, /* the new build can be read (memsnap_pause_file) */
	MEMSNAP_PAUSE_COMPARED,	     /* dedup done: the deduped header is live */
	MEMSNAP_PAUSE_DRAINED,	     /* the diff file is written */
	MEMSNAP_PAUSE_PUBLISHED,     /* data, snapfile and header are in the store */
};

typedef struct memsnap_pause memsnap_pause;

/*
 * Starts a pause over parent (borrowed: it must outlive the pause). memfd: the guest
 * memory, parent's size (ownership taken, closed on error too); written_pages: the 4 KiB
 * page numbers the guest wrote since parent (sorted or not); snapfile: the VMM's state
 * (copied). NULL on error with *err.
 */
memsnap_pause *memsnap_pause_start(memsnap_build *parent, int memfd, const uint32_t *written_pages,
				   size_t count, const void *snapfile, size_t snapfile_len,
				   int *err);
/* Waits until stage (timeout_ns < 0: forever): 0, the pipeline's error, or -ETIMEDOUT. */
int memsnap_pause_wait(memsnap_pause *pause, enum memsnap_pause_stage stage, int64_t timeout_ns);
void memsnap_pause_build_id(memsnap_pause *pause, char out[MEMSNAP_BUILD_ID_LEN]);
/* The new build's layered file; borrowed until memsnap_pause_free. */
memsnap_layered *memsnap_pause_file(memsnap_pause *pause);
/* Waits for the pipeline to end (published or failed), then frees. */
void memsnap_pause_free(memsnap_pause *pause);

#endif
