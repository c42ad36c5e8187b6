/*
 * bench_guest.c - the fault-rate benches' shared guest and page source (bench_guest.h).
 */
#include "bench_guest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int ms_bench_memsrc_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	memcpy(dst, ((const struct ms_bench_memsrc *)ctx)->base + off, len);
	return 0;
}

/* Every page is in memory: LOCAL, served inline. */
static void ms_bench_memsrc_classify(void *ctx, uint64_t off, uint64_t page_size, size_t npages,
				     uint8_t *kinds)
{
	memset(kinds, MS_PAGE_LOCAL, npages);
}

static uint64_t ms_bench_memsrc_size(void *ctx)
{
	return ((const struct ms_bench_memsrc *)ctx)->size;
}

/* A view of the memory, as a local diff file's mapping gives one (filesource.c); no hold. */
static int ms_bench_memsrc_slice(void *ctx, uint64_t off, size_t len, const void **ptr, void **hold)
{
	(void)len;
	*ptr = ((const struct ms_bench_memsrc *)ctx)->base + off;
	*hold = NULL;
	return 0;
}

const struct ms_page_source_ops ms_bench_memsrc_ops = {
    .read = ms_bench_memsrc_read,
    .classify = ms_bench_memsrc_classify,
    .size = ms_bench_memsrc_size,
    .slice = ms_bench_memsrc_slice,
};

void ms_bench_die(const char *who, const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", who, what, strerror(err < 0 ? -err : err));
	exit(1);
}

void ms_bench_guest_step(const char *who, struct ms_sandbox *sb, uint64_t cmd, uint64_t a0,
			 uint64_t a1)
{
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb);
	box[0] = cmd, box[1] = a0, box[2] = a1;
	int err = ms_sandbox_run(sb);
	if (!err)
		err = ms_sandbox_wait_report(sb, 120LL * 1000000000LL);
	if (err) {
		fprintf(stderr, "%s: guest: %s\n", who, ms_sandbox_death_cause(sb));
		ms_bench_die(who, "run", err);
	}
}

const uint8_t *ms_bench_guest_snapshot(const char *who, const struct ms_sandbox_ops *ops,
				       uint64_t mem, struct ms_sandbox_paused *paused)
{
	struct ms_sandbox_spec fresh = {
	    .guest = MS_GUEST_PATTERN, .mem_size = mem, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *sb;
	int err = ms_sandbox_create(ops, &fresh, &sb);
	if (err)
		ms_bench_die(who, "start", err);
	ms_bench_guest_step(who, sb, MS_PATTERN_FILL, 42, 1);
	((uint64_t *)ms_sandbox_ram(sb))[0] = 0; /* after a resume: report first */
	if ((err = ms_sandbox_pause(sb, paused)))
		ms_bench_die(who, "pause", err);
	ms_sandbox_destroy(sb);
	const uint8_t *source =
	    mmap(NULL, mem, PROT_READ, MAP_SHARED | MAP_POPULATE, paused->memfd, 0);
	if (source == MAP_FAILED)
		ms_bench_die(who, "mmap", errno);
	return source;
}
