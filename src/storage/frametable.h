/*
 * frametable.h - frame tables of compressed build data (as in E2B's orchestrator).
 *
 * A compressed build's data is cut into independent frames (default 2 MiB
 * uncompressed, a multiple of the block size); frame i covers uncompressed bytes
 * [start_u, start_u + size_u) and is stored at compressed bytes
 * [start_c, start_c + size_c) of the object. The table is storage's: storage/frames
 * writes it and reads by it, cache/chunker fetches by it; the header only carries
 * it in its builds table (header/serialize.c writes and parses this form).
 *
 * Serialized form (little-endian, inside V4/V5 headers):
 *   offset size field
 *   0      4    compression type (0 none, 1 zstd, 2 lz4)
 *   4      4    n (number of frames, <= MS_FRAMES_MAX)
 *   8      24*n {start_u i64, start_c i64, size_u i32, size_c i32}
 * A nil/uncompressed table is written as type 0, n 0; type 0 with n > 0 is corrupt.
 */
#ifndef MS_STORAGE_FRAMETABLE_H
#define MS_STORAGE_FRAMETABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_FRAMES_MAX	      (1u << 20)
#define MS_FRAME_DEFAULT_SIZE (2u << 20)

enum ms_compression {
	MS_COMPRESS_NONE = 0,
	MS_COMPRESS_ZSTD = 1,
	MS_COMPRESS_LZ4 = 2,
};

struct ms_frame {
	int64_t start_u; /* offset in the uncompressed data */
	int64_t start_c; /* offset in the compressed object */
	int32_t size_u;
	int32_t size_c;
};

struct ms_frame_table {
	enum ms_compression type;
	uint32_t count;
	struct ms_frame *frames; /* count entries, owned by the table */
};

/* "none", "zstd", "lz4"; NULL for an unknown value. */
const char *ms_compression_name(enum ms_compression type);
/* Parses the names above; -EINVAL otherwise. */
int ms_compression_parse(const char *name, enum ms_compression *out);

/* An empty table of the given type; NULL on -ENOMEM. */
struct ms_frame_table *ms_frame_table_new(enum ms_compression type);
void ms_frame_table_free(struct ms_frame_table *table);
struct ms_frame_table *ms_frame_table_copy(const struct ms_frame_table *table);
/* Appends one frame after the last one. 0, -ENOMEM, or MS_ECORRUPT if it breaks the rules. */
int ms_frame_table_append(struct ms_frame_table *table, int32_t size_u, int32_t size_c);
/* Total uncompressed / compressed bytes covered (end of the last frame). */
int64_t ms_frame_table_size_u(const struct ms_frame_table *table);
int64_t ms_frame_table_size_c(const struct ms_frame_table *table);
/* Index of the frame containing uncompressed offset off_u; -ERANGE if none. */
int ms_frame_table_locate(const struct ms_frame_table *table, int64_t off_u, uint32_t *index);
/*
 * Checks the decoder rules: known type, type 0 has no frames, count <= MS_FRAMES_MAX,
 * every size_u > 0 and size_c > 0, starts non-decreasing with no overlap.
 * 0 or MS_ECORRUPT.
 */
int ms_frame_table_validate(const struct ms_frame_table *table);
bool ms_frame_table_equal(const struct ms_frame_table *a, const struct ms_frame_table *b);

#endif
