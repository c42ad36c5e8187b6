/* demo_client.c - a Firecracker-like restore client (see demo_client.h). */
#include "cli/demo_client.h"
#include "uffd/handshake.h"
#include "util/clock.h"
#include "util/uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define P 4096

/* The child: never returns. Writes its result to the pipe. */
static void ms_demo_child(const char *socket_path, const uint8_t *expect, uint64_t size, int out)
{
	struct ms_demo_touch result = {0};
	uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
	struct uffdio_register reg = {.range = {.start = (uint64_t)(uintptr_t)mem, .len = size},
				      .mode =
					  UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	if (mem == MAP_FAILED || uffd < 0 || ioctl(uffd, UFFDIO_API, &api) ||
	    ioctl(uffd, UFFDIO_REGISTER, &reg) || sock < 0 ||
	    connect(sock, (struct sockaddr *)&addr, sizeof(addr)))
		_exit(2);
	char json[256];
	struct ms_uffd_region region = {.base = (uint64_t)(uintptr_t)mem, .size = size};
	int n = ms_uffd_handshake_format(json, sizeof(json), &region, 1, MS_UFFD_PAGE_4K);
	char control[CMSG_SPACE(sizeof(int))];
	memset(control, 0, sizeof(control));
	struct iovec iov = {.iov_base = json, .iov_len = (size_t)n};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &uffd, sizeof(int));
	int64_t t0 = ms_clock_now_ns();
	if (sendmsg(sock, &msg, 0) != n)
		_exit(3);
	close(uffd); /* the page server has its own copy; the socket stays open */
	for (uint64_t off = 0; off < size; off += P) {
		result.pages++;
		result.mismatches += memcmp(mem + off, expect + off, P) != 0;
	}
	result.seconds = (double)(ms_clock_now_ns() - t0) / 1e9;
	if (write(out, &result, sizeof(result)) != sizeof(result))
		_exit(4);
	_exit(0);
}

int ms_demo_client_touch(const char *socket_path, const uint8_t *expect, uint64_t size,
			 struct ms_demo_touch *out)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC))
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return err;
	}
	if (pid == 0) {
		close(pipefd[0]);
		ms_demo_child(socket_path, expect, size, pipefd[1]);
	}
	close(pipefd[1]);
	ssize_t got = read(pipefd[0], out, sizeof(*out));
	close(pipefd[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	if (got != (ssize_t)sizeof(*out) || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -EIO;
	return 0;
}
