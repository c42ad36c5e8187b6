/*
 * frames.h - compressed build data as independent frames (as in E2B's orchestrator).
 *
 * The writer cuts data into frames of frame_size uncompressed bytes (a positive
 * multiple of 4 KiB, default 2 MiB; the last may be shorter), each a standalone
 * zstd frame with its content checksum or an LZ4 frame with content checksum,
 * laid back to back, and fills a frame table (storage/frametable.h). The reader
 * fetches whole frames by compressed range and verifies each one (codec
 * checksum and exact uncompressed size) before it returns a byte
 * (docs/design.md §5.8): a mismatch is MS_ECHECKSUM, never wrong bytes.
 */
#ifndef MS_STORAGE_FRAMES_H
#define MS_STORAGE_FRAMES_H

#include "storage/frametable.h"
#include "storage/store.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Compresses size bytes of in_fd (from offset 0) into out_fd (appended at its
 * current position). *table gets a new frame table, sha256 the SHA-256 of the
 * uncompressed bytes (may be NULL). level 0 = the codec's default.
 */
int ms_frames_compress_fd(int in_fd, uint64_t size, enum ms_compression type, int level,
			  uint32_t frame_size, int out_fd, struct ms_frame_table **table,
			  uint8_t sha256[32]);
/* The same from a buffer into a malloc'd buffer *out of *out_len bytes. */
int ms_frames_compress_buf(const void *src, size_t len, enum ms_compression type, int level,
			   uint32_t frame_size, void **out, size_t *out_len,
			   struct ms_frame_table **table, uint8_t sha256[32]);

/*
 * Decodes one frame of size_c bytes that must hold exactly size_u bytes.
 * 0, MS_ECHECKSUM (bad checksum, wrong size, trailing bytes), or -ENOMEM.
 */
int ms_frames_decode(enum ms_compression type, const void *src, size_t size_c, void *dst,
		     size_t size_u);

/*
 * Reads uncompressed bytes [off_u, off_u + len) of object key, compressed as
 * described by table. -ERANGE if the range is not covered by the table;
 * MS_ECHECKSUM if a frame fails verification; MS_ECORRUPT if the object is
 * shorter than the table says.
 */
int ms_frames_read(struct ms_store *store, const char *key, const struct ms_frame_table *table,
		   uint64_t off_u, void *dst, size_t len);

#endif
