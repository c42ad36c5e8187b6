/*
 * serialize.c - V3/V4/V5 header encoders and decoders (layouts in serialize.h).
 *
 * Design: encoders append into a growable buffer that remembers its first
 * error; decoders read through a bounds-checked cursor, so every field is
 * checked against the end before it is read. A decoder builds a private header
 * and returns it only after ms_header_validate() passed.
 */
#include "header/serialize.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>

/* ---- growable output buffer ---- */

struct ms_wbuf {
	uint8_t *data;
	size_t len, cap;
	int err;
};

static void ms_wbuf_put(struct ms_wbuf *w, const void *src, size_t n)
{
	if (w->err)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *grown = realloc(w->data, cap);
		if (!grown) {
			w->err = -ENOMEM;
			return;
		}
		w->data = grown;
		w->cap = cap;
	}
	memcpy(w->data + w->len, src, n);
	w->len += n;
}

static void ms_wbuf_u8(struct ms_wbuf *w, uint8_t v)
{
	ms_wbuf_put(w, &v, 1);
}

static void ms_wbuf_u32(struct ms_wbuf *w, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	ms_wbuf_put(w, b, 4);
}

static void ms_wbuf_u64(struct ms_wbuf *w, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	ms_wbuf_put(w, b, 8);
}

static void ms_wbuf_uvarint(struct ms_wbuf *w, uint64_t v)
{
	uint8_t b[10];
	size_t n = 0;
	while (v >= 0x80) {
		b[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	b[n++] = (uint8_t)v;
	ms_wbuf_put(w, b, n);
}

static void ms_wbuf_varint(struct ms_wbuf *w, int64_t v)
{
	ms_wbuf_uvarint(w, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* ---- bounds-checked input cursor ---- */

struct ms_rbuf {
	const uint8_t *p, *end;
};

static size_t ms_rbuf_left(const struct ms_rbuf *r)
{
	return (size_t)(r->end - r->p);
}

static bool ms_rbuf_get(struct ms_rbuf *r, void *dst, size_t n)
{
	if (ms_rbuf_left(r) < n)
		return false;
	memcpy(dst, r->p, n);
	r->p += n;
	return true;
}

static bool ms_rbuf_u32(struct ms_rbuf *r, uint32_t *v)
{
	uint8_t b[4];
	if (!ms_rbuf_get(r, b, 4))
		return false;
	*v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
	return true;
}

static bool ms_rbuf_u64(struct ms_rbuf *r, uint64_t *v)
{
	uint8_t b[8];
	if (!ms_rbuf_get(r, b, 8))
		return false;
	*v = 0;
	for (int i = 7; i >= 0; i--)
		*v = *v << 8 | b[i];
	return true;
}

/* Go's binary.ReadUvarint: at most 10 bytes, the 10th at most 1. */
static bool ms_rbuf_uvarint(struct ms_rbuf *r, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0, i = 0; i < 10; i++, shift += 7) {
		if (r->p == r->end)
			return false;
		uint8_t b = *r->p++;
		if (b < 0x80) {
			if (i == 9 && b > 1)
				return false;
			*v = x | (uint64_t)b << shift;
			return true;
		}
		x |= (uint64_t)(b & 0x7f) << shift;
	}
	return false;
}

static bool ms_rbuf_varint(struct ms_rbuf *r, int64_t *v)
{
	uint64_t u;
	if (!ms_rbuf_uvarint(r, &u))
		return false;
	*v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
	return true;
}

/* ---- metadata and records ---- */

static void ms_write_meta(struct ms_wbuf *w, const struct ms_header_meta *m, uint64_t version)
{
	ms_wbuf_u64(w, version);
	ms_wbuf_u64(w, m->block_size);
	ms_wbuf_u64(w, m->size);
	ms_wbuf_u64(w, m->generation);
	ms_wbuf_put(w, m->build_id.bytes, 16);
	ms_wbuf_put(w, m->base_build_id.bytes, 16);
}

static bool ms_read_meta(struct ms_rbuf *r, struct ms_header_meta *m)
{
	return ms_rbuf_u64(r, &m->version) && ms_rbuf_u64(r, &m->block_size) &&
	       ms_rbuf_u64(r, &m->size) && ms_rbuf_u64(r, &m->generation) &&
	       ms_rbuf_get(r, m->build_id.bytes, 16) && ms_rbuf_get(r, m->base_build_id.bytes, 16);
}

static void ms_write_record(struct ms_wbuf *w, const struct ms_mapping *e)
{
	ms_wbuf_u64(w, e->offset);
	ms_wbuf_u64(w, e->length);
	ms_wbuf_put(w, e->build_id.bytes, 16);
	ms_wbuf_u64(w, e->storage_offset);
}

static bool ms_read_record(struct ms_rbuf *r, struct ms_mapping *e)
{
	return ms_rbuf_u64(r, &e->offset) && ms_rbuf_u64(r, &e->length) &&
	       ms_rbuf_get(r, e->build_id.bytes, 16) && ms_rbuf_u64(r, &e->storage_offset);
}

/* ---- frame tables ---- */

struct ms_range {
	uint64_t start, end;
};

static int ms_range_cmp(const void *a, const void *b)
{
	const struct ms_range *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Writes the build's table trimmed to the frames that its mapping ranges touch. */
static int ms_write_frames(struct ms_wbuf *w, const struct ms_header *h,
			   const struct ms_build_data *b)
{
	const struct ms_frame_table *t = b->frames;
	if (!t || t->type == MS_COMPRESS_NONE) {
		ms_wbuf_u32(w, 0);
		ms_wbuf_u32(w, 0);
		return 0;
	}
	struct ms_range *ranges = NULL;
	size_t n = 0;
	for (size_t i = 0; i < h->mappings.count; i++)
		n += ms_uuid_eq(&h->mappings.entries[i].build_id, &b->build_id);
	if (n && !(ranges = malloc(n * sizeof(*ranges))))
		return -ENOMEM;
	n = 0;
	for (size_t i = 0; i < h->mappings.count; i++) {
		const struct ms_mapping *e = &h->mappings.entries[i];
		if (ms_uuid_eq(&e->build_id, &b->build_id))
			ranges[n++] =
			    (struct ms_range){e->storage_offset, e->storage_offset + e->length};
	}
	if (n) /* qsort wants a valid pointer even for no elements */
		qsort(ranges, n, sizeof(*ranges), ms_range_cmp);
	/* a frame is kept when some range overlaps it; no range at all keeps every frame */
	uint32_t kept = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			ms_wbuf_u32(w, (uint32_t)t->type);
			ms_wbuf_u32(w, kept);
		}
		size_t r = 0;
		uint64_t reach = 0; /* furthest end among ranges starting before the frame's end */
		for (uint32_t f = 0; f < t->count; f++) {
			const struct ms_frame *fr = &t->frames[f];
			uint64_t fs = (uint64_t)fr->start_u, fe = fs + (uint64_t)fr->size_u;
			while (r < n && ranges[r].start < fe) {
				if (ranges[r].end > reach)
					reach = ranges[r].end;
				r++;
			}
			bool keep = n == 0 || reach > fs;
			if (!keep)
				continue;
			if (pass == 0) {
				kept++;
			} else {
				ms_wbuf_u64(w, (uint64_t)fr->start_u);
				ms_wbuf_u64(w, (uint64_t)fr->start_c);
				ms_wbuf_u32(w, (uint32_t)fr->size_u);
				ms_wbuf_u32(w, (uint32_t)fr->size_c);
			}
		}
	}
	free(ranges);
	return 0;
}

static int ms_read_frames(struct ms_rbuf *r, struct ms_frame_table **out)
{
	uint32_t type, n;
	*out = NULL;
	if (!ms_rbuf_u32(r, &type) || !ms_rbuf_u32(r, &n))
		return MS_ECORRUPT;
	if (type > MS_COMPRESS_LZ4 || (type == MS_COMPRESS_NONE && n) || n > MS_FRAMES_MAX ||
	    n > ms_rbuf_left(r) / 24)
		return MS_ECORRUPT;
	if (n == 0)
		return 0; /* (0,0) or a compressed type with no frames: uncompressed */
	struct ms_frame_table *t = ms_frame_table_new((enum ms_compression)type);
	if (!t || !(t->frames = malloc((size_t)n * sizeof(*t->frames)))) {
		ms_frame_table_free(t);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint64_t su, sc;
		uint32_t zu, zc;
		ms_rbuf_u64(r, &su);
		ms_rbuf_u64(r, &sc);
		ms_rbuf_u32(r, &zu);
		ms_rbuf_u32(r, &zc);
		t->frames[i] =
		    (struct ms_frame){(int64_t)su, (int64_t)sc, (int32_t)zu, (int32_t)zc};
	}
	t->count = n;
	if (ms_frame_table_validate(t)) {
		ms_frame_table_free(t);
		return MS_ECORRUPT;
	}
	*out = t;
	return 0;
}

/* ---- builds section (V4, V5) ---- */

static int ms_write_builds(struct ms_wbuf *w, const struct ms_header *h)
{
	ms_wbuf_u32(w, (uint32_t)h->build_count);
	for (size_t i = 0; i < h->build_count; i++) { /* kept sorted by raw uuid bytes */
		const struct ms_build_data *b = &h->builds[i];
		ms_wbuf_put(w, b->build_id.bytes, 16);
		ms_wbuf_u64(w, (uint64_t)b->size);
		ms_wbuf_put(w, b->checksum, 32);
		int err = ms_write_frames(w, h, b);
		if (err)
			return err;
	}
	return w->err;
}

static int ms_read_builds(struct ms_rbuf *r, struct ms_header *h)
{
	uint32_t count;
	if (!ms_rbuf_u32(r, &count) || count > ms_rbuf_left(r) / 64)
		return MS_ECORRUPT;
	h->has_builds = true;
	for (uint32_t i = 0; i < count; i++) {
		struct ms_build_data b = {0};
		uint64_t size;
		if (!ms_rbuf_get(r, b.build_id.bytes, 16) || !ms_rbuf_u64(r, &size) ||
		    !ms_rbuf_get(r, b.checksum, 32))
			return MS_ECORRUPT;
		b.size = (int64_t)size;
		if (b.size < 0 || ms_header_build(h, &b.build_id))
			return MS_ECORRUPT; /* negative size or duplicate build */
		int err = ms_read_frames(r, &b.frames);
		if (err)
			return err;
		err = ms_header_set_build(h, &b);
		ms_frame_table_free(b.frames);
		if (err)
			return err;
	}
	return 0;
}

/* ---- V5 columnar mappings ---- */

static int ms_write_v5_mappings(struct ms_wbuf *w, const struct ms_header *h)
{
	const struct ms_mappings *m = &h->mappings;
	ms_uuid *table = NULL;
	uint32_t *index = NULL;
	size_t table_len = 0, stored = 0;
	int err = -ENOMEM;
	if (m->count && (!(table = malloc(m->count * sizeof(*table))) ||
			 !(index = malloc(m->count * sizeof(*index)))))
		goto out;
	for (size_t i = 0; i < m->count; i++) {
		const ms_uuid *id = &m->entries[i].build_id;
		if (ms_uuid_is_nil(id))
			continue;
		size_t k = 0;
		/* first-appearance order; builds per header are few, so a scan is fine */
		while (k < table_len && !ms_uuid_eq(&table[k], id))
			k++;
		if (k == table_len)
			table[table_len++] = *id;
		index[i] = (uint32_t)k;
		stored++;
	}
	err = MS_ETOOBIG;
	if (table_len > MS_HEADER_MAX_BUILDS || stored > MS_HEADER_V5_MAX_ENTRIES)
		goto out;
	ms_wbuf_u32(w, (uint32_t)table_len);
	for (size_t k = 0; k < table_len; k++)
		ms_wbuf_put(w, table[k].bytes, 16);
	ms_wbuf_u32(w, (uint32_t)stored);
	uint64_t prev = 0;
	for (size_t i = 0; i < m->count; i++)
		if (!ms_uuid_is_nil(&m->entries[i].build_id)) {
			uint64_t off = m->entries[i].offset / MS_PAGE_SIZE;
			ms_wbuf_uvarint(w, off - prev);
			prev = off;
		}
	for (size_t i = 0; i < m->count; i++)
		if (!ms_uuid_is_nil(&m->entries[i].build_id))
			ms_wbuf_uvarint(w, m->entries[i].length / MS_PAGE_SIZE);
	int64_t prev_storage = 0;
	for (size_t i = 0; i < m->count; i++)
		if (!ms_uuid_is_nil(&m->entries[i].build_id)) {
			int64_t s = (int64_t)(m->entries[i].storage_offset / MS_PAGE_SIZE);
			ms_wbuf_varint(w, s - prev_storage);
			prev_storage = s;
		}
	for (size_t i = 0; i < m->count; i++)
		if (!ms_uuid_is_nil(&m->entries[i].build_id))
			ms_wbuf_uvarint(w, index[i]);
	err = w->err;
out:
	free(index);
	free(table);
	return err;
}

static int ms_read_v5_mappings(struct ms_rbuf *r, struct ms_header *h)
{
	uint64_t size_pages = (h->meta.size + MS_PAGE_SIZE - 1) / MS_PAGE_SIZE;
	uint32_t m, n;
	ms_uuid *table = NULL;
	uint64_t *cols = NULL;
	int err = MS_ECORRUPT;
	if (size_pages > MS_MAX_PAGE_INDEX)
		return MS_ECORRUPT;
	if (!ms_rbuf_u32(r, &m) || m > MS_HEADER_MAX_BUILDS || m > ms_rbuf_left(r) / 16)
		return MS_ECORRUPT;
	if (m && !(table = malloc(m * sizeof(*table))))
		return -ENOMEM;
	for (uint32_t k = 0; k < m; k++)
		ms_rbuf_get(r, table[k].bytes, 16);
	if (!ms_rbuf_u32(r, &n) || n > MS_HEADER_V5_MAX_ENTRIES || n > ms_rbuf_left(r) / 4 ||
	    n > MS_HEADER_MAX_BLOCK / 42)
		goto out;
	err = -ENOMEM;
	if (n && !(cols = malloc((size_t)n * 4 * sizeof(*cols))))
		goto out;
	err = MS_ECORRUPT;
	uint64_t *offs = cols, *lens = cols + n, *stor = cols + 2 * (size_t)n,
		 *idx = cols + 3 * (size_t)n;
	uint64_t prev = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t d;
		if (!ms_rbuf_uvarint(r, &d) || d > MS_MAX_PAGE_INDEX)
			goto out;
		prev += d;
		if (prev > MS_MAX_PAGE_INDEX)
			goto out;
		offs[i] = prev;
	}
	for (uint32_t i = 0; i < n; i++)
		if (!ms_rbuf_uvarint(r, &lens[i]) || lens[i] > MS_MAX_PAGE_INDEX)
			goto out;
	int64_t prev_storage = 0;
	for (uint32_t i = 0; i < n; i++) {
		int64_t d;
		if (!ms_rbuf_varint(r, &d) || d > (int64_t)MS_MAX_PAGE_INDEX ||
		    d < -(int64_t)MS_MAX_PAGE_INDEX)
			goto out;
		prev_storage += d;
		if (prev_storage < 0 || prev_storage > (int64_t)MS_MAX_PAGE_INDEX)
			goto out;
		stor[i] = (uint64_t)prev_storage;
	}
	for (uint32_t i = 0; i < n; i++)
		if (!ms_rbuf_uvarint(r, &idx[i]) || idx[i] >= m)
			goto out;
	/* rebuild, filling gaps with nil entries */
	uint64_t current = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (lens[i] == 0 || offs[i] < current || offs[i] + lens[i] > size_pages)
			goto out;
		if (offs[i] > current) {
			struct ms_mapping gap = {.offset = current * MS_PAGE_SIZE,
						 .length = (offs[i] - current) * MS_PAGE_SIZE};
			if ((err = ms_mappings_push(&h->mappings, &gap)))
				goto out;
			err = MS_ECORRUPT;
		}
		struct ms_mapping e = {.offset = offs[i] * MS_PAGE_SIZE,
				       .length = lens[i] * MS_PAGE_SIZE,
				       .build_id = table[idx[i]],
				       .storage_offset = stor[i] * MS_PAGE_SIZE};
		if (ms_uuid_is_nil(&e.build_id))
			goto out; /* nil is never stored in the table */
		if ((err = ms_mappings_push(&h->mappings, &e)))
			goto out;
		err = MS_ECORRUPT;
		current = offs[i] + lens[i];
	}
	if (current < size_pages) {
		struct ms_mapping tail = {.offset = current * MS_PAGE_SIZE,
					  .length = (size_pages - current) * MS_PAGE_SIZE};
		if ((err = ms_mappings_push(&h->mappings, &tail)))
			goto out;
	}
	err = 0;
out:
	free(cols);
	free(table);
	return err;
}

/* ---- LZ4 frame of the V4/V5 block ---- */

/*
 * The frame E2B's compressLZ4 (serialization_v4.go) writes with pierrec/lz4/v4:
 * 4 MiB blocks, block and content checksums, fast level, no content size, and
 * always independent blocks (pierrec sets the flag on every frame it writes).
 * The streaming API is used because LZ4F_compressFrame shrinks the block size
 * of a small input, so the descriptor (FLG 0x74, BD 0x70) would differ.
 */
static int ms_lz4_compress(const uint8_t *src, size_t len, struct ms_wbuf *w)
{
	LZ4F_preferences_t prefs;
	memset(&prefs, 0, sizeof(prefs));
	prefs.frameInfo.blockSizeID = LZ4F_max4MB;
	prefs.frameInfo.blockMode = LZ4F_blockIndependent;
	prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
	prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	LZ4F_cctx *ctx;
	if (LZ4F_isError(LZ4F_createCompressionContext(&ctx, LZ4F_VERSION)))
		return -ENOMEM;
	int err = -ENOMEM;
	size_t bound = LZ4F_HEADER_SIZE_MAX + LZ4F_compressBound(len, &prefs);
	uint8_t *dst = malloc(bound);
	if (!dst)
		goto out;
	err = -EIO;
	size_t n = LZ4F_compressBegin(ctx, dst, bound, &prefs);
	if (LZ4F_isError(n))
		goto out;
	size_t pos = n;
	n = LZ4F_compressUpdate(ctx, dst + pos, bound - pos, src, len, NULL);
	if (LZ4F_isError(n))
		goto out;
	pos += n;
	n = LZ4F_compressEnd(ctx, dst + pos, bound - pos, NULL);
	if (LZ4F_isError(n))
		goto out;
	pos += n;
	ms_wbuf_put(w, dst, pos);
	err = w->err;
out:
	free(dst);
	LZ4F_freeCompressionContext(ctx);
	return err;
}

/* Decompresses exactly expect bytes; anything else (more, less, bad checksum) is corrupt. */
static int ms_lz4_decompress(const uint8_t *src, size_t len, size_t expect, uint8_t **out)
{
	LZ4F_dctx *ctx;
	if (LZ4F_isError(LZ4F_createDecompressionContext(&ctx, LZ4F_VERSION)))
		return -ENOMEM;
	uint8_t *dst = malloc(expect + 1);
	int err = -ENOMEM;
	if (!dst)
		goto out;
	size_t in_pos = 0, out_pos = 0, hint = 1;
	err = MS_ECORRUPT;
	while (in_pos < len && hint != 0) {
		size_t in_n = len - in_pos, out_n = expect + 1 - out_pos;
		hint = LZ4F_decompress(ctx, dst + out_pos, &out_n, src + in_pos, &in_n, NULL);
		if (LZ4F_isError(hint))
			goto out;
		in_pos += in_n;
		out_pos += out_n;
		if (out_pos > expect)
			goto out; /* longer than the prefix says: a bomb or corruption */
		if (in_n == 0 && out_n == 0)
			goto out; /* no progress */
	}
	if (hint != 0 || in_pos != len || out_pos != expect)
		goto out; /* truncated frame, trailing bytes, or short output */
	*out = dst;
	dst = NULL;
	err = 0;
out:
	free(dst);
	LZ4F_freeDecompressionContext(ctx);
	return err;
}

/* ---- entry points ---- */

int ms_header_serialize(const struct ms_header *header, uint64_t version, bool for_peer,
			uint8_t **out, size_t *len)
{
	struct ms_wbuf w = {0}, block = {0};
	int err;
	if (version == 0)
		version = header->meta.version;
	uint64_t layout = version & 0xffff;
	if (layout < 1 || layout > MS_HEADER_V5)
		return MS_EVERSION;
	if (header->incomplete && (!for_peer || layout <= MS_HEADER_V3))
		return MS_EINCOMPLETE;
	if ((err = ms_header_validate(header)))
		return err;
	ms_write_meta(&w, &header->meta, version);
	if (layout <= MS_HEADER_V3) {
		if ((uint64_t)header->mappings.count * 40 > MS_HEADER_MAX_BLOCK) {
			err = MS_ETOOBIG;
			goto fail;
		}
		for (size_t i = 0; i < header->mappings.count; i++)
			ms_write_record(&w, &header->mappings.entries[i]);
	} else {
		if ((err = ms_write_builds(&block, header)))
			goto fail;
		if (layout == MS_HEADER_V4) {
			ms_wbuf_u32(&block, (uint32_t)header->mappings.count);
			for (size_t i = 0; i < header->mappings.count; i++)
				ms_write_record(&block, &header->mappings.entries[i]);
		} else if ((err = ms_write_v5_mappings(&block, header))) {
			goto fail;
		}
		if ((err = block.err))
			goto fail;
		if (block.len > MS_HEADER_MAX_BLOCK) {
			err = MS_ETOOBIG;
			goto fail;
		}
		ms_wbuf_u8(&w, header->incomplete ? 1 : 0);
		ms_wbuf_u32(&w, (uint32_t)block.len);
		if ((err = ms_lz4_compress(block.data, block.len, &w)))
			goto fail;
	}
	if ((err = w.err))
		goto fail;
	free(block.data);
	*out = w.data;
	*len = w.len;
	return 0;
fail:
	free(block.data);
	free(w.data);
	return err;
}

/*
 * E2B's NewHeader (header.go), which deserializeV3 and deserializeV4 both end
 * in: no entries means the whole device is the header's own build at 0 (a base
 * file). V5 does not go through it: its decoder fills an empty list with nil.
 * Go would make a zero-length entry for size 0; that one is left out here.
 */
static int ms_header_default_mapping(struct ms_header *h)
{
	if (h->mappings.count || h->meta.size == 0)
		return 0;
	struct ms_mapping all = {.length = (h->meta.size + MS_PAGE_SIZE - 1) / MS_PAGE_SIZE *
					   MS_PAGE_SIZE,
				 .build_id = h->meta.build_id};
	return ms_mappings_push(&h->mappings, &all);
}

/* E2B's LoadHeader backfill: "uncompressed, size unknown" entries for missing builds. */
static int ms_header_backfill(struct ms_header *h, uint64_t layout)
{
	for (size_t i = 0; i < h->mappings.count; i++) {
		const ms_uuid *id = &h->mappings.entries[i].build_id;
		if (ms_uuid_is_nil(id) || ms_header_build(h, id))
			continue;
		if (layout > MS_HEADER_V3 && !ms_uuid_eq(id, &h->meta.build_id))
			continue; /* ancestor gaps stay absent on purpose */
		struct ms_build_data b = {.build_id = *id};
		int err = ms_header_set_build(h, &b);
		if (err)
			return err;
	}
	return 0;
}

int ms_header_deserialize(const void *buf, size_t len, struct ms_header **out)
{
	struct ms_rbuf r = {buf, (const uint8_t *)buf + len};
	uint8_t *block = NULL;
	int err = MS_ECORRUPT;
	*out = NULL;
	struct ms_header *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	if (!ms_read_meta(&r, &h->meta))
		goto fail; /* truncated metadata */
	uint64_t layout = h->meta.version & 0xffff;
	if (layout < 1 || layout > MS_HEADER_V5) {
		err = MS_EVERSION;
		goto fail;
	}
	if (h->meta.block_size == 0 || h->meta.block_size % MS_PAGE_SIZE ||
	    (h->meta.size + MS_PAGE_SIZE - 1) / MS_PAGE_SIZE > MS_MAX_PAGE_INDEX)
		goto fail;
	if (layout <= MS_HEADER_V3) {
		size_t left = ms_rbuf_left(&r);
		if (left > MS_HEADER_MAX_BLOCK) {
			err = MS_ETOOBIG;
			goto fail;
		}
		if (left % 40)
			goto fail;
		for (size_t i = 0; i < left / 40; i++) {
			struct ms_mapping e;
			ms_read_record(&r, &e);
			if ((err = ms_mappings_push(&h->mappings, &e)))
				goto fail;
		}
		if ((err = ms_header_default_mapping(h)))
			goto fail;
		err = MS_ECORRUPT;
	} else {
		uint8_t flags;
		uint32_t expect;
		if (!ms_rbuf_get(&r, &flags, 1) || !ms_rbuf_u32(&r, &expect))
			goto fail;
		if (expect > MS_HEADER_MAX_BLOCK) {
			err = MS_ETOOBIG;
			goto fail;
		}
		h->incomplete = flags & 1;
		if ((err = ms_lz4_decompress(r.p, ms_rbuf_left(&r), expect, &block)))
			goto fail;
		struct ms_rbuf br = {block, block + expect};
		if ((err = ms_read_builds(&br, h)))
			goto fail;
		err = MS_ECORRUPT;
		if (layout == MS_HEADER_V4) {
			uint32_t n;
			if (!ms_rbuf_u32(&br, &n) || n > ms_rbuf_left(&br) / 40)
				goto fail;
			for (uint32_t i = 0; i < n; i++) {
				struct ms_mapping e;
				ms_read_record(&br, &e);
				if ((err = ms_mappings_push(&h->mappings, &e)))
					goto fail;
			}
			if ((err = ms_header_default_mapping(h)))
				goto fail;
			err = MS_ECORRUPT;
		} else if ((err = ms_read_v5_mappings(&br, h))) {
			goto fail;
		}
		err = MS_ECORRUPT;
		if (ms_rbuf_left(&br))
			goto fail; /* trailing bytes in the block */
	}
	if ((err = ms_header_validate(h)))
		goto fail;
	if (!h->incomplete && (err = ms_header_backfill(h, layout)))
		goto fail;
	free(block);
	*out = h;
	return 0;
fail:
	free(block);
	ms_header_free(h);
	return err;
}
