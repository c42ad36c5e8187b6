/* test_frames.c - compressed frames: round trips, ranges across frames, corruption caught. */
#include "ms_test.h"
#include "storage/artifact.h"
#include "storage/frames.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <string.h>
#include <unistd.h>

#define FRAME (64 * 1024)

static uint8_t *make_data(size_t len, bool compressible)
{
	uint8_t *d = malloc(len ? len : 1);
	uint64_t x = 0x12345678;
	for (size_t i = 0; i < len; i++) {
		x = x * 6364136223846793005ULL + 1;
		d[i] = compressible ? (uint8_t)((i / 512) % 7 + (i % 3)) : (uint8_t)(x >> 33);
	}
	return d;
}

struct fixture {
	char *dir;
	struct ms_store *store;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	int err;
	f->store = ms_store_fs_new(f->dir, &err);
	assert_non_null(f->store);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_store_free(f->store);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void round_trip(struct fixture *f, enum ms_compression type, size_t len, bool compressible)
{
	uint8_t *data = make_data(len, compressible);
	void *packed;
	size_t packed_len;
	struct ms_frame_table *table;
	uint8_t sha[32], want_sha[32];
	assert_int_equal(
	    ms_frames_compress_buf(data, len, type, 0, FRAME, &packed, &packed_len, &table, sha),
	    0);
	SHA256(data, len, want_sha);
	assert_memory_equal(sha, want_sha, 32);
	assert_int_equal(table->count, (len + FRAME - 1) / FRAME);
	assert_int_equal(ms_frame_table_size_u(table), len);
	assert_int_equal(ms_frame_table_size_c(table), packed_len);
	assert_int_equal(ms_frame_table_validate(table), 0);
	assert_int_equal(ms_store_put_buf(f->store, "b/memfile.zstd", packed, packed_len, NULL), 0);
	uint8_t *back = malloc(len + 1);
	if (len) {
		assert_int_equal(ms_frames_read(f->store, "b/memfile.zstd", table, 0, back, len),
				 0);
		assert_memory_equal(back, data, len);
		/* ranges crossing frame boundaries, starting mid-frame */
		size_t starts[] = {1, FRAME - 5, FRAME, len / 2, len - 1};
		for (size_t i = 0; i < 5; i++) {
			size_t off = starts[i] < len ? starts[i] : 0;
			size_t n = len - off < 3 * FRAME / 2 ? len - off : 3 * FRAME / 2;
			memset(back, 0, n);
			assert_int_equal(
			    ms_frames_read(f->store, "b/memfile.zstd", table, off, back, n), 0);
			assert_memory_equal(back, data + off, n);
		}
	}
	assert_int_equal(ms_frames_read(f->store, "b/memfile.zstd", table, len + 10, back, 1),
			 -ERANGE);
	free(back);
	free(packed);
	free(data);
	ms_frame_table_free(table);
}

static void test_round_trips(void **state)
{
	struct fixture *f = *state;
	size_t sizes[] = {1, 4096, FRAME, FRAME * 3 + 777, FRAME * 5};
	for (size_t i = 0; i < 5; i++) {
		round_trip(f, MS_COMPRESS_ZSTD, sizes[i], true);
		round_trip(f, MS_COMPRESS_ZSTD, sizes[i], false);
		round_trip(f, MS_COMPRESS_LZ4, sizes[i], true);
		round_trip(f, MS_COMPRESS_LZ4, sizes[i], false);
	}
}

static void test_empty_and_bad_args(void **state)
{
	(void)state;
	void *packed;
	size_t packed_len;
	struct ms_frame_table *table;
	assert_int_equal(ms_frames_compress_buf(NULL, 0, MS_COMPRESS_ZSTD, 0, FRAME, &packed,
						&packed_len, &table, NULL),
			 0);
	assert_int_equal(table->count, 0);
	assert_int_equal(packed_len, 0);
	free(packed);
	ms_frame_table_free(table);
	uint8_t b[8] = {0};
	assert_int_equal(ms_frames_compress_buf(b, 8, MS_COMPRESS_ZSTD, 0, 1000, &packed,
						&packed_len, &table, NULL),
			 -EINVAL);
	assert_int_equal(ms_frames_compress_buf(b, 8, MS_COMPRESS_NONE, 0, FRAME, &packed,
						&packed_len, &table, NULL),
			 -EINVAL);
}

/* Any flipped byte of a frame is caught by the codec checksum: an error, never wrong bytes. */
static void test_corruption(void **state)
{
	struct fixture *f = *state;
	enum ms_compression types[] = {MS_COMPRESS_ZSTD, MS_COMPRESS_LZ4};
	for (int t = 0; t < 2; t++) {
		size_t len = 2 * FRAME;
		uint8_t *data = make_data(len, false);
		void *packed;
		size_t packed_len;
		struct ms_frame_table *table;
		assert_int_equal(ms_frames_compress_buf(data, len, types[t], 0, FRAME, &packed,
							&packed_len, &table, NULL),
				 0);
		uint8_t *back = malloc(len);
		uint8_t *bad = malloc(packed_len);
		size_t positions[] = {packed_len / 3, packed_len / 2, packed_len - 2,
				      (size_t)table->frames[1].start_c + 20};
		for (size_t i = 0; i < 4; i++) {
			memcpy(bad, packed, packed_len);
			bad[positions[i]] ^= 0x5a;
			assert_int_equal(ms_store_put_buf(f->store, "x", bad, packed_len, NULL), 0);
			int err = ms_frames_read(f->store, "x", table, 0, back, len);
			assert_true(err == MS_ECHECKSUM);
		}
		/* truncated object */
		assert_int_equal(ms_store_put_buf(f->store, "x", packed, packed_len - 10, NULL), 0);
		assert_int_equal(ms_frames_read(f->store, "x", table, 0, back, len), MS_ECORRUPT);
		/* a frame table that lies about the uncompressed size */
		assert_int_equal(ms_store_put_buf(f->store, "x", packed, packed_len, NULL), 0);
		table->frames[1].size_u -= 4096;
		assert_int_equal(ms_frames_read(f->store, "x", table, FRAME, back, 4096),
				 MS_ECHECKSUM);
		free(bad);
		free(back);
		free(packed);
		free(data);
		ms_frame_table_free(table);
	}
}

static void test_compress_fd(void **state)
{
	struct fixture *f = *state;
	char in_path[1024], out_path[1024];
	snprintf(in_path, sizeof(in_path), "%s/../in-%d", f->dir, getpid());
	snprintf(out_path, sizeof(out_path), "%s/../out-%d", f->dir, getpid());
	size_t len = 3 * FRAME + 100;
	uint8_t *data = make_data(len, true);
	int in = open(in_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	int out = open(out_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(write(in, data, len), (ssize_t)len);
	struct ms_frame_table *table;
	assert_int_equal(
	    ms_frames_compress_fd(in, len, MS_COMPRESS_ZSTD, 3, FRAME, out, &table, NULL), 0);
	off_t packed_len = lseek(out, 0, SEEK_END);
	assert_int_equal(ms_store_put_file(f->store, "y", out, (uint64_t)packed_len, NULL), 0);
	uint8_t *back = malloc(len);
	assert_int_equal(ms_frames_read(f->store, "y", table, 0, back, len), 0);
	assert_memory_equal(back, data, len);
	/* input shorter than the size it claims */
	struct ms_frame_table *t2 = NULL;
	assert_int_equal(
	    ms_frames_compress_fd(in, len + FRAME, MS_COMPRESS_ZSTD, 3, FRAME, out, &t2, NULL),
	    -EIO);
	assert_null(t2);
	close(in);
	close(out);
	unlink(in_path);
	unlink(out_path);
	free(back);
	free(data);
	ms_frame_table_free(table);
}

static void test_artifact_names(void **state)
{
	(void)state;
	ms_uuid id;
	assert_int_equal(ms_uuid_parse("00112233-4455-6677-8899-aabbccddeeff", &id), 0);
	char key[MS_ARTIFACT_KEY_MAX];
	assert_int_equal(
	    ms_artifact_key(key, sizeof(key), &id, MS_ARTIFACT_MEMFILE, MS_COMPRESS_ZSTD), 0);
	assert_string_equal(key, "00112233-4455-6677-8899-aabbccddeeff/memfile.zstd");
	ms_artifact_key(key, sizeof(key), &id, MS_ARTIFACT_MEMFILE_HEADER, MS_COMPRESS_ZSTD);
	assert_string_equal(key, "00112233-4455-6677-8899-aabbccddeeff/memfile.header");
	ms_artifact_key(key, sizeof(key), &id, MS_ARTIFACT_ROOTFS, MS_COMPRESS_LZ4);
	assert_string_equal(key, "00112233-4455-6677-8899-aabbccddeeff/rootfs.ext4.lz4");
	ms_artifact_key(key, sizeof(key), &id, MS_ARTIFACT_SNAPFILE, MS_COMPRESS_NONE);
	assert_string_equal(key, "00112233-4455-6677-8899-aabbccddeeff/snapfile");
	assert_int_equal(ms_artifact_key(key, 10, &id, MS_ARTIFACT_METADATA, MS_COMPRESS_NONE),
			 -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trips, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_and_bad_args, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corruption, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compress_fd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_artifact_names, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
