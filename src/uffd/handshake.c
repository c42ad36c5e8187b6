/*
 * handshake.c - Firecracker's uffd handshake: JSON region list + SCM_RIGHTS fds.
 *
 * The parser (ms_uffd_handshake_parse) is pure: bytes in, validated regions
 * out, no I/O, so it can be fuzzed directly. The receiver reads the one
 * message Firecracker sends; it has no fixed size limit below
 * MS_UFFD_HANDSHAKE_MAX because a large JSON may arrive in several socket
 * buffers (the fds ride on the first).
 *
 * Invariants:
 *  1. Every fd received is either returned to the caller or closed.
 *  2. Nothing returned on error; *out of the parser is zeroed on error.
 */
#include "uffd/handshake.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MS_UFFD_MAX_U53 (1ULL << 53)
/* Control-message room: more than 2 fds is rejected, up to this many are closed cleanly. */
#define MS_UFFD_RECV_FDS 8
/* Quiet time after some bytes that ends a partial (hence malformed) message. */
#define MS_UFFD_RECV_GRACE_NS (200 * MS_NSEC_PER_MSEC)

static int ms_uffd_json_u64(const cJSON *obj, const char *key, bool required, uint64_t *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!item) {
		if (required) {
			ms_warn("uffd", "handshake: region without \"%s\"", key);
			return MS_EPROTO;
		}
		return -ENOENT;
	}
	if (!cJSON_IsNumber(item)) {
		ms_warn("uffd", "handshake: \"%s\" is not a number", key);
		return MS_EPROTO;
	}
	double value = item->valuedouble;
	if (!(value >= 0) || value >= (double)MS_UFFD_MAX_U53 || value != (double)(uint64_t)value) {
		ms_warn("uffd", "handshake: \"%s\" is not an integer in [0, 2^53)", key);
		return MS_EPROTO;
	}
	*out = (uint64_t)value;
	return 0;
}

static int ms_uffd_region_cmp_base(const void *a, const void *b)
{
	const struct ms_uffd_region *ra = a, *rb = b;
	return ra->base < rb->base ? -1 : ra->base > rb->base;
}

static int ms_uffd_region_cmp_offset(const void *a, const void *b)
{
	const struct ms_uffd_region *ra = a, *rb = b;
	return ra->offset < rb->offset ? -1 : ra->offset > rb->offset;
}

/* Parses one region object; *page_size is its page size. */
static int ms_uffd_parse_region(const cJSON *obj, struct ms_uffd_region *region,
				uint64_t *page_size)
{
	if (!cJSON_IsObject(obj)) {
		ms_warn("uffd", "handshake: region is not an object");
		return MS_EPROTO;
	}
	int err;
	if ((err = ms_uffd_json_u64(obj, "base_host_virt_addr", true, &region->base)) ||
	    (err = ms_uffd_json_u64(obj, "size", true, &region->size)) ||
	    (err = ms_uffd_json_u64(obj, "offset", true, &region->offset)))
		return err;
	uint64_t ps = 0, ps_kib = 0;
	int has_ps = ms_uffd_json_u64(obj, "page_size", false, &ps);
	int has_kib = ms_uffd_json_u64(obj, "page_size_kib", false, &ps_kib);
	if ((has_ps && has_ps != -ENOENT) || (has_kib && has_kib != -ENOENT))
		return MS_EPROTO;
	if (has_ps == 0 && has_kib == 0 && ps != ps_kib) {
		ms_warn("uffd", "handshake: page_size %llu != page_size_kib %llu",
			(unsigned long long)ps, (unsigned long long)ps_kib);
		return MS_EPROTO;
	}
	*page_size = has_ps == 0 ? ps : has_kib == 0 ? ps_kib : MS_UFFD_PAGE_4K;
	if (*page_size != MS_UFFD_PAGE_4K && *page_size != MS_UFFD_PAGE_2M) {
		ms_warn("uffd", "handshake: page size %llu is neither 4 KiB nor 2 MiB",
			(unsigned long long)*page_size);
		return MS_EPROTO;
	}
	return 0;
}

static int ms_uffd_validate(struct ms_uffd_region *regions, size_t count, uint64_t page_size,
			    uint64_t image_size)
{
	for (size_t i = 0; i < count; i++) {
		const struct ms_uffd_region *r = &regions[i];
		if (r->size == 0 || r->base % page_size || r->size % page_size ||
		    r->offset % page_size) {
			ms_warn("uffd", "handshake: region %zu not aligned to %llu or empty", i,
				(unsigned long long)page_size);
			return MS_EPROTO;
		}
		/* All three are < 2^53, so the sums cannot overflow 64 bits. */
		if (r->offset + r->size > image_size) {
			ms_warn(
			    "uffd",
			    "handshake: region %zu [%llu, +%llu) beyond the memory image (%llu)", i,
			    (unsigned long long)r->offset, (unsigned long long)r->size,
			    (unsigned long long)image_size);
			return MS_EPROTO;
		}
	}
	qsort(regions, count, sizeof(*regions), ms_uffd_region_cmp_offset);
	for (size_t i = 1; i < count; i++) {
		if (regions[i - 1].offset + regions[i - 1].size > regions[i].offset) {
			ms_warn("uffd", "handshake: regions overlap in the memory image");
			return MS_EPROTO;
		}
	}
	qsort(regions, count, sizeof(*regions), ms_uffd_region_cmp_base);
	for (size_t i = 1; i < count; i++) {
		if (regions[i - 1].base + regions[i - 1].size > regions[i].base) {
			ms_warn("uffd", "handshake: regions overlap in the address space");
			return MS_EPROTO;
		}
	}
	return 0;
}

int ms_uffd_handshake_parse(const char *text, size_t len, uint64_t image_size,
			    struct ms_uffd_handshake *out)
{
	memset(out, 0, sizeof(*out));
	if (!text || len == 0 || len > MS_UFFD_HANDSHAKE_MAX) {
		ms_warn("uffd", "handshake: empty or oversized message (%zu bytes)", len);
		return MS_EPROTO;
	}
	int err = MS_EPROTO;
	struct ms_uffd_region *regions = NULL;
	cJSON *root = cJSON_ParseWithLength(text, len);
	if (!root) {
		ms_warn("uffd", "handshake: not valid JSON");
		goto fail_parse;
	}
	if (!cJSON_IsArray(root)) {
		ms_warn("uffd", "handshake: JSON is not an array");
		goto fail_root;
	}
	int count = cJSON_GetArraySize(root);
	if (count < 1 || count > MS_UFFD_MAX_REGIONS) {
		ms_warn("uffd", "handshake: %d regions (1..%d allowed)", count,
			MS_UFFD_MAX_REGIONS);
		goto fail_root;
	}
	regions = calloc((size_t)count, sizeof(*regions));
	if (!regions) {
		err = -ENOMEM;
		goto fail_root;
	}
	uint64_t page_size = 0;
	size_t i = 0;
	const cJSON *item;
	cJSON_ArrayForEach(item, root)
	{
		uint64_t ps;
		err = ms_uffd_parse_region(item, &regions[i], &ps);
		if (err)
			goto fail_regions;
		if (page_size && ps != page_size) {
			ms_warn("uffd", "handshake: regions disagree on the page size");
			err = MS_EPROTO;
			goto fail_regions;
		}
		page_size = ps;
		i++;
	}
	err = ms_uffd_validate(regions, (size_t)count, page_size, image_size);
	if (err)
		goto fail_regions;
	cJSON_Delete(root);
	out->regions = regions;
	out->region_count = (size_t)count;
	out->page_size = page_size;
	return 0;

fail_regions:
	free(regions);
fail_root:
	cJSON_Delete(root);
fail_parse:
	return err;
}

void ms_uffd_handshake_fini(struct ms_uffd_handshake *hs)
{
	free(hs->regions);
	memset(hs, 0, sizeof(*hs));
}

/* Checks that fd is a userfaultfd through its /proc link ("anon_inode:[userfaultfd]"). */
static bool ms_uffd_fd_is_userfaultfd(int fd)
{
	char path[64], link[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = '\0';
	return strcmp(link, "anon_inode:[userfaultfd]") == 0;
}

static void ms_uffd_close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* Collects SCM_RIGHTS fds from msg into fds[*nfds..]; MS_EPROTO when more than room. */
static int ms_uffd_take_fds(struct msghdr *msg, int *fds, int *nfds, int room)
{
	int err = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *data = (int *)CMSG_DATA(c);
		for (size_t k = 0; k < n; k++) {
			int fd;
			memcpy(&fd, &data[k], sizeof(fd));
			if (*nfds < room)
				fds[(*nfds)++] = fd;
			else {
				close(fd);
				err = MS_EPROTO;
			}
		}
	}
	if (msg->msg_flags & MSG_CTRUNC)
		err = MS_EPROTO; /* the kernel dropped fds it had no room for */
	return err;
}

/* Grows *buf (NUL room included) to want bytes; MS_ETOOBIG past MS_UFFD_HANDSHAKE_MAX. */
static int ms_uffd_buf_grow(char **buf, size_t *cap, size_t want)
{
	if (want > MS_UFFD_HANDSHAKE_MAX)
		return MS_ETOOBIG;
	char *grown = realloc(*buf, want + 1);
	if (!grown)
		return -ENOMEM;
	*buf = grown;
	*cap = want;
	return 0;
}

static bool ms_uffd_json_complete(const char *text, size_t len)
{
	cJSON *root = cJSON_ParseWithLength(text, len);
	if (!root)
		return false;
	cJSON_Delete(root);
	return true;
}

int ms_uffd_handshake_recv(int conn, int64_t timeout_ns, char **text, size_t *len, int fds[2],
			   int *nfds)
{
	int got[MS_UFFD_RECV_FDS + 1];
	int ngot = 0, err = 0;
	size_t cap = 4096, used = 0;
	char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	int64_t deadline = ms_clock_now_ns() + timeout_ns;
	bool peer_closed = false;
	for (;;) {
		int64_t now = ms_clock_now_ns();
		if (now >= deadline) {
			err = used ? 0 : -ETIMEDOUT;
			break;
		}
		int64_t wait_ns = deadline - now;
		if (used && wait_ns > MS_UFFD_RECV_GRACE_NS)
			wait_ns = MS_UFFD_RECV_GRACE_NS;
		struct pollfd pfd = {.fd = conn, .events = POLLIN};
		int rc = poll(&pfd, 1, (int)((wait_ns + MS_NSEC_PER_MSEC - 1) / MS_NSEC_PER_MSEC));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			err = -errno;
			break;
		}
		if (rc == 0) {
			if (used)
				break; /* quiet after some bytes: parse what we have */
			continue;
		}
		/* Room for what is queued (FIONREAD), or twice the room once it is full. */
		int avail = 0;
		size_t want = cap;
		if (ioctl(conn, FIONREAD, &avail) == 0 && avail > 0 && used + (size_t)avail > cap)
			want = used + (size_t)avail;
		else if (used == cap)
			want = cap >= MS_UFFD_HANDSHAKE_MAX	 ? MS_UFFD_HANDSHAKE_MAX + 1
			       : cap * 2 > MS_UFFD_HANDSHAKE_MAX ? MS_UFFD_HANDSHAKE_MAX
								 : cap * 2;
		if (want > cap && (err = ms_uffd_buf_grow(&buf, &cap, want)))
			break;
		union {
			char raw[CMSG_SPACE(MS_UFFD_RECV_FDS * sizeof(int))];
			struct cmsghdr align;
		} control;
		struct iovec iov = {.iov_base = buf + used, .iov_len = cap - used};
		struct msghdr msg = {.msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = control.raw,
				     .msg_controllen = sizeof(control.raw)};
		ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			err = -errno;
			break;
		}
		int fd_err = ms_uffd_take_fds(&msg, got, &ngot, MS_UFFD_RECV_FDS + 1);
		if (fd_err) {
			err = fd_err;
			break;
		}
		if (n == 0) {
			peer_closed = true;
			break;
		}
		used += (size_t)n;
		if (ms_uffd_json_complete(buf, used))
			break;
	}
	if (!err && used == 0) {
		ms_warn("uffd", "handshake: peer %s before sending anything",
			peer_closed ? "closed" : "went quiet");
		err = MS_EPROTO;
	}
	if (!err && ngot == 0) {
		ms_warn("uffd", "handshake: no fd attached (SCM_RIGHTS with the uffd expected)");
		err = MS_EPROTO;
	}
	if (!err && ngot > 2) {
		ms_warn("uffd", "handshake: %d fds attached (1 or 2 expected)", ngot);
		err = MS_EPROTO;
	}
	if (!err && !ms_uffd_fd_is_userfaultfd(got[0])) {
		ms_warn("uffd", "handshake: first fd is not a userfaultfd");
		err = MS_EPROTO;
	}
	if (!err && ngot == 2) {
		struct stat st;
		if (fstat(got[1], &st) != 0 || !S_ISREG(st.st_mode)) {
			ms_warn("uffd", "handshake: second fd is not a memfd/regular file");
			err = MS_EPROTO;
		}
	}
	if (err) {
		if (err == MS_ETOOBIG)
			ms_warn("uffd", "handshake: message over %u bytes", MS_UFFD_HANDSHAKE_MAX);
		ms_uffd_close_fds(got, ngot);
		free(buf);
		return err;
	}
	buf[used] = '\0';
	*text = buf;
	*len = used;
	fds[0] = got[0];
	fds[1] = ngot == 2 ? got[1] : -1;
	*nfds = ngot;
	return 0;
}

int ms_uffd_handshake_format(char *buf, size_t cap, const struct ms_uffd_region *regions,
			     size_t count, uint64_t page_size)
{
	size_t used = 0;
	for (size_t i = 0; i <= count; i++) {
		int n;
		if (i == count)
			n = snprintf(buf + used, cap - used, "]");
		else
			n = snprintf(
			    buf + used, cap - used,
			    "%s{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu,"
			    "\"page_size\":%llu,\"page_size_kib\":%llu}",
			    i ? "," : "[", (unsigned long long)regions[i].base,
			    (unsigned long long)regions[i].size,
			    (unsigned long long)regions[i].offset, (unsigned long long)page_size,
			    (unsigned long long)page_size);
		if (n < 0 || (size_t)n >= cap - used)
			return -ENOSPC;
		used += (size_t)n;
	}
	return (int)used;
}
