/*
 * sched_metadata.h - a build's scheduling metadata (E2B's layout): the
 * builds its memory reads from and how many bytes of the device each one
 * holds, so a scheduler can place a sandbox where its data already is.
 *
 * Rules, as e2b's FromHeaders: bytes per build from the header's mappings
 * (nil excluded); the base build and the build itself are always listed (0
 * bytes when they map nothing); over MS_SCHED_METADATA_MAX builds, the base
 * and the build are kept, then the heaviest (ties by id), and the rest are
 * counted as dropped; the list is sorted by id (byte order = string order).
 *
 * From a layered file it reads the DURABLE header without waiting (docs/design.md
 * §5.4): while a pause's deduped header is pending the metadata is pending too,
 * with no memory part - never the provisional header, whose build id must not
 * leave the node. No rootfs in memsnap yet: the memory part is all there is.
 *
 * Thread-safety: every function, any thread; nothing here blocks.
 */
#ifndef MS_SNAPSHOT_SCHED_METADATA_H
#define MS_SNAPSHOT_SCHED_METADATA_H

#include "build/layered.h"
#include "header/header.h"
#include "util/uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_SCHED_METADATA_MAX 128 /* builds listed at most */

struct ms_sched_build {
	ms_uuid build_id;
	uint64_t bytes; /* device bytes mapped to this build */
};

struct ms_sched_metadata {
	ms_uuid build_id;
	bool pending; /* the durable header is not there yet: the fields below are empty */
	ms_uuid base_build_id;
	uint64_t mem_bytes;	       /* the device's size */
	struct ms_sched_build *builds; /* sorted by id; owned (ms_sched_metadata_fini) */
	size_t build_count;	       /* <= MS_SCHED_METADATA_MAX */
	size_t dropped_builds;	       /* builds left out over the maximum */
};

/* From a header the caller knows to be durable (e.g. loaded from the store). 0 or -ENOMEM. */
int ms_sched_metadata_from_header(const struct ms_header *header, const ms_uuid *build_id,
				  struct ms_sched_metadata *out);
/* From file's durable header if it has one now, else pending. 0 or -ENOMEM. */
int ms_sched_metadata_from_file(struct ms_layered *file, const ms_uuid *build_id,
				struct ms_sched_metadata *out);
void ms_sched_metadata_fini(struct ms_sched_metadata *metadata);

#endif
