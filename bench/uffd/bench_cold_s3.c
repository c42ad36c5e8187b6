/*
 * bench_cold_s3.c - pageserver.cold_s3_mib_s: MiB/s of a full touch of a
 * 64 MiB image by a Firecracker-like child, served cold by the page server
 * from the real S3 server (layered file -> diff store -> chunked fetch), vs
 * plain sequential 4 MiB ranged GETs of the same object in the same run.
 * Needs MEMSNAP_S3_ENDPOINT (scripts/run-bench.sh starts the server).
 */
#include "bench.h"
#include "uffd_test_util.h"
#include "build/layered.h"
#include "build/storage.h"
#include "header/serialize.h"
#include "storage/s3.h"
#include "uffd/filesource.h"
#include "util/clock.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIZE (64ull << 20)

static int fail(const char *what, int err)
{
	fprintf(stderr, "bench_cold_s3: %s: %s\n", what, ms_strerror(err));
	return 1;
}

int main(void)
{
	const char *endpoint = getenv("MEMSNAP_S3_ENDPOINT");
	if (!endpoint) {
		fprintf(stderr, "bench_cold_s3: MEMSNAP_S3_ENDPOINT not set; skipped\n");
		return 0;
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "bench-%d", (int)getpid());
	struct ms_s3_config cfg = {.endpoint = endpoint, .bucket = "memsnap-bench", .prefix = prefix,
				   .access_key = getenv("MEMSNAP_S3_ACCESS_KEY"),
				   .secret_key = getenv("MEMSNAP_S3_SECRET_KEY")};
	int err;
	struct ms_store *store = ms_store_s3_new(&cfg, &err);
	if (!store || (err = ms_store_s3_create_bucket(store)))
		return fail("s3 store", err);
	uint8_t *image = malloc(SIZE), *buf = malloc(4 << 20);
	uint64_t x = 7;
	for (size_t i = 0; i < SIZE; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(image + i, &x, 8);
	}
	ms_uuid id;
	ms_uuid_generate(&id);
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), &id, MS_ARTIFACT_MEMFILE, MS_COMPRESS_NONE);
	if ((err = ms_store_put_buf(store, key, image, SIZE, NULL)))
		return fail("put", err);
	struct ms_header *h = ms_header_new_base(&id, MS_HEADER_V4, 4096, SIZE, true);
	struct ms_build_data self = {.build_id = id, .size = SIZE};
	ms_header_set_build(h, &self);
	/* baseline: sequential 4 MiB ranged GETs of the same bytes (best of 2) */
	double best_get = 1e9;
	for (int r = 0; r < 2; r++) {
		double t0 = ms_bench_now();
		for (uint64_t off = 0; off < SIZE; off += 4 << 20) {
			size_t got;
			if ((err = ms_store_read_range(store, key, off, buf, 4 << 20, &got)))
				return fail("get", err);
		}
		double t = ms_bench_now() - t0;
		best_get = t < best_get ? t : best_get;
	}
	/* the page server, cold each round (a fresh diff store and cache) */
	double best_touch = 1e9;
	for (int r = 0; r < 2; r++) {
		char dir[] = "/tmp/memsnap-bench-cold.XXXXXX";
		if (!mkdtemp(dir))
			return 1;
		struct ms_diffstore_config dcfg = {.cache_dir = dir};
		struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
		struct ms_build_storage bs = {.store = store, .diffs = diffs, .cache_dir = dir,
					      .data = MS_ARTIFACT_MEMFILE};
		struct ms_layered *file =
			ms_layered_new(ms_header_copy(h), ms_build_storage_resolve, &bs);
		char sock[128];
		snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
		struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = 65536};
		struct ms_pageserver *srv =
			ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts);
		struct fc_child_cfg ccfg = {.sock_path = sock, .size = SIZE, .page_size = 4096,
					    .regions = 1, .wp = true, .source = image};
		struct fc_child child;
		if (!srv || fc_child_start(&ccfg, &child))
			return fail("page server", -EIO);
		struct ms_uffd_session *s;
		if (ms_pageserver_next_session(srv, 10 * MS_NSEC_PER_SEC, &s))
			return fail("session", -ETIMEDOUT);
		double t0 = ms_bench_now();
		int64_t bad = fc_child_cmd(&child, FC_READ_CHECK, 0, SIZE, 0, 120000);
		double t = ms_bench_now() - t0;
		if (bad != 0)
			return fail("touch: pages differ", -EIO);
		best_touch = t < best_touch ? t : best_touch;
		fc_child_exit(&child);
		ms_uffd_session_unref(s);
		ms_pageserver_free(srv);
		ms_layered_free(file);
		ms_diffstore_free(diffs);
		rmdir(dir);
	}
	double mib = SIZE / 1048576.0;
	fprintf(stderr, "pageserver.cold_s3_mib_s: touch %.0f MiB/s, ranged GET %.0f MiB/s\n",
		mib / best_touch, mib / best_get);
	ms_bench_report("pageserver.cold_s3_mib_s", mib / best_touch, "MiB/s",
			"sequential 4 MiB ranged GETs of the same object", mib / best_get, 0.5);
	ms_store_remove(store, key);
	ms_header_free(h);
	ms_store_free(store);
	free(buf);
	free(image);
	return 0;
}
