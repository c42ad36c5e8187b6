/*
 * cmd_vmctl.c - a running `memsnap vm run --control SOCKET` and its clients,
 * `memsnap vm pause|resume|snapshot|status --control SOCKET`.
 *
 * Protocol (a unix stream socket, one request per connection):
 *   request  one line: "pause" | "resume" | "snapshot" | "status", then optionally
 *            " backend=NAME" (refused when the VM runs on another backend)
 *   reply    one line: "ok TEXT" or "error TEXT"; the connection then closes.
 * pause stops the guest (vCPUs parked / process stopped) and keeps it; resume
 * lets it run again; snapshot pauses it (if running) and ends the control loop:
 * `vm run` then saves or publishes the snapshot as its --out/--store say and
 * replies once that is done. The snapshot's written-page set is the union over
 * every pause since the guest started, so pausing and resuming loses nothing.
 */
#include "cli/cli.h"
#include "cli/cmd_vmctl.h"
#include "cli/commands.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int ms_vmctl_address(const char *path, struct sockaddr_un *addr)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	memcpy(addr->sun_path, path, strlen(path) + 1);
	return 0;
}

static void ms_vmctl_reply(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ms_vmctl_reply(int fd, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n)
		fprintf(stderr, "memsnap: control: the client left before the reply\n");
}

void ms_vmctl_progress(int client, const char *line)
{
	if (client >= 0)
		ms_vmctl_reply(client, "%s", line);
}

void ms_vmctl_finish(int client, int rc, const char *result)
{
	if (client < 0)
		return;
	ms_vmctl_reply(client, "%s %s", rc ? "error" : "ok", result);
	close(client);
}

/* Reads one request line (2 s at most). */
static int ms_vmctl_read_line(int fd, char *buf, size_t len)
{
	size_t used = 0;
	while (used + 1 < len) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 2000) <= 0)
			return -ETIMEDOUT;
		ssize_t n = recv(fd, buf + used, len - 1 - used, 0);
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		used += (size_t)n;
		buf[used] = '\0';
		char *nl = strchr(buf, '\n');
		if (nl) {
			*nl = '\0';
			return 0;
		}
	}
	return -E2BIG;
}

struct ms_vmctl {
	struct ms_sandbox *sb;
	enum ms_guest_kind kind;
	struct ms_sandbox_paused *last; /* the newest pause's outputs */
	struct ms_pageset *written;	/* the union over every pause */
	bool paused;
	bool running; /* counter only: continued and counting */
	unsigned pauses;
};

static int ms_vmctl_pause(struct ms_vmctl *c, double *ms)
{
	struct ms_sandbox_paused now;
	int64_t t0 = ms_clock_now_ns();
	int err = ms_sandbox_pause(c->sb, &now);
	*ms = (double)(ms_clock_now_ns() - t0) / 1e6;
	if (err)
		return err;
	ms_pageset_union(c->written, now.written);
	ms_sandbox_paused_fini(c->last);
	*c->last = now;
	c->paused = true;
	c->running = false;
	c->pauses++;
	return 0;
}

static int ms_vmctl_resume(struct ms_vmctl *c)
{
	int err = ms_sandbox_run(c->sb);
	if (err)
		return err;
	c->paused = false;
	if (c->kind == MS_GUEST_COUNTER) {
		c->running = true; /* it counts; its reports are taken in the loop */
		return 0;
	}
	/* the other guests report at once (command 0) and wait there */
	return ms_sandbox_wait_report(c->sb, 10 * MS_NSEC_PER_SEC);
}

/* Handles one request; 1 when it was "snapshot" (the client is kept for the reply). */
static int ms_vmctl_handle(struct ms_vmctl *c, int client, char *line)
{
	const char *backend = ms_sandbox_backend_name(c->sb);
	char *want = strstr(line, " backend=");
	if (want) {
		*want = '\0';
		want += strlen(" backend=");
		if (strcmp(want, "auto") != 0 && strcmp(want, backend) != 0) {
			ms_vmctl_reply(client, "error this VM runs on the %s backend, not %s",
				       backend, want);
			return 0;
		}
	}
	double ms = 0;
	int err = 0;
	if (strcmp(line, "status") == 0) {
		ms_vmctl_reply(client, "ok backend %s, %s, %u pause(s) so far", backend,
			       c->paused ? "paused" : "running", c->pauses);
		return 0;
	}
	if (strcmp(line, "pause") == 0) {
		if (c->paused) {
			ms_vmctl_reply(client, "ok already paused");
			return 0;
		}
		if ((err = ms_vmctl_pause(c, &ms)) == 0) {
			ms_vmctl_reply(client,
				       "ok paused in %.2f ms (%s): %llu pages written since it "
				       "started",
				       ms, backend,
				       (unsigned long long)ms_pageset_count(c->written));
			printf("control: paused in %.2f ms\n", ms);
			return 0;
		}
	} else if (strcmp(line, "resume") == 0) {
		if (!c->paused) {
			ms_vmctl_reply(client, "ok already running");
			return 0;
		}
		if ((err = ms_vmctl_resume(c)) == 0) {
			ms_vmctl_reply(client, "ok resumed (%s)", backend);
			printf("control: resumed\n");
			return 0;
		}
	} else if (strcmp(line, "snapshot") == 0) {
		if (!c->paused && (err = ms_vmctl_pause(c, &ms)))
			goto failed;
		printf("control: snapshot requested; paused\n");
		return 1;
	} else {
		ms_vmctl_reply(client,
			       "error unknown request '%.40s' (pause, resume, snapshot, "
			       "status)",
			       line);
		return 0;
	}
failed:
	ms_vmctl_reply(client, "error %s%s%s", ms_strerror(err), err == -ECHILD ? ": " : "",
		       err == -ECHILD ? ms_sandbox_death_cause(c->sb) : "");
	return 0;
}

int ms_vmctl_serve(const char *path, struct ms_sandbox *sb, enum ms_guest_kind kind,
		   struct ms_sandbox_paused *paused, int *client_out)
{
	struct sockaddr_un addr;
	struct stat st;
	int err = ms_vmctl_address(path, &addr);
	if (err)
		return err;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST; /* never replace a file that is not a socket */
		unlink(path);
	}
	int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listener < 0)
		return -errno;
	if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) || listen(listener, 4)) {
		err = -errno;
		close(listener);
		return err;
	}
	struct ms_vmctl c = {.sb = sb, .kind = kind, .last = paused, .written = ms_pageset_new()};
	*paused = (struct ms_sandbox_paused){.memfd = -1};
	if (!c.written) {
		err = -ENOMEM;
		goto out;
	}
	if (kind == MS_GUEST_COUNTER) {
		if ((err = ms_sandbox_run(sb)))
			goto out;
		c.running = true;
	}
	printf("control: the guest runs; memsnap vm pause|resume|snapshot|status --control %s\n",
	       path);
	fflush(stdout);
	for (;;) {
		if (c.running) { /* counter: take its report, let it count on */
			err = ms_sandbox_wait_report(sb, 0);
			if (err == 0)
				err = ms_sandbox_run(sb);
			if (err && err != -ETIMEDOUT) {
				fprintf(stderr, "memsnap: the guest died: %s\n",
					ms_sandbox_death_cause(sb));
				goto out;
			}
		}
		struct pollfd pfd = {.fd = listener, .events = POLLIN};
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
		if (client < 0)
			continue;
		char line[128];
		if (ms_vmctl_read_line(client, line, sizeof(line))) {
			close(client);
			continue;
		}
		if (ms_vmctl_handle(&c, client, line) == 1) {
			*client_out = client;
			ms_pageset_free(paused->written);
			paused->written = c.written; /* every pause's pages */
			c.written = NULL;
			err = 0;
			break;
		}
		close(client);
	}
out:
	ms_pageset_free(c.written);
	close(listener);
	unlink(path);
	return err;
}

static const char *const vm_ctl_usage =
    "usage: memsnap vm pause|resume|snapshot|status --control SOCKET [--backend NAME]\n\n"
    "Talks to a guest started with `memsnap vm run --control SOCKET`:\n"
    "  pause     stops the guest and keeps it (its written pages are kept too)\n"
    "  resume    lets it run again\n"
    "  snapshot  pauses it and has `vm run` save or publish the snapshot (its --out or\n"
    "            --store); waits until that is done and prints where it went\n"
    "  status    the backend, running or paused, pauses so far\n"
    "  --backend NAME  refuse when the VM runs on another backend (auto: any)\n"
    "Exit: 0 ok, 1 the request failed, 2 bad usage.\n";

static int ms_vmctl_client(int argc, char **argv, const char *request)
{
	static const struct option opts[] = {
	    {"control", required_argument, NULL, 'c'},
	    {"backend", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = NULL, *backend = "auto";
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (opt == 'c')
			path = optarg;
		else if (opt == 'b')
			backend = optarg;
		else if (opt == 'h') {
			fputs(vm_ctl_usage, stdout);
			return 0;
		} else {
			fputs(vm_ctl_usage, stderr);
			return 2;
		}
	}
	if (!path || optind != argc) {
		fputs(vm_ctl_usage, stderr);
		return 2;
	}
	struct sockaddr_un addr;
	int err = ms_vmctl_address(path, &addr);
	int fd = err ? -1 : socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (!err && fd < 0)
		err = -errno;
	if (!err && connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
		err = -errno;
	if (err) {
		fprintf(stderr, "memsnap: no `memsnap vm run --control` at %s: %s\n", path,
			ms_strerror(err));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	char line[160];
	int n = snprintf(line, sizeof(line), "%s backend=%s\n", request, backend);
	if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return ms_cli_fail("control request", -EPIPE);
	}
	char reply[8192];
	size_t used = 0;
	ssize_t got;
	while (used + 1 < sizeof(reply) &&
	       (got = recv(fd, reply + used, sizeof(reply) - 1 - used, 0)) > 0)
		used += (size_t)got;
	reply[used] = '\0';
	close(fd);
	if (used == 0) {
		fprintf(stderr, "memsnap: the VM closed the connection without a reply\n");
		return 1;
	}
	/* progress lines, then the last one: "ok TEXT" or "error TEXT" */
	char *last = reply;
	for (char *nl; (nl = strchr(last, '\n')) && nl[1]; last = nl + 1) {
		fwrite(last, 1, (size_t)(nl + 1 - last), stdout);
	}
	bool ok = strncmp(last, "ok ", 3) == 0;
	fputs(ok ? last + 3 : last, ok ? stdout : stderr);
	return ok ? 0 : 1;
}

int ms_cli_vm_pause(int argc, char **argv)
{
	return ms_vmctl_client(argc, argv, "pause");
}

int ms_cli_vm_resume(int argc, char **argv)
{
	return ms_vmctl_client(argc, argv, "resume");
}

int ms_cli_vm_snapshot(int argc, char **argv)
{
	return ms_vmctl_client(argc, argv, "snapshot");
}

int ms_cli_vm_status(int argc, char **argv)
{
	return ms_vmctl_client(argc, argv, "status");
}
