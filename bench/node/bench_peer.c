/*
 * bench_peer.c - peer.resume_vs_local.<backend>: a cross-node resume through
 * the peer (node B resumes a build node A paused and has not uploaded: header,
 * snapfile and every page from A's peer server over loopback TCP) vs a resume
 * of the same build on the origin node A (warm, from A's own template), same
 * guest, same run. The guest (pattern, 128 MiB) verifies all its memory on
 * each resume. Two memsnapd nodes in this process (node.h, driven through the
 * API parser), each with its own cache dir, one file store; A's uploads are
 * held for the whole run so every read of B goes to A. Median of 5 builds
 * (each one fresh on B: cold; warm on A). Goal (issue 17): <= 1.3.
 * MEMSNAP_BENCH_BACKEND=kvm|proc runs that backend only. The peer link is TLS (certificates of one
 * fleet CA, made by scripts/peer-certs.sh), as a fleet runs it; peer.resume_tls_vs_plain.<backend>
 * is the same cross-node resume over TLS vs over plain HTTP (peer_tls = off).
 * For a look inside: MEMSNAP_BENCH_PEER_LINK=tls|plain runs that link only (reported as
 * peer.resume_vs_local.<backend>.<link>); MEMSNAP_BENCH_PEER_METRICS=1 prints both nodes'
 * peer and page-server metric lines after each run (requests, bytes, fault latencies);
 * PERF_CTL=FIFO writes enable/disable around each cross-node resume, for
 * `perf record --control=fifo:FIFO -D -1` (profiles of those resumes only).
 */
#include "bench.h"
#include "node/api.h"
#include "node/node.h"
#include "sandbox/sandbox.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MEM_MIB 128
#define BUILDS	5

/* One API call; the answer's JSON (caller frees), or exit on any failure. */
static cJSON *call(struct ms_node *node, const char *method, const char *path, const char *body,
		   unsigned want)
{
	struct ms_api_request req;
	struct ms_api_error err;
	if (ms_api_parse(method, path, body, body ? strlen(body) : 0, &req, &err)) {
		fprintf(stderr, "bench_peer: %s %s: %s\n", method, path, err.message);
		exit(1);
	}
	struct ms_node_response resp = {0};
	ms_node_handle(node, &req, &resp);
	if (resp.status != want) {
		fprintf(stderr, "bench_peer: %s %s: %u %s\n", method, path, resp.status,
			resp.body ? resp.body : "");
		exit(1);
	}
	cJSON *o = cJSON_Parse(resp.body);
	free(resp.body);
	if (!o)
		exit(1);
	return o;
}

static const char *str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsString(v))
		exit(1);
	return v->valuestring;
}

static double num(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsNumber(v))
		exit(1);
	return v->valuedouble;
}

/* Resumes build on node with a verify of seed; the create time (ms). */
static double resume(struct ms_node *node, const char *build, unsigned seed, const char *want)
{
	char body[256];
	snprintf(body, sizeof(body),
		 "{\"build_id\":\"%s\",\"exec\":{\"command\":\"verify\",\"arg0\":%u,\"arg1\":1}}",
		 build, seed);
	/* the guest's memory and a cold resume's cache file, from pages the host backs */
	ms_bench_warm_memory(((size_t)2 * MEM_MIB + 32) << 20);
	cJSON *o = call(node, "POST", "/v1/sandboxes", body, 201);
	const cJSON *report = cJSON_GetObjectItemCaseSensitive(o, "report");
	if (num(report, "result0") != 0 || strcmp(str(o, "start_type"), want) != 0) {
		fprintf(stderr, "bench_peer: resume of %s: %s, %g mismatched pages\n", build,
			str(o, "start_type"), num(report, "result0"));
		exit(1);
	}
	double ms = num(o, "create_ms");
	char path[128];
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", str(o, "id"));
	cJSON_Delete(o);
	cJSON_Delete(call(node, "DELETE", path, NULL, 200));
	return ms;
}

/* PERF_CTL=fifo: perf record --control=fifo:... -D -1 records the cross-node resumes only */
static void perf_ctl(const char *cmd)
{
	const char *fifo = getenv("PERF_CTL");
	FILE *f = fifo ? fopen(fifo, "w") : NULL;
	if (f) {
		fprintf(f, "%s\n", cmd);
		fclose(f);
	}
}

/* MEMSNAP_BENCH_PEER_METRICS=1: node's peer and page-server metric lines to stderr. */
static void dump_metrics(struct ms_node *node, const char *name)
{
	if (!getenv("MEMSNAP_BENCH_PEER_METRICS"))
		return;
	struct ms_api_request req;
	struct ms_api_error err;
	if (ms_api_parse("GET", "/metrics", NULL, 0, &req, &err))
		return;
	struct ms_node_response resp = {0};
	ms_node_handle(node, &req, &resp);
	for (char *line = resp.body ? strtok(resp.body, "\n") : NULL; line;
	     line = strtok(NULL, "\n"))
		if (line[0] != '#' && (strstr(line, "peer") || strstr(line, "pageserver_faults") ||
				       strstr(line, "chunk")))
			fprintf(stderr, "  %s: %s\n", name, line);
	free(resp.body);
}

static struct ms_node *node_new(const char *dir, const char *name, const char *backend,
				const char *listen, const char *hold, bool tls)
{
	struct ms_node_config cfg;
	ms_node_config_defaults(&cfg);
	snprintf(cfg.socket, sizeof(cfg.socket), "%s/%s.sock", dir, name);
	snprintf(cfg.run_dir, sizeof(cfg.run_dir), "%s/run-%s", dir, name);
	snprintf(cfg.cache_dir, sizeof(cfg.cache_dir), "%s/cache-%s", dir, name);
	snprintf(cfg.store, sizeof(cfg.store), "file://%s/store", dir);
	snprintf(cfg.backend, sizeof(cfg.backend), "%s", backend);
	snprintf(cfg.peer_listen, sizeof(cfg.peer_listen), "%s", listen);
	snprintf(cfg.peer_token, sizeof(cfg.peer_token), "bench-peer-token");
	cfg.peer_tls = tls;
	if (tls) {
		snprintf(cfg.peer_tls_ca, sizeof(cfg.peer_tls_ca), "%s/tls/fleet.pem", dir);
		snprintf(cfg.peer_tls_cert, sizeof(cfg.peer_tls_cert), "%s/tls/%s.pem", dir, name);
		snprintf(cfg.peer_tls_key, sizeof(cfg.peer_tls_key), "%s/tls/%s.key", dir, name);
	}
	if (hold)
		snprintf(cfg.test_hold_upload, sizeof(cfg.test_hold_upload), "%s", hold);
	char why[700];
	int err;
	struct ms_node *node = ms_node_new(&cfg, &err, why, sizeof(why));
	if (!node) {
		fprintf(stderr, "bench_peer: node %s: %s\n", name, why);
		exit(1);
	}
	return node;
}

/* Medians of BUILDS cross-node resumes (*peer_ms) and origin resumes (*local_ms); each
 * build's own peer / origin ratio in ratios[] (BUILDS). */
static int run(const char *backend, bool tls, double *peer_ms, double *local_ms, double *ratios)
{
	char dir[] = "/tmp/memsnap-bench-peer.XXXXXX", hold[64], cmd[512];
	if (!mkdtemp(dir))
		return 1;
	snprintf(hold, sizeof(hold), "%s/release", dir);
	snprintf(cmd, sizeof(cmd),
		 "sh %s/scripts/peer-certs.sh %s/tls fleet a:127.0.0.1 b:127.0.0.2", MS_SOURCE_ROOT,
		 dir);
	if (tls && system(cmd) != 0) {
		fprintf(stderr, "bench_peer: scripts/peer-certs.sh (openssl) failed\n");
		return 1;
	}
	struct ms_node *a = node_new(dir, "a", backend, "127.0.0.1:0", hold, tls);
	struct ms_node *b = node_new(dir, "b", backend, "127.0.0.2:0", NULL, tls);
	double local[BUILDS], peer[BUILDS];
	for (unsigned i = 0; i < BUILDS; i++) {
		char body[256], path[128];
		unsigned seed = 500 + i;
		snprintf(body, sizeof(body),
			 "{\"guest\":\"pattern\",\"mem_mib\":%d,\"exec\":{\"command\":\"fill\","
			 "\"arg0\":%u,\"arg1\":1}}",
			 MEM_MIB, seed);
		cJSON *o = call(a, "POST", "/v1/sandboxes", body, 201);
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/pause", str(o, "id"));
		cJSON_Delete(o);
		o = call(a, "POST", path, NULL, 200);
		char build[64];
		snprintf(build, sizeof(build), "%s", str(o, "build_id"));
		cJSON_Delete(o);
		/* the origin first: its warm resume also waits out the compare */
		local[i] = resume(a, build, seed, "warm");
		perf_ctl("enable");
		peer[i] = resume(b, build, seed, "cold");
		perf_ctl("disable");
		fprintf(stderr,
			"peer.resume_vs_local.%s (%s): build %u: %.1f ms through the peer, "
			"%.1f ms on the origin\n",
			backend, tls ? "TLS" : "plain HTTP", i + 1, peer[i], local[i]);
		ratios[i] = peer[i] / local[i];
	}
	*peer_ms = ms_bench_median(peer, BUILDS);
	*local_ms = ms_bench_median(local, BUILDS);
	dump_metrics(a, "a");
	dump_metrics(b, "b");
	FILE *f = fopen(hold, "w"); /* the uploads go; the nodes stop */
	if (f)
		fclose(f);
	if (ms_node_shutdown(a) || ms_node_shutdown(b))
		return 1;
	ms_node_free(a);
	ms_node_free(b);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}

int main(void)
{
	ms_log_set_level(MS_LOG_WARN); /* the nodes' INFO lines would bury the table */
	const char *backends[] = {"kvm", "proc"}, *only = getenv("MEMSNAP_BENCH_BACKEND");
	for (int i = 0; i < 2; i++) {
		const struct ms_sandbox_ops *ops;
		char why[160];
		if (only && strcmp(only, backends[i]) != 0)
			continue;
		if (ms_sandbox_backend_pick(backends[i], &ops, why, sizeof(why))) {
			fprintf(stderr, "bench_peer: %s\n", why);
			continue;
		}
		char name[64];
		double peer_tls, local, peer_plain, local_plain, tls_ratios[BUILDS],
		    plain_ratios[BUILDS];
		const char *link = getenv("MEMSNAP_BENCH_PEER_LINK"); /* tls|plain: that one only */
		if (link) {
			bool tls = strcmp(link, "tls") == 0;
			double p, l, ratios[BUILDS];
			if (!tls && strcmp(link, "plain") != 0) {
				fprintf(stderr,
					"bench_peer: MEMSNAP_BENCH_PEER_LINK is tls or plain\n");
				return 1;
			}
			if (run(backends[i], tls, &p, &l, ratios))
				return 1;
			snprintf(name, sizeof(name), "peer.resume_vs_local.%s.%s", backends[i],
				 link);
			ms_bench_report_spread(name, p, "ms",
					       "resume of the same build on its origin node (warm)",
					       l, p / l, ratios, BUILDS, 1.3);
			continue;
		}
		if (run(backends[i], true, &peer_tls, &local, tls_ratios) ||
		    run(backends[i], false, &peer_plain, &local_plain, plain_ratios))
			return 1;
		snprintf(name, sizeof(name), "peer.resume_vs_local.%s", backends[i]);
		ms_bench_report_spread(name, peer_tls, "ms",
				       "resume of the same build on its origin node (warm)", local,
				       peer_tls / local, tls_ratios, BUILDS, 1.3);
		snprintf(name, sizeof(name), "peer.resume_tls_vs_plain.%s", backends[i]);
		ms_bench_report(name, peer_tls, "ms",
				"the same cross-node resume over plain HTTP (peer_tls = off)",
				peer_plain, 0);
	}
	return 0;
}
