/*
 * sandbox.c - the sandbox interface (sandbox.h): the backend table, choosing a
 * backend by name, and the dispatch through ms_sandbox_ops. The backends
 * themselves are proc_backend.c and kvm.c.
 */
#include "sandbox/sandbox.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Every backend, in the order "auto" prefers them. available NULL: runs on
 * every Linux machine; else it says whether it runs here, with the reason
 * either way (yes / no), for the line ms_sandbox_backend_pick writes.
 */
static const struct ms_sandbox_backend {
	const char *name;
	const struct ms_sandbox_ops *(*ops)(void);
	bool (*available)(void);
	const char *yes, *no;
} ms_sandbox_backends[] = {
    {"kvm", ms_sandbox_kvm_ops, ms_sandbox_kvm_available, "/dev/kvm opens here",
     "/dev/kvm does not open here"},
    {"proc", ms_sandbox_proc_ops, NULL, NULL, NULL},
};

#define MS_SANDBOX_BACKENDS (sizeof(ms_sandbox_backends) / sizeof(ms_sandbox_backends[0]))

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
	char scratch[160];
	if (!why) {
		why = scratch;
		why_len = sizeof(scratch);
	}
	bool automatic = strcmp(name, "auto") == 0;
	const char *passed_over = NULL; /* auto: why the backend before the pick does not run */
	for (size_t i = 0; i < MS_SANDBOX_BACKENDS; i++) {
		const struct ms_sandbox_backend *b = &ms_sandbox_backends[i];
		if (!automatic && strcmp(name, b->name) != 0)
			continue;
		bool runs = !b->available || b->available();
		if (!runs && !automatic) {
			snprintf(why, why_len, "backend %s: %s (%s)", b->name, b->no,
				 strerror(errno));
			return -ENODEV;
		}
		if (!runs) {
			passed_over = b->no;
			continue;
		}
		if (automatic)
			snprintf(why, why_len, "backend %s (auto: %s)", b->name,
				 b->available  ? b->yes
				 : passed_over ? passed_over
					       : "the default");
		else
			snprintf(why, why_len, "backend %s (asked for)", b->name);
		*ops = b->ops();
		return 0;
	}
	snprintf(why, why_len, "unknown backend '%s' (auto, kvm or proc)", name);
	return -EINVAL;
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

/* How long one slice of a cancellable wait is: the latency of a cancel. */
#define MS_SANDBOX_CANCEL_SLICE_NS (5 * 1000 * 1000)

int ms_sandbox_wait_report_or(struct ms_sandbox *sb, int64_t timeout_ns, int cancel_fd)
{
	if (cancel_fd < 0)
		return ms_sandbox_wait_report(sb, timeout_ns);
	/*
	 * The backends' waits end on a report, a death or a timeout only (kvm's on a
	 * condition variable, proc's on waitpid): a wait in slices, with a look at
	 * the fd between them, ends on the cancel too without a third wake-up path
	 * in every backend. A slice that times out changes nothing in a backend.
	 */
	for (int64_t left = timeout_ns;;) {
		int64_t slice =
		    left < MS_SANDBOX_CANCEL_SLICE_NS ? left : MS_SANDBOX_CANCEL_SLICE_NS;
		int err = sb->ops->wait_report(sb, slice);
		if (err != -ETIMEDOUT)
			return err;
		struct pollfd pfd = {.fd = cancel_fd, .events = POLLIN};
		if (poll(&pfd, 1, 0) > 0)
			return MS_ECANCELED;
		if ((left -= slice) <= 0)
			return -ETIMEDOUT;
	}
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
	ms_sandbox_paused_init(paused);
}

void ms_sandbox_paused_init(struct ms_sandbox_paused *paused)
{
	*paused = (struct ms_sandbox_paused){.memfd = -1};
}

int ms_sandbox_paused_end(struct ms_sandbox_paused *paused, int memfd, int err)
{
	if (!err && (paused->memfd = fcntl(memfd, F_DUPFD_CLOEXEC, 0)) < 0)
		err = -errno;
	if (err)
		ms_sandbox_paused_fini(paused);
	return err;
}
