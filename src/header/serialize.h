/*
 * serialize.h - header (de)serialization, byte-compatible with E2B's V3, V4, V5.
 *
 * All integers little-endian. Metadata (every version), 64 bytes:
 *   offset size field
 *   0      8    version (dispatch on version & 0xffff; upper bits reserved)
 *   8      8    block_size (non-zero)
 *   16     8    size (device bytes)
 *   24     8    generation
 *   32     16   build_id (raw RFC-4122 bytes)
 *   48     16   base_build_id
 *
 * V1/V2/V3: [metadata][N x 40-byte mapping record] until the end (no count).
 *   mapping record: 0 offset u64 | 8 length u64 | 16 build_id [16] | 32 storage_offset u64
 *   No entries: one entry [0, roundup(size, 4 KiB)) -> build_id at 0 (a base file).
 *
 * V4: [metadata][flags u8][uncompressed length u32][LZ4 frame of the block]
 *   flags bit 0 = incomplete (only ever sent to peers, never persisted); every
 *   E2B version that writes V4 or V5 writes this byte.
 *   LZ4 frame as E2B's pierrec writer makes it: 4 MiB blocks, independent,
 *   block and content checksums, no content size (FLG 0x74, BD 0x70).
 *   block: u32 B, then B builds sorted by raw uuid bytes, each
 *            0 build_id [16] | 16 size i64 | 24 checksum [32] | 56 frame table
 *          (frame table: see storage/frametable.h; trimmed on write to the
 *           frames that the build's mapping ranges touch)
 *          u32 N, then N x 40-byte mapping records (N = 0: as V3's no entries)
 * V5: as V4, but the mappings are columnar, in 4 KiB page units, nil entries
 *   left out (the decoder fills gaps with nil):
 *          u32 M, M x 16-byte build ids (first-appearance order, M <= 65535)
 *          u32 N (non-nil entries), then N uvarint offset deltas, N uvarint
 *          lengths, N zig-zag varint storage deltas, N uvarint build indices
 *
 * Decoder limits (E2B's limits): the uncompressed block at most 256 MiB
 * (also on write), decompressed length exactly the prefix, counts bounded by the
 * bytes left, V5 N <= 8 Mi and M <= 65535, every varint value <= 2^32-1, storage
 * never negative, no zero-length, overlapping or past-the-size entry, index < M,
 * valid frame tables, no duplicate build, no trailing bytes. Any violation is
 * MS_ECORRUPT (MS_ETOOBIG for the caps, MS_EVERSION for an unknown version) and
 * nothing is returned.
 */
#ifndef MS_HEADER_SERIALIZE_H
#define MS_HEADER_SERIALIZE_H

#include "header/header.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_HEADER_META_SIZE	 64
#define MS_HEADER_MAX_BLOCK	 (256u << 20)
#define MS_HEADER_V5_MAX_ENTRIES (8u << 20)
#define MS_HEADER_MAX_BUILDS	 65535u

/*
 * Serializes header as version (3, 4 or 5; 0 = header->meta.version); the
 * metadata written carries that version. An incomplete header is refused with
 * MS_EINCOMPLETE unless for_peer (V4/V5 then carry the flag). *out is malloc'd.
 */
int ms_header_serialize(const struct ms_header *header, uint64_t version, bool for_peer,
			uint8_t **out, size_t *len);
/*
 * Parses a header. For complete headers the builds table is backfilled as
 * E2B's LoadHeader does: V3, every referenced build gets an "uncompressed,
 * size unknown" entry; V4+, only the header's own build.
 */
int ms_header_deserialize(const void *buf, size_t len, struct ms_header **out);

#endif
