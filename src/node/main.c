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
#include "memsnap/memsnap.h"
#include "util/log.h"

#include <signal.h>
#include <systemd/sd-daemon.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MS_MOD "memsnapd"

int main(int argc, char **argv)
{
	struct ms_node_config cfg;
	int rc = ms_node_config_load(&cfg, argc, argv);
	if (rc)
		return rc == 1 ? 0 : 2;
	enum ms_log_level level;
	if (!ms_log_parse_level(cfg.log_level, &level))
		ms_log_set_level(level);
	enum ms_log_format format;
	if (!ms_log_parse_format(cfg.log_format, &format))
		ms_log_set_format(format);
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
		ms_err(MS_MOD, "%s", why);
		return 1;
	}
	struct ms_http *http = ms_http_start(node, &cfg, why, sizeof(why));
	if (!http) {
		ms_err(MS_MOD, "%s", why);
		ms_node_shutdown(node);
		ms_node_free(node);
		return 1;
	}
	char tcp[64] = "", peers[96] = "";
	if (cfg.tcp_listen[0])
		snprintf(tcp, sizeof(tcp), " and tcp 127.0.0.1:%u", ms_http_tcp_port(http));
	if (ms_node_peer_address(node))
		snprintf(peers, sizeof(peers), ", peers on %s", ms_node_peer_address(node));
	ms_log_notice(MS_MOD, "listening on unix:%s%s%s (backend %s, store %s, memsnapd %s)",
		      cfg.socket, tcp, peers, ms_node_backend(node), cfg.store, MEMSNAP_VERSION);
	sd_notifyf(0, "READY=1\nSTATUS=listening on unix:%s (backend %s)\nMAINPID=%ld", cfg.socket,
		   ms_node_backend(node), (long)getpid());
	int sig = 0;
	sigwait(&stop, &sig);
	ms_http_quiesce(http);
	sd_notify(0, "STOPPING=1\nSTATUS=stopping: uploads finish");
	ms_log_notice(MS_MOD, "%s: stopping (no new connections; uploads finish)", strsignal(sig));
	unsigned unfinished = ms_node_shutdown(node);
	ms_http_stop(http);
	if (unfinished) {
		ms_err(MS_MOD, "%u uploads did not finish; exiting anyway", unfinished);
		return 1; /* the pipelines still run: no teardown under them */
	}
	ms_node_free(node);
	ms_log_notice(MS_MOD, "stopped");
	return 0;
}
