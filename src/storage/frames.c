/*
 * frames.c - frame writer and verifying reader over zstd and LZ4.
 * Every frame is independent, so a reader needs only the frames its range touches.
 */
#include "storage/frames.h"
#include "util/err.h"

#include <errno.h>
#include <lz4frame.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

static size_t ms_frames_bound(enum ms_compression type, size_t len)
{
	if (type == MS_COMPRESS_ZSTD)
		return ZSTD_compressBound(len);
	LZ4F_preferences_t prefs = {0};
	prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	return LZ4F_compressFrameBound(len, &prefs);
}

/* Compresses one frame; returns the compressed size or a negative error. */
static int64_t ms_frames_encode(ZSTD_CCtx *cctx, enum ms_compression type, int level,
				const void *src, size_t len, void *dst, size_t cap)
{
	if (type == MS_COMPRESS_ZSTD) {
		size_t n = ZSTD_compress2(cctx, dst, cap, src, len);
		return ZSTD_isError(n) ? -EIO : (int64_t)n;
	}
	LZ4F_preferences_t prefs;
	memset(&prefs, 0, sizeof(prefs));
	prefs.frameInfo.blockSizeID = LZ4F_max4MB;
	prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	prefs.frameInfo.contentSize = len;
	prefs.compressionLevel = level;
	size_t n = LZ4F_compressFrame(dst, cap, src, len, &prefs);
	return LZ4F_isError(n) ? -EIO : (int64_t)n;
}

/* A source of uncompressed input: a buffer or a file descriptor. */
struct ms_frames_input {
	const uint8_t *buf;
	int fd;
};

static int ms_frames_input_read(const struct ms_frames_input *in, uint64_t off, void *dst,
				size_t len)
{
	if (in->buf) {
		memcpy(dst, in->buf + off, len);
		return 0;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(in->fd, (char *)dst + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO; /* the input is shorter than its size */
		done += (size_t)n;
	}
	return 0;
}

/* Output: appended to a growable buffer or written to a file descriptor. */
struct ms_frames_output {
	int fd;
	uint8_t *buf;
	size_t len, cap;
};

static int ms_frames_output_put(struct ms_frames_output *out, const void *src, size_t len)
{
	if (out->fd < 0) {
		if (out->len + len > out->cap) {
			size_t cap = out->cap ? out->cap : 1 << 16;
			while (cap < out->len + len)
				cap *= 2;
			uint8_t *grown = realloc(out->buf, cap);
			if (!grown)
				return -ENOMEM;
			out->buf = grown;
			out->cap = cap;
		}
		memcpy(out->buf + out->len, src, len);
		out->len += len;
		return 0;
	}
	const char *p = src;
	while (len) {
		ssize_t n = write(out->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int ms_frames_compress(const struct ms_frames_input *in, uint64_t size,
			      enum ms_compression type, int level, uint32_t frame_size,
			      struct ms_frames_output *out, struct ms_frame_table **table_out,
			      uint8_t sha256[32])
{
	if ((type != MS_COMPRESS_ZSTD && type != MS_COMPRESS_LZ4) || frame_size == 0 ||
	    frame_size % 4096 || frame_size > INT32_MAX / 2)
		return -EINVAL;
	int err = -ENOMEM;
	struct ms_frame_table *table = ms_frame_table_new(type);
	size_t cap = ms_frames_bound(type, frame_size);
	uint8_t *raw = malloc(frame_size), *packed = malloc(cap);
	ZSTD_CCtx *cctx = type == MS_COMPRESS_ZSTD ? ZSTD_createCCtx() : NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!table || !raw || !packed || !md || (type == MS_COMPRESS_ZSTD && !cctx))
		goto out;
	if (cctx && (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel,
							 level ? level : ZSTD_CLEVEL_DEFAULT)) ||
		     ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)))) {
		err = -EINVAL;
		goto out;
	}
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		err = -EIO;
		goto out;
	}
	for (uint64_t off = 0; off < size; off += frame_size) {
		size_t n = size - off < frame_size ? (size_t)(size - off) : frame_size;
		if ((err = ms_frames_input_read(in, off, raw, n)))
			goto out;
		EVP_DigestUpdate(md, raw, n);
		int64_t c = ms_frames_encode(cctx, type, level, raw, n, packed, cap);
		if (c < 0) {
			err = (int)c;
			goto out;
		}
		if (c > INT32_MAX) {
			err = MS_ETOOBIG;
			goto out;
		}
		if ((err = ms_frames_output_put(out, packed, (size_t)c)) ||
		    (err = ms_frame_table_append(table, (int32_t)n, (int32_t)c)))
			goto out;
	}
	uint8_t digest[32];
	unsigned digest_len = 0;
	if (EVP_DigestFinal_ex(md, digest, &digest_len) != 1 || digest_len != 32) {
		err = -EIO;
		goto out;
	}
	if (sha256)
		memcpy(sha256, digest, 32);
	*table_out = table;
	table = NULL;
	err = 0;
out:
	EVP_MD_CTX_free(md);
	ZSTD_freeCCtx(cctx);
	free(packed);
	free(raw);
	ms_frame_table_free(table);
	return err;
}

int ms_frames_compress_fd(int in_fd, uint64_t size, enum ms_compression type, int level,
			  uint32_t frame_size, int out_fd, struct ms_frame_table **table,
			  uint8_t sha256[32])
{
	struct ms_frames_input in = {.fd = in_fd};
	struct ms_frames_output out = {.fd = out_fd};
	if (in_fd < 0 || out_fd < 0)
		return -EBADF;
	return ms_frames_compress(&in, size, type, level, frame_size, &out, table, sha256);
}

int ms_frames_compress_buf(const void *src, size_t len, enum ms_compression type, int level,
			   uint32_t frame_size, void **out_buf, size_t *out_len,
			   struct ms_frame_table **table, uint8_t sha256[32])
{
	static const uint8_t empty;
	struct ms_frames_input in = {.buf = src ? src : &empty, .fd = -1};
	struct ms_frames_output out = {.fd = -1};
	int err = ms_frames_compress(&in, len, type, level, frame_size, &out, table, sha256);
	if (err) {
		free(out.buf);
		return err;
	}
	*out_buf = out.buf;
	*out_len = out.len;
	return 0;
}

static int ms_frames_decode_lz4(const void *src, size_t size_c, void *dst, size_t size_u)
{
	LZ4F_dctx *dctx;
	if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
		return -ENOMEM;
	size_t in_pos = 0, out_pos = 0, hint = 1;
	int err = MS_ECHECKSUM;
	while (hint != 0 && in_pos < size_c) {
		size_t in_n = size_c - in_pos, out_n = size_u - out_pos;
		hint = LZ4F_decompress(dctx, (char *)dst + out_pos, &out_n,
				       (const char *)src + in_pos, &in_n, NULL);
		if (LZ4F_isError(hint))
			goto out;
		in_pos += in_n;
		out_pos += out_n;
		if (in_n == 0 && out_n == 0)
			break; /* no progress: the output is full but the frame is not done */
	}
	if (hint == 0 && in_pos == size_c && out_pos == size_u)
		err = 0;
out:
	LZ4F_freeDecompressionContext(dctx);
	return err;
}

int ms_frames_decode(enum ms_compression type, const void *src, size_t size_c, void *dst,
		     size_t size_u)
{
	if (type == MS_COMPRESS_LZ4)
		return ms_frames_decode_lz4(src, size_c, dst, size_u);
	if (type != MS_COMPRESS_ZSTD)
		return -EINVAL;
	/* exactly one whole frame, of exactly size_u bytes; zstd checks the checksum */
	if (ZSTD_findFrameCompressedSize(src, size_c) != size_c)
		return MS_ECHECKSUM;
	unsigned long long content = ZSTD_getFrameContentSize(src, size_c);
	if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != size_u)
		return MS_ECHECKSUM;
	size_t n = ZSTD_decompress(dst, size_u, src, size_c);
	if (ZSTD_isError(n) || n != size_u)
		return MS_ECHECKSUM;
	return 0;
}

int ms_frames_read(struct ms_store *store, const char *key, const struct ms_frame_table *table,
		   uint64_t off_u, void *dst, size_t len)
{
	if (len == 0)
		return 0;
	uint32_t index;
	if (off_u > INT64_MAX || ms_frame_table_locate(table, (int64_t)off_u, &index))
		return -ERANGE;
	uint8_t *packed = NULL, *raw = NULL;
	size_t packed_cap = 0, raw_cap = 0, done = 0;
	uint64_t pos = off_u; /* the next uncompressed byte wanted */
	int err = 0;
	while (done < len) {
		if (index >= table->count) {
			err = -ERANGE;
			break;
		}
		const struct ms_frame *f = &table->frames[index];
		if (done && (uint64_t)f->start_u != pos) {
			err = -ERANGE; /* a trimmed table with a hole in the range */
			break;
		}
		if ((size_t)f->size_c > packed_cap) {
			free(packed);
			packed_cap = (size_t)f->size_c;
			if (!(packed = malloc(packed_cap))) {
				err = -ENOMEM;
				break;
			}
		}
		if ((size_t)f->size_u > raw_cap) {
			free(raw);
			raw_cap = (size_t)f->size_u;
			if (!(raw = malloc(raw_cap))) {
				err = -ENOMEM;
				break;
			}
		}
		size_t got = 0;
		if ((err = ms_store_read_range(store, key, (uint64_t)f->start_c, packed,
					       (size_t)f->size_c, &got)))
			break;
		if (got != (size_t)f->size_c) {
			err = MS_ECORRUPT; /* the object is shorter than the table */
			break;
		}
		if ((err = ms_frames_decode(table->type, packed, got, raw, (size_t)f->size_u)))
			break;
		uint64_t skip = pos - (uint64_t)f->start_u;
		size_t n = (size_t)f->size_u - skip;
		if (n > len - done)
			n = len - done;
		memcpy((uint8_t *)dst + done, raw + skip, n);
		done += n;
		pos += n;
		index++;
	}
	free(raw);
	free(packed);
	return err;
}
