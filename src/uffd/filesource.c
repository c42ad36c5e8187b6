/* filesource.c - page-server source ops over a layered file. */
#include "uffd/filesource.h"
#include "build/layered.h"

static int ms_fs_read(void *ctx, void *dst, uint64_t off, size_t len)
{
	return ms_layered_read(ctx, dst, off, len);
}

/* True when every page of [off, off + len) maps to the nil build in the current header. */
static bool ms_fs_is_zero(void *ctx, uint64_t off, size_t len)
{
	struct ms_header_ref *snap = ms_layered_header(ctx);
	bool zero = true;
	off &= ~(MS_PAGE_SIZE - 1);
	while (zero && len) {
		ms_uuid build;
		uint64_t in_build, left;
		if (ms_header_lookup(snap->header, off, &build, &in_build, &left)) {
			zero = false;
			break;
		}
		zero = ms_uuid_is_nil(&build);
		uint64_t n = left < len ? left : len;
		off += n;
		len -= (size_t)n;
	}
	ms_header_ref_unref(snap);
	return zero;
}

static uint64_t ms_fs_size(void *ctx)
{
	return ms_layered_size(ctx);
}

const struct ms_page_source_ops ms_layered_page_source_ops = {
    .read = ms_fs_read,
    .is_zero = ms_fs_is_zero,
    .size = ms_fs_size,
};
