/* sandbox.c - backend choice, the interface's dispatch, and the proc backend's adapter. */
#include "sandbox/sandbox.h"
#include "sandbox/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	struct ms_proc_paused paused;
	int err = ms_proc_pause(ms_psb(sb), &paused);
	if (err)
		return err;
	*out = (struct ms_sandbox_paused){.memfd = paused.memfd,
					  .written = paused.written,
					  .snapfile = paused.snapfile,
					  .snapfile_len = paused.snapfile_len};
	return 0;
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

bool ms_sandbox_kvm_available(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

int ms_sandbox_backend_pick(const char *name, const struct ms_sandbox_ops **ops, char *why,
			    size_t why_len)
{
	bool kvm_opens = ms_sandbox_kvm_available();
	char scratch[160];
	if (!why) {
		why = scratch;
		why_len = sizeof(scratch);
	}
	if (strcmp(name, "kvm") == 0) {
		if (!kvm_opens) {
			snprintf(why, why_len, "backend kvm: /dev/kvm does not open here (%s)",
				 strerror(errno));
			return -ENODEV;
		}
		snprintf(why, why_len, "backend kvm (asked for)");
		*ops = ms_sandbox_kvm_ops();
		return 0;
	}
	if (strcmp(name, "proc") == 0) {
		snprintf(why, why_len, "backend proc (asked for)");
	} else if (strcmp(name, "auto") == 0) {
		if (kvm_opens) {
			snprintf(why, why_len, "backend kvm (auto: /dev/kvm opens here)");
			*ops = ms_sandbox_kvm_ops();
			return 0;
		}
		snprintf(why, why_len, "backend proc (auto: /dev/kvm does not open here)");
	} else {
		snprintf(why, why_len, "unknown backend '%s' (auto, kvm or proc)", name);
		return -EINVAL;
	}
	*ops = &ms_proc_sandbox_ops;
	return 0;
}

int ms_sandbox_create(const struct ms_sandbox_ops *ops, const struct ms_sandbox_spec *spec,
		      struct ms_sandbox **out)
{
	return ops->create(spec, out);
}

int ms_sandbox_run(struct ms_sandbox *sb)
{
	return sb->ops->run(sb);
}

int ms_sandbox_wait_report(struct ms_sandbox *sb, int64_t timeout_ns)
{
	return sb->ops->wait_report(sb, timeout_ns);
}

uint8_t *ms_sandbox_ram(struct ms_sandbox *sb)
{
	return sb->ops->ram(sb);
}

int ms_sandbox_written(struct ms_sandbox *sb, bool reset, struct ms_pageset **out)
{
	return sb->ops->written(sb, reset, out);
}

int ms_sandbox_pause(struct ms_sandbox *sb, struct ms_sandbox_paused *out)
{
	return sb->ops->pause(sb, out);
}

const char *ms_sandbox_death_cause(struct ms_sandbox *sb)
{
	return sb->ops->death_cause(sb);
}

const char *ms_sandbox_backend_name(struct ms_sandbox *sb)
{
	return sb->ops->name;
}

void ms_sandbox_destroy(struct ms_sandbox *sb)
{
	if (sb)
		sb->ops->destroy(sb);
}

void ms_sandbox_paused_fini(struct ms_sandbox_paused *paused)
{
	if (paused->memfd >= 0)
		close(paused->memfd);
	ms_pageset_free(paused->written);
	free(paused->snapfile);
	paused->memfd = -1;
	paused->written = NULL;
	paused->snapfile = NULL;
}
