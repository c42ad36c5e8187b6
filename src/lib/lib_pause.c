/* lib_pause.c - the public pause pipeline (memsnap/pause.h) over snapshot/pause. */
#include "lib/lib_int.h"
#include "memsnap/pause.h"
#include "snapshot/pause.h"
#include "util/pageset.h"

#include <errno.h>
#include <unistd.h>

/* The public pause is the internal one. */
static struct ms_pause *ms_lib_pause(memsnap_pause *pause)
{
	return (struct ms_pause *)pause;
}

memsnap_pause *memsnap_pause_start(memsnap_build *parent, int memfd, const uint32_t *written_pages,
				   size_t count, const void *snapfile, size_t snapfile_len,
				   int *err)
{
	if (!parent || memfd < 0 || (count && !written_pages)) {
		if (memfd >= 0)
			close(memfd);
		*err = -EINVAL;
		return NULL;
	}
	struct ms_build_file *bf = ms_lib_build_file(parent);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	struct ms_pause *pause = NULL;
	*err = -ENOMEM;
	if (dirty && empty) {
		for (size_t i = 0; i < count; i++)
			ms_pageset_add(dirty, written_pages[i]);
		struct ms_pause_config config = {.store = bf->cache.store,
						 .diffs = bf->cache.diffs,
						 .cache_dir = bf->cache.cache_dir,
						 .inflight = true};
		*err = ms_pause_start(&config, bf->file, memfd, dirty, empty, snapfile,
				      snapfile_len, &pause);
		memfd = -1; /* taken, also on error */
	}
	if (memfd >= 0)
		close(memfd);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	return *err ? NULL : (memsnap_pause *)pause;
}

int memsnap_pause_wait(memsnap_pause *pause, enum memsnap_pause_stage stage, int64_t timeout_ns)
{
	static const enum ms_pause_state states[] = {
	    [MEMSNAP_PAUSE_RESUMABLE] = MS_PAUSE_CAPTURED,
	    [MEMSNAP_PAUSE_COMPARED] = MS_PAUSE_COMPARED,
	    [MEMSNAP_PAUSE_DRAINED] = MS_PAUSE_DRAINED,
	    [MEMSNAP_PAUSE_PUBLISHED] = MS_PAUSE_PUBLISHED,
	};
	if ((unsigned)stage >= sizeof(states) / sizeof(states[0]))
		return -EINVAL;
	return ms_pause_wait(ms_lib_pause(pause), states[stage], timeout_ns);
}

void memsnap_pause_build_id(memsnap_pause *pause, char out[MEMSNAP_BUILD_ID_LEN])
{
	ms_uuid_format(ms_pause_build_id(ms_lib_pause(pause)), out);
}

memsnap_layered *memsnap_pause_file(memsnap_pause *pause)
{
	return (memsnap_layered *)ms_pause_file(ms_lib_pause(pause));
}

void memsnap_pause_free(memsnap_pause *pause)
{
	ms_pause_free(ms_lib_pause(pause));
}
