/*
 * bench_peer.c - peer.resume_vs_local.<backend>: a cross-node resume through
 * the peer (node B resumes a build node A paused and has not uploaded: header,
 * snapfile and every page from A's peer server over loopback TCP) vs a resume
 * of the same build on the origin node A (warm, from A's own template), same
 * guest, same run. The guest (pattern, 128 MiB) verifies all its memory on
 * each resume. Two memsnapd nodes in this process (node.h, driven through the
 * API parser), each with its own cache dir, one file store; A's uploads are
 * held for the whole run so every read of B goes to A. Median of 3 builds
 * (each one fresh on B: cold; warm on A). Reported, no goal: the issue asks
 * for the number.
 */
#include "bench.h"
#include "node/api.h"
#include "node/node.h"
#include "sandbox/sandbox.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MEM_MIB 128
#define BUILDS	3

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

static struct ms_node *node_new(const char *dir, const char *name, const char *backend,
				const char *listen, const char *hold)
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

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int run(const char *backend)
{
	char dir[] = "/tmp/memsnap-bench-peer.XXXXXX", hold[64], cmd[128];
	if (!mkdtemp(dir))
		return 1;
	snprintf(hold, sizeof(hold), "%s/release", dir);
	struct ms_node *a = node_new(dir, "a", backend, "127.0.0.1:0", hold);
	struct ms_node *b = node_new(dir, "b", backend, "127.0.0.2:0", NULL);
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
		peer[i] = resume(b, build, seed, "cold");
		fprintf(stderr,
			"peer.resume_vs_local.%s: build %u: %.1f ms through the peer, "
			"%.1f ms on the origin\n",
			backend, i + 1, peer[i], local[i]);
	}
	qsort(local, BUILDS, sizeof(double), by_value);
	qsort(peer, BUILDS, sizeof(double), by_value);
	char name[64];
	snprintf(name, sizeof(name), "peer.resume_vs_local.%s", backend);
	ms_bench_report(name, peer[BUILDS / 2], "ms",
			"resume of the same build on its origin node (warm)", local[BUILDS / 2], 0);
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
	const char *backends[] = {"kvm", "proc"};
	for (int i = 0; i < 2; i++) {
		const struct ms_sandbox_ops *ops;
		char why[160];
		if (ms_sandbox_backend_pick(backends[i], &ops, why, sizeof(why))) {
			fprintf(stderr, "bench_peer: %s\n", why);
			continue;
		}
		if (run(backends[i]))
			return 1;
	}
	return 0;
}
