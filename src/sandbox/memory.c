/* memory.c - the written-page tracker, the handshake's VMM side, image fill (memory.h). */
#include "sandbox/memory.h"
#include "uffd/handshake.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif

int ms_guestmem_uffd(uint64_t base, uint64_t size, bool lazy)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		return -errno;
	struct uffdio_api api = {
	    .api = UFFD_API,
	    .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
			UFFD_FEATURE_WP_UNPOPULATED | (lazy ? UFFD_FEATURE_EVENT_REMOVE : 0)};
	if (ioctl(uffd, UFFDIO_API, &api)) {
		int err = errno == EINVAL ? -ENOTSUP : -errno;
		close(uffd);
		return err;
	}
	struct uffdio_register reg = {.range = {.start = base, .len = size},
				      .mode = UFFDIO_REGISTER_MODE_WP |
					      (lazy ? UFFDIO_REGISTER_MODE_MISSING : 0)};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		int err = -errno;
		close(uffd);
		return err;
	}
	return uffd;
}

int ms_guestmem_protect(int uffd, uint64_t base, uint64_t size)
{
	struct uffdio_writeprotect wp = {.range = {.start = base, .len = size},
					 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

int ms_guestmem_scan(int pagemap, uint64_t base, uint64_t size, bool reset, struct ms_pageset *set)
{
	struct page_region regions[256];
	uint64_t start = base, end = base + size;
	while (start < end) {
		struct pm_scan_arg arg = {
		    .size = sizeof(arg),
		    .flags = PM_SCAN_CHECK_WPASYNC | (reset ? PM_SCAN_WP_MATCHING : 0),
		    .start = start,
		    .end = end,
		    .vec = (uint64_t)(uintptr_t)regions,
		    .vec_len = 256,
		    .category_mask = PAGE_IS_WRITTEN,
		    .return_mask = PAGE_IS_WRITTEN,
		};
		long n = ioctl(pagemap, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return errno == EINVAL || errno == ENOTTY ? -ENOTSUP : -errno;
		for (long i = 0; i < n; i++)
			ms_pageset_add_range(set, (regions[i].start - base) / 4096,
					     (regions[i].end - base) / 4096);
		/* complete when the vector was not filled (walk_end can come back short) */
		if (n < 256)
			break;
		start = regions[n - 1].end;
	}
	return 0;
}

int ms_guestmem_send_fds(int sock, const void *payload, size_t len, const int *fds, int nfds)
{
	char control[CMSG_SPACE(2 * sizeof(int))];
	memset(control, 0, sizeof(control));
	struct iovec iov = {.iov_base = (void *)payload, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int))};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	return sendmsg(sock, &msg, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -EIO;
}

int ms_guestmem_handshake(const char *socket_path, uint64_t base, uint64_t size, int uffd,
			  int memfd)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(socket_path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, socket_path, strlen(socket_path) + 1);
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	char json[256];
	struct ms_uffd_region region = {.base = base, .size = size, .offset = 0};
	int n = ms_uffd_handshake_format(json, sizeof(json), &region, 1, MS_UFFD_PAGE_4K);
	int fds[2] = {uffd, memfd};
	int err = 0;
	if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)))
		err = -errno;
	else
		err = ms_guestmem_send_fds(sock, json, (size_t)n, fds, 2);
	if (err) {
		close(sock);
		return err;
	}
	return sock;
}

int ms_guestmem_fill(int dst, int src, uint64_t size)
{
	loff_t in = 0;
	while ((uint64_t)in < size) {
		ssize_t n = copy_file_range(src, &in, dst, NULL, size - (uint64_t)in, 0);
		if (n > 0)
			continue;
		if (n == 0)
			return -EIO; /* the image is shorter than the memory */
		if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS)
			return -errno;
		char *buf = malloc(1 << 20);
		if (!buf)
			return -ENOMEM;
		int err = 0;
		while (!err && (uint64_t)in < size) {
			size_t want =
			    size - (uint64_t)in < (1 << 20) ? size - (uint64_t)in : (1 << 20);
			ssize_t got = pread(src, buf, want, in);
			if (got <= 0)
				err = got < 0 ? -errno : -EIO;
			else if (pwrite(dst, buf, (size_t)got, in) != got)
				err = -EIO;
			else
				in += got;
		}
		free(buf);
		return err;
	}
	return 0;
}
