/*
 * main.c - memsnapd: configuration, the node, the HTTP server, and a
 * graceful stop on SIGTERM/SIGINT:
 *
 *   start ─▶ clean cache dir ─▶ listen ─▶ serve ─SIGTERM─▶ stop accepting
 *        ─▶ stop sandboxes ─▶ wait for uploads (shutdown_timeout) ─▶ exit
 *
 * Under systemd (Type=notify) it says READY=1 once the API listens and
 * STOPPING=1 when a signal starts the stop; without NOTIFY_SOCKET both are
 * no-ops.
 *
 * Exit status: 0 after a clean stop; 1 when uploads did not finish in time
 * (their builds never reach the store: nothing incomplete is published);
 * 2 for a configuration error.
 */
#include "node/config.h"
#include "node/http.h"
#include "node/node.h"
#include "util/log.h"

#include <signal.h>
#include <systemd/sd-daemon.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct ms_node_config cfg;
	int rc = ms_node_config_load(&cfg, argc, argv);
	if (rc)
		return rc == 1 ? 0 : 2;
	enum ms_log_level level;
	if (!ms_log_parse_level(cfg.log_level, &level))
		ms_log_set_level(level);
	/* signals: handled by sigwait here; every thread inherits the mask */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);
	char why[700];
	int err;
	struct ms_node *node = ms_node_new(&cfg, &err, why, sizeof(why));
	if (!node) {
		fprintf(stderr, "memsnapd: %s\n", why);
		return 1;
	}
	struct ms_http *http = ms_http_start(node, &cfg, why, sizeof(why));
	if (!http) {
		fprintf(stderr, "memsnapd: %s\n", why);
		ms_node_shutdown(node);
		ms_node_free(node);
		return 1;
	}
	fprintf(stderr, "memsnapd: listening on unix:%s", cfg.socket);
	if (cfg.tcp_listen[0])
		fprintf(stderr, " and tcp 127.0.0.1:%u", ms_http_tcp_port(http));
	if (ms_node_peer_address(node))
		fprintf(stderr, ", peers on %s", ms_node_peer_address(node));
	fprintf(stderr, " (backend %s, store %s)\n", ms_node_backend(node), cfg.store);
	sd_notifyf(0, "READY=1\nSTATUS=listening on unix:%s (backend %s)\nMAINPID=%ld", cfg.socket,
		   ms_node_backend(node), (long)getpid());
	int sig = 0;
	sigwait(&stop, &sig);
	ms_http_quiesce(http);
	sd_notify(0, "STOPPING=1\nSTATUS=stopping: uploads finish");
	fprintf(stderr, "memsnapd: %s: stopping (no new connections; uploads finish)\n",
		strsignal(sig));
	unsigned unfinished = ms_node_shutdown(node);
	ms_http_stop(http);
	if (unfinished) {
		fprintf(stderr, "memsnapd: %u uploads did not finish; exiting anyway\n",
			unfinished);
		return 1; /* the pipelines still run: no teardown under them */
	}
	ms_node_free(node);
	fprintf(stderr, "memsnapd: stopped\n");
	return 0;
}
