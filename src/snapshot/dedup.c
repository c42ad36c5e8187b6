/* dedup.c - compare dirty pages with the parent; drain the survivors packed. */
#include "snapshot/dedup.h"
#include "util/err.h"
#include "util/faultsafe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define P MS_PAGE_SIZE

struct ms_compare_ctx {
	const struct ms_pageset *dirty;
	struct ms_layered *parent;
	struct ms_header_ref *parent_header;
	struct ms_dedup_result *out;
	uint64_t pages;
};

static int ms_compare_fn(void *ctx, const uint8_t *mapping)
{
	struct ms_compare_ctx *c = ctx;
	uint8_t parent_page[P];
	uint64_t cursor = 0, start, len;
	while (ms_pageset_next_run(c->dirty, &cursor, &start, &len)) {
		if (start + len > c->pages)
			return -ERANGE; /* a dirty page past the memory */
		for (uint64_t p = start; p < start + len; p++) {
			const uint8_t *page = mapping + p * P;
			bool zero, equal;
			int err = ms_faultsafe_is_zero(page, P, &zero);
			if (err)
				return err;
			c->out->dirty_pages++;
			if (zero) {
				ms_pageset_add(c->out->empty, (uint32_t)p);
				continue;
			}
			if (c->parent) {
				ms_uuid build;
				uint64_t in_build, left;
				err = ms_header_lookup(c->parent_header->header, p * P, &build,
						       &in_build, &left);
				if (err)
					return err;
				if (!ms_uuid_is_nil(&build)) {
					if ((err = ms_layered_read(c->parent, parent_page, p * P, P)) ||
					    (err = ms_faultsafe_equal(page, parent_page, P, &equal)))
						return err;
					if (equal) {
						c->out->equal_pages++;
						continue;
					}
				}
			}
			ms_pageset_add(c->out->keep, (uint32_t)p);
		}
	}
	return 0;
}

void ms_dedup_result_fini(struct ms_dedup_result *result)
{
	ms_pageset_free(result->keep);
	ms_pageset_free(result->empty);
	memset(result, 0, sizeof(*result));
}

int ms_dedup_compare(struct ms_memfd *memfd, const struct ms_pageset *dirty,
		     struct ms_layered *parent, struct ms_dedup_result *out)
{
	memset(out, 0, sizeof(*out));
	out->keep = ms_pageset_new();
	out->empty = ms_pageset_new();
	if (!out->keep || !out->empty) {
		ms_dedup_result_fini(out);
		return -ENOMEM;
	}
	struct ms_compare_ctx c = {
		.dirty = dirty,
		.parent = parent,
		.parent_header = parent ? ms_layered_header(parent) : NULL,
		.out = out,
		.pages = ms_memfd_size(memfd) / P,
	};
	int err = ms_memfd_with_mapping(memfd, ms_compare_fn, &c);
	ms_header_ref_unref(c.parent_header);
	if (err)
		ms_dedup_result_fini(out);
	return err;
}

/* ---- drain ---- */

struct ms_drain_ctx {
	const struct ms_pageset *keep;
	int fd;
	uint64_t pages;
	uint64_t written;
};

/* Writes iov[0..count) fully at offset, advancing over short writes. */
static int ms_pwritev_all(int fd, struct iovec *iov, int count, off_t offset, uint64_t *written)
{
	while (count > 0) {
		ssize_t n = pwritev(fd, iov, count, offset);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		offset += n;
		*written += (uint64_t)n;
		while (count > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			count--;
		}
		if (count > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int ms_drain_fn(void *ctx, const uint8_t *mapping)
{
	struct ms_drain_ctx *c = ctx;
	struct iovec iov[64];
	int count = 0;
	off_t batch_offset = 0;
	uint64_t pending = 0;
	uint64_t cursor = 0, start, len;
	while (ms_pageset_next_run(c->keep, &cursor, &start, &len)) {
		if (start + len > c->pages)
			return -ERANGE;
		/* runs are not merged across gaps: each is one iovec, at most 1 GiB */
		for (uint64_t done = 0; done < len;) {
			uint64_t n = len - done > (1u << 18) ? (1u << 18) : len - done;
			iov[count].iov_base = (void *)(mapping + (start + done) * P);
			iov[count].iov_len = n * P;
			count++;
			pending += n * P;
			done += n;
			if (count == 64) {
				int err = ms_pwritev_all(c->fd, iov, count, batch_offset,
							 &c->written);
				if (err)
					return err;
				batch_offset += (off_t)pending;
				pending = 0;
				count = 0;
			}
		}
	}
	if (count)
		return ms_pwritev_all(c->fd, iov, count, batch_offset, &c->written);
	return 0;
}

int ms_dedup_drain(struct ms_memfd *memfd, const struct ms_pageset *keep, const char *path,
		   uint64_t *written)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	struct ms_drain_ctx c = {.keep = keep, .fd = fd, .pages = ms_memfd_size(memfd) / P};
	int err = ms_memfd_with_mapping(memfd, ms_drain_fn, &c);
	if (!err && fsync(fd))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (err) {
		unlink(path); /* never leave a partial diff */
		return err;
	}
	if (written)
		*written = c.written;
	return 0;
}
