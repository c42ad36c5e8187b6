/*
 * fc_handler.c - a userfaultfd page-fault handler written from Firecracker's
 * documentation (docs/snapshotting/handling-page-faults-on-snapshot-resume.md),
 * not from memsnap's page server: it links nothing of memsnap, so it can only
 * depend on what Firecracker's protocol promises.
 *
 *   fc_handler SOCKET MEMFILE
 *
 * What the protocol promises, and all this handler relies on:
 *  1. The handler binds and listens on a unix stream socket; the VMM connects.
 *  2. The VMM sends ONE message: a JSON array of regions
 *     {base_host_virt_addr, size, offset, page_size} with the uffd as SCM_RIGHTS.
 *     Nothing else is ever sent. The handler takes the first fd and nothing
 *     more (extra fds are closed unread).
 *  3. The handler privately maps the memory file and answers each MISSING fault
 *     with UFFDIO_COPY of one page from MEMFILE + region.offset + (addr - base);
 *     EEXIST means already mapped; UFFD_EVENT_REMOVE ranges read as zero after.
 *  4. Firecracker never closes the socket while it lives (it forgets it), so
 *     the handler treats a hang-up as "the VMM is gone" and exits, the way the
 *     documentation's liveness advice (SO_PEERCRED, kill the VMM if we die) ties
 *     the handler's life to the VMM's.
 *
 * On exit (hang-up, SIGTERM or an error) it prints one line to stdout:
 *   "fc_handler: faults F copied C eexist E zero Z removes R exit REASON"
 * Exit status 0 unless the handshake or an ioctl failed (then 1).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REGIONS 16
#define MAX_REMOVED 64

struct region {
	uint64_t base, size, offset;
};

static struct region regions[MAX_REGIONS];
static int region_count;
static uint64_t page_size = 4096;
static struct {
	uint64_t start, end;
} removed[MAX_REMOVED];
static int removed_count;
static unsigned long long faults, copied, eexist, zeroed, removes;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static void report(const char *reason, int rc)
{
	printf("fc_handler: faults %llu copied %llu eexist %llu zero %llu removes %llu exit %s\n",
	       faults, copied, eexist, zeroed, removes, reason);
	fflush(stdout);
	exit(rc);
}

/* The unsigned number after "KEY": in [obj, end), or false when the key is absent. */
static bool json_u64(const char *obj, const char *end, const char *key, uint64_t *out)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	size_t plen = strlen(pattern);
	for (const char *p = obj; p + plen < end; p++) {
		if (memcmp(p, pattern, plen) != 0)
			continue;
		p += plen;
		while (p < end && (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n'))
			p++;
		char *stop_at;
		errno = 0;
		unsigned long long v = strtoull(p, &stop_at, 10);
		if (errno || stop_at == p || stop_at > end)
			return false;
		*out = v;
		return true;
	}
	return false;
}

/* Parses the region list (one object per region). */
static bool parse_regions(const char *json, size_t len)
{
	const char *p = json, *end = json + len;
	while ((p = memchr(p, '{', (size_t)(end - p))) != NULL) {
		const char *close = memchr(p, '}', (size_t)(end - p));
		if (!close || region_count == MAX_REGIONS)
			return false;
		struct region *r = &regions[region_count];
		uint64_t ps;
		if (!json_u64(p, close, "base_host_virt_addr", &r->base) ||
		    !json_u64(p, close, "size", &r->size) ||
		    !json_u64(p, close, "offset", &r->offset))
			return false;
		if (json_u64(p, close, "page_size", &ps))
			page_size = ps;
		region_count++;
		p = close + 1;
	}
	return region_count > 0 && (page_size == 4096 || page_size == (2u << 20));
}

static bool is_removed(uint64_t addr)
{
	for (int i = 0; i < removed_count; i++)
		if (addr >= removed[i].start && addr < removed[i].end)
			return true;
	return false;
}

/* Serves one MISSING fault: true when done (or to be retried later: EAGAIN). */
static bool serve(int uffd, const uint8_t *image, uint64_t image_size, uint64_t addr)
{
	uint64_t dst = addr & ~(page_size - 1);
	for (int i = 0; i < region_count; i++) {
		const struct region *r = &regions[i];
		if (dst < r->base || dst >= r->base + r->size)
			continue;
		if (is_removed(dst)) {
			struct uffdio_zeropage z = {.range = {.start = dst, .len = page_size}};
			if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0)
				zeroed++;
			else if (errno == EEXIST)
				eexist++;
			else if (errno != EAGAIN)
				return false;
			return true;
		}
		uint64_t src = r->offset + (dst - r->base);
		if (src + page_size > image_size)
			return false;
		struct uffdio_copy c = {.dst = dst,
					.src = (uint64_t)(uintptr_t)(image + src),
					.len = page_size,
					.mode = 0};
		if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
			copied++;
		} else if (errno == EEXIST) {
			/* already mapped; the kernel woke nobody for this copy */
			eexist++;
			struct uffdio_range w = {.start = dst, .len = page_size};
			ioctl(uffd, UFFDIO_WAKE, &w);
		} else if (errno != EAGAIN) {
			return false;
		}
		return true;
	}
	return false; /* outside every region */
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: fc_handler SOCKET MEMFILE\n");
		return 2;
	}
	signal(SIGTERM, on_term);
	signal(SIGPIPE, SIG_IGN);
	int file = open(argv[2], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (file < 0 || fstat(file, &st) || st.st_size == 0) {
		perror(argv[2]);
		return 1;
	}
	const uint8_t *image = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, file, 0);
	if (image == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", argv[1]);
	unlink(argv[1]);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(listener, 1)) {
		perror(argv[1]);
		return 1;
	}
	/* the documentation asks for a timeout while waiting for the VMM */
	struct pollfd lp = {.fd = listener, .events = POLLIN};
	if (poll(&lp, 1, 60000) != 1)
		report("no-connection", 1);
	int stream = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	if (stream < 0)
		report("accept", 1);

	/* the one message: JSON and (at least) the uffd */
	char json[4096];
	char control[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = json, .iov_len = sizeof(json) - 1};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct pollfd sp = {.fd = stream, .events = POLLIN};
	if (poll(&sp, 1, 30000) != 1)
		report("no-handshake", 1);
	ssize_t n = recvmsg(stream, &msg, MSG_CMSG_CLOEXEC);
	if (n <= 0)
		report("handshake-recv", 1);
	int uffd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int fds[4];
		memcpy(fds, CMSG_DATA(c), (size_t)(nfds < 4 ? nfds : 4) * sizeof(int));
		for (int i = 0; i < nfds && i < 4; i++) {
			if (uffd < 0)
				uffd = fds[i];
			else
				close(fds[i]); /* not part of Firecracker's protocol */
		}
	}
	json[n] = '\0';
	if (uffd < 0 || !parse_regions(json, (size_t)n))
		report("bad-handshake", 1);
	uint64_t total = 0;
	for (int i = 0; i < region_count; i++)
		total += regions[i].size;
	if (total != (uint64_t)st.st_size) /* Firecracker's example asserts the same */
		report("size-mismatch", 1);

	struct pollfd pf[2] = {{.fd = uffd, .events = POLLIN},
			       {.fd = stream, .events = POLLIN | POLLRDHUP}};
	uint64_t deferred[64];
	int ndeferred = 0;
	while (!stop) {
		int r = poll(pf, 2, ndeferred ? 1 : 200);
		if (r < 0 && errno != EINTR)
			report("poll", 1);
		if (pf[1].revents & (POLLHUP | POLLRDHUP | POLLERR))
			report("vmm-hangup", 0);
		if (pf[1].revents & POLLIN) {
			char junk[256];
			if (recv(stream, junk, sizeof(junk), MSG_DONTWAIT) == 0)
				report("vmm-hangup", 0);
			report("unexpected-message", 1); /* the protocol sends nothing more */
		}
		/* retry faults deferred by EAGAIN (a REMOVE was pending) */
		int keep = 0;
		for (int i = 0; i < ndeferred; i++) {
			uint64_t before = copied + eexist + zeroed;
			if (!serve(uffd, image, (uint64_t)st.st_size, deferred[i]))
				report("ioctl", 1);
			if (copied + eexist + zeroed == before)
				deferred[keep++] = deferred[i];
		}
		ndeferred = keep;
		struct uffd_msg events[16];
		ssize_t got = read(uffd, events, sizeof(events));
		if (got < 0 && errno != EAGAIN && errno != EINTR)
			report("read", 1);
		for (ssize_t i = 0; got > 0 && i < got / (ssize_t)sizeof(events[0]); i++) {
			struct uffd_msg *e = &events[i];
			if (e->event == UFFD_EVENT_REMOVE) {
				removes++;
				if (removed_count < MAX_REMOVED) {
					removed[removed_count].start = e->arg.remove.start;
					removed[removed_count].end = e->arg.remove.end;
					removed_count++;
				}
				continue;
			}
			if (e->event != UFFD_EVENT_PAGEFAULT)
				continue;
			faults++;
			uint64_t before = copied + eexist + zeroed;
			if (!serve(uffd, image, (uint64_t)st.st_size, e->arg.pagefault.address))
				report("ioctl", 1);
			if (copied + eexist + zeroed == before && ndeferred < 64)
				deferred[ndeferred++] = e->arg.pagefault.address;
		}
	}
	report("sigterm", 0);
}
