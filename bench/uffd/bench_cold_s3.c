/*
 * bench_cold_s3.c - pageserver.cold_s3_mib_s: MiB/s of a full touch of a
 * 64 MiB image by a Firecracker-like child, served cold by the page server
 * from the real S3 server (layered file -> diff store -> chunked fetch), vs
 * plain sequential 4 MiB ranged GETs of the same object in the same run.
 * Median of 5 alternating rounds (GETs, then a cold touch), with the chunker's
 * defaults. MEMSNAP_BENCH_SWEEP=1 first prints the table the defaults were chosen
 * from: chunk size x store read size x (reads in flight per chunk, read-ahead),
 * each the median of 3 alternating rounds against the GETs.
 * Needs MEMSNAP_S3_ENDPOINT (scripts/run-bench.sh starts the server).
 *
 * pageserver.cold_fs_mib_s: the same touch from the file store, where a plain
 * object is read in place (cache/objsource.h, checked against the build's table),
 * vs the same object through the chunker (the store seen through the fault
 * wrapper, whose objects are not local files), also checked: median of 5
 * alternating rounds. Runs without S3.
 */
#include "bench.h"
#include "uffd_test_util.h"
#include "build/layered.h"
#include "build/storage.h"
#include "header/serialize.h"
#include "storage/checksums.h"
#include "storage/faulty.h"
#include "storage/s3.h"
#include "storage/verified.h"
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

struct bench {
	struct ms_store *store;
	struct ms_header *h;
	uint8_t *image, *buf;
	char key[MS_ARTIFACT_KEY_MAX];
};

/* Sequential 4 MiB ranged GETs of the whole object: seconds, or < 0. */
static double get_once(struct bench *b)
{
	double t0 = ms_bench_now();
	for (uint64_t off = 0; off < SIZE; off += 4 << 20) {
		size_t got;
		int err = ms_store_read_range(b->store, b->key, off, b->buf, 4 << 20, &got);
		if (err || got != 4 << 20)
			return -1;
	}
	return ms_bench_now() - t0;
}

/* A full checked touch by a child, served cold (fresh diff store and cache): seconds, or < 0. */
static double touch_once(struct bench *b, const struct ms_chunker_config *chunker)
{
	char dir[] = "/tmp/memsnap-bench-cold.XXXXXX";
	if (!mkdtemp(dir))
		return -1;
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = dir};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage bs = {.store = b->store,
				      .diffs = diffs,
				      .cache_dir = dir,
				      .data = MS_ARTIFACT_MEMFILE,
				      .chunker = *chunker};
	struct ms_layered *file =
	    ms_layered_new(ms_header_copy(b->h), ms_build_storage_resolve, &bs);
	char sock[128];
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	struct ms_pageserver_options opts = {.workers = 4, .batch_bytes = 65536};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, file, &opts, &(int){0});
	struct fc_child_cfg ccfg = {.sock_path = sock,
				    .size = SIZE,
				    .page_size = 4096,
				    .regions = 1,
				    .wp = true,
				    .source = b->image};
	struct fc_child child;
	if (!srv || fc_child_start(&ccfg, &child))
		return -1;
	struct ms_uffd_session *s;
	if (ms_pageserver_next_session(srv, 10 * MS_NSEC_PER_SEC, &s))
		return -1;
	double t0 = ms_bench_now();
	int64_t bad = fc_child_cmd(&child, FC_READ_CHECK, 0, SIZE, 0, 120000);
	double t = ms_bench_now() - t0;
	fc_child_exit(&child);
	ms_uffd_session_unref(s);
	ms_pageserver_free(srv);
	ms_layered_free(file);
	ms_diffstore_free(diffs);
	rmdir(dir);
	return bad == 0 ? t : -1;
}

/* Median of rounds (<= 9) alternating GETs and touches, each round's ratio in ratios[]; 0 or
 * -EIO. */
static int measure(struct bench *b, const struct ms_chunker_config *chunker, int rounds,
		   double *touch_s, double *get_s, double *ratio, double *ratios)
{
	double touches[9], gets[9];
	for (int r = 0; r < rounds; r++) {
		gets[r] = get_once(b);
		touches[r] = touch_once(b, chunker);
		if (gets[r] <= 0 || touches[r] <= 0)
			return -EIO;
		ratios[r] = gets[r] / touches[r];
	}
	*touch_s = ms_bench_median(touches, rounds);
	*get_s = ms_bench_median(gets, rounds);
	*ratio = ms_bench_median(ratios, rounds);
	return 0;
}

static void sweep(struct bench *b)
{
	static const uint64_t chunks[] = {1 << 20, 2 << 20, 4 << 20, 8 << 20};
	static const struct {
		uint32_t parallel, readahead;
	} modes[] = {{1, MS_CHUNK_READAHEAD_OFF}, {2, 2}, {4, 2}, {4, 4}};
	double mib = SIZE / 1048576.0;
	fprintf(stderr, "%-6s %-6s %-9s %-9s %-11s %-9s %s\n", "chunk", "read", "in-flight",
		"readahead", "touch MiB/s", "GET MiB/s", "ratio (median of 3)");
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++)
		for (uint64_t read = 1 << 20; read <= chunks[c]; read *= 4)
			for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
				struct ms_chunker_config cc = {.chunk_size = chunks[c],
							       .read_size = read,
							       .parallel = modes[m].parallel,
							       .readahead = modes[m].readahead};
				double t, g, ratio, ratios[3];
				if (measure(b, &cc, 3, &t, &g, &ratio, ratios))
					return;
				fprintf(stderr, "%-6llu %-6llu %-9u %-9u %-11.0f %-9.0f %.2f\n",
					(unsigned long long)(chunks[c] >> 20),
					(unsigned long long)(read >> 10), modes[m].parallel,
					modes[m].readahead == MS_CHUNK_READAHEAD_OFF
					    ? 0
					    : modes[m].readahead,
					mib / t, mib / g, ratio);
			}
}

/* pageserver.cold_fs_mib_s (see the top); 0 or an error. */
static int cold_fs(const uint8_t *image)
{
	char dir[] = "/tmp/memsnap-bench-coldfs.XXXXXX";
	if (!mkdtemp(dir))
		return -errno;
	int err;
	struct ms_store *fs = ms_store_fs_new(dir, &err);
	if (!fs)
		return err;
	struct ms_store *faulty = ms_store_faulty_new(fs);
	struct bench in_place = {.store = ms_store_verified_new(fs, false),
				 .image = (uint8_t *)image};
	struct bench chunked = {.store = ms_store_verified_new(faulty, false),
				.image = (uint8_t *)image};
	ms_uuid id;
	ms_uuid_generate(&id);
	ms_artifact_key(in_place.key, sizeof(in_place.key), &id, MS_ARTIFACT_MEMFILE,
			MS_COMPRESS_NONE);
	memcpy(chunked.key, in_place.key, sizeof(chunked.key));
	char sums_key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(sums_key, sizeof(sums_key), &id, MS_ARTIFACT_CHECKSUMS, MS_COMPRESS_NONE);
	struct ms_sums *sums = ms_sums_new();
	uint8_t *table = NULL;
	size_t table_len = 0;
	err = !faulty || !in_place.store || !chunked.store || !sums ? -ENOMEM : 0;
	if (!err)
		err = ms_sums_add_buf(sums, "memfile", image, SIZE, 0);
	if (!err)
		err = ms_sums_serialize(sums, &table, &table_len);
	if (!err)
		err = ms_store_put_buf(fs, in_place.key, image, SIZE, NULL);
	if (!err)
		err = ms_store_put_buf(fs, sums_key, table, table_len, NULL);
	in_place.h = chunked.h = ms_header_new_base(&id, MS_HEADER_V4, 4096, SIZE, true);
	struct ms_build_data self = {.build_id = id, .size = SIZE};
	if (!err && in_place.h)
		ms_header_set_build(in_place.h, &self);
	struct ms_chunker_config defaults = {0};
	double ins[5], chs[5], ratios[5];
	for (int r = 0; !err && r < 5; r++) {
		/* alternate which one runs first */
		double a =
		    r % 2 ? touch_once(&chunked, &defaults) : touch_once(&in_place, &defaults);
		double c =
		    r % 2 ? touch_once(&in_place, &defaults) : touch_once(&chunked, &defaults);
		ins[r] = r % 2 ? c : a;
		chs[r] = r % 2 ? a : c;
		if (ins[r] <= 0 || chs[r] <= 0)
			err = -EIO;
		else
			ratios[r] = chs[r] / ins[r];
	}
	if (!err) {
		double mib = SIZE / 1048576.0, t_in = ms_bench_median(ins, 5),
		       t_ch = ms_bench_median(chs, 5), ratio = ms_bench_median(ratios, 5);
		fprintf(stderr,
			"pageserver.cold_fs_mib_s: touch %.0f MiB/s in place, %.0f MiB/s through "
			"the chunker, median ratio of 5 rounds %.2f\n",
			mib / t_in, mib / t_ch, ratio);
		ms_bench_report_spread("pageserver.cold_fs_mib_s", mib / t_in, "MiB/s",
				       "the same touch through the chunker (fs)", mib / t_ch, ratio,
				       ratios, 5, 1.0);
	}
	ms_header_free(in_place.h);
	free(table);
	ms_sums_unref(sums);
	ms_store_free(in_place.store);
	ms_store_free(chunked.store);
	ms_store_free(faulty);
	ms_store_free(fs);
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0 && !err)
		err = -EIO;
	return err;
}

int main(void)
{
	uint8_t *image = malloc(SIZE);
	if (!image)
		return fail("alloc", -ENOMEM);
	uint64_t x = 7;
	for (size_t i = 0; i < SIZE; i += 8) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(image + i, &x, 8);
	}
	int err = cold_fs(image);
	if (err)
		return fail("cold touch from the file store", err);
	const char *endpoint = getenv("MEMSNAP_S3_ENDPOINT");
	if (!endpoint) {
		fprintf(stderr, "bench_cold_s3: MEMSNAP_S3_ENDPOINT not set; S3 skipped\n");
		free(image);
		return 0;
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "bench-%d", (int)getpid());
	struct ms_s3_config cfg = {.endpoint = endpoint,
				   .bucket = "memsnap-bench",
				   .prefix = prefix,
				   .access_key = getenv("MEMSNAP_S3_ACCESS_KEY"),
				   .secret_key = getenv("MEMSNAP_S3_SECRET_KEY")};
	struct bench b = {0};
	b.store = ms_store_s3_new(&cfg, &err);
	if (!b.store || (err = ms_store_s3_create_bucket(b.store)))
		return fail("s3 store", err);
	b.image = image;
	b.buf = malloc(4 << 20);
	if (!b.buf)
		return fail("alloc", -ENOMEM);
	ms_uuid id;
	ms_uuid_generate(&id);
	ms_artifact_key(b.key, sizeof(b.key), &id, MS_ARTIFACT_MEMFILE, MS_COMPRESS_NONE);
	if ((err = ms_store_put_buf(b.store, b.key, b.image, SIZE, NULL)))
		return fail("put", err);
	b.h = ms_header_new_base(&id, MS_HEADER_V4, 4096, SIZE, true);
	struct ms_build_data self = {.build_id = id, .size = SIZE};
	ms_header_set_build(b.h, &self);

	if (getenv("MEMSNAP_BENCH_SWEEP"))
		sweep(&b);
	struct ms_chunker_config defaults = {0};
	double touch, get, ratio, ratios[5];
	if ((err = measure(&b, &defaults, 5, &touch, &get, &ratio, ratios)))
		return fail("touch or GET (pages differ?)", err);
	double mib = SIZE / 1048576.0;
	fprintf(stderr,
		"pageserver.cold_s3_mib_s: touch %.0f MiB/s, ranged GET %.0f MiB/s, "
		"median ratio of 5 rounds %.2f\n",
		mib / touch, mib / get, ratio);
	ms_bench_report_spread("pageserver.cold_s3_mib_s", mib / touch, "MiB/s",
			       "sequential 4 MiB ranged GETs of the same object", mib / get, ratio,
			       ratios, 5, 0.8);
	ms_store_remove(b.store, b.key);
	ms_header_free(b.h);
	ms_store_free(b.store);
	free(b.buf);
	free(b.image);
	return 0;
}
