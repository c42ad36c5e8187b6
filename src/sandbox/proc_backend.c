/*
 * proc_backend.c - the proc backend behind the sandbox interface (sandbox.h):
 * an adapter from ms_sandbox_ops to the process sandbox of proc.h, as kvm.c is
 * the kvm backend's.
 */
#include "sandbox/sandbox.h"
#include "sandbox/proc.h"

#include <errno.h>
#include <stdlib.h>

struct ms_proc_sandbox {
	struct ms_sandbox base;
	struct ms_proc *proc;
};

static struct ms_proc *ms_psb(struct ms_sandbox *sb)
{
	return ((struct ms_proc_sandbox *)sb)->proc;
}

static const struct ms_sandbox_ops ms_proc_sandbox_ops;

static int ms_psb_create(const struct ms_sandbox_spec *spec, struct ms_sandbox **out)
{
	struct ms_proc_sandbox *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	int err;
	if (spec->memory == MS_SANDBOX_FRESH) {
		struct ms_proc_config cfg = {.guest = spec->guest, .mem_size = spec->mem_size};
		err = ms_proc_start(&cfg, &sb->proc);
	} else {
		struct ms_proc_restore r = {
		    .mem_size = spec->mem_size,
		    .snapfile = spec->snapfile,
		    .snapfile_len = spec->snapfile_len,
		    .eager_fd = spec->memory == MS_SANDBOX_EAGER ? spec->eager_fd : -1,
		    .lazy_socket = spec->memory == MS_SANDBOX_LAZY ? spec->lazy_socket : NULL,
		};
		err = (spec->memory == MS_SANDBOX_EAGER && spec->eager_fd < 0) ||
			      (spec->memory == MS_SANDBOX_LAZY && !spec->lazy_socket)
			  ? -EINVAL
			  : ms_proc_restore(&r, &sb->proc);
	}
	if (err) {
		free(sb);
		return err;
	}
	sb->base.ops = &ms_proc_sandbox_ops;
	*out = &sb->base;
	return 0;
}

static int ms_psb_run(struct ms_sandbox *sb)
{
	return ms_proc_continue(ms_psb(sb));
}

static int ms_psb_wait_report(struct ms_sandbox *sb, int64_t timeout_ns)
{
	return ms_proc_wait_report(ms_psb(sb), timeout_ns);
}

static uint8_t *ms_psb_ram(struct ms_sandbox *sb)
{
	return ms_proc_ram(ms_psb(sb));
}

static int ms_psb_pause(struct ms_sandbox *sb, struct ms_sandbox_paused *out)
{
	return ms_proc_pause(ms_psb(sb), out, NULL);
}

static int ms_psb_written(struct ms_sandbox *sb, bool reset, struct ms_pageset **out)
{
	return ms_proc_written_pages(ms_psb(sb), reset, out);
}

static const char *ms_psb_death_cause(struct ms_sandbox *sb)
{
	return ms_proc_death_cause(ms_psb(sb));
}

static void ms_psb_destroy(struct ms_sandbox *sb)
{
	ms_proc_destroy(ms_psb(sb));
	free(sb);
}

static const struct ms_sandbox_ops ms_proc_sandbox_ops = {
    .name = "proc",
    .id = MS_BACKEND_PROC,
    .create = ms_psb_create,
    .run = ms_psb_run,
    .wait_report = ms_psb_wait_report,
    .ram = ms_psb_ram,
    .written = ms_psb_written,
    .pause = ms_psb_pause,
    .death_cause = ms_psb_death_cause,
    .destroy = ms_psb_destroy,
};

const struct ms_sandbox_ops *ms_sandbox_proc_ops(void)
{
	return &ms_proc_sandbox_ops;
}
