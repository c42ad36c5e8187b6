/*
 * pageserver_source.c - a userfaultfd page server over a memory image that this program
 * computes itself, built against the installed libmemsnap-uffd:
 *
 *   cc -o pageserver_source pageserver_source.c $(pkg-config --cflags --libs memsnap-uffd)
 *   ./pageserver_source /tmp/vm.uffd 64
 *
 * then start a VMM whose memory backend is that socket (Firecracker's "Uffd" backend,
 * mem_backend.backend_path); every page the guest touches is read from pattern_read().
 * It serves one VMM, prints what it served and exits: 0 when the VMM went away cleanly.
 *
 * The image: each 8-byte word at offset o holds memsnap_example_word(o); one page in
 * eight is zeros (a real source would read a file, a device or the network instead).
 */
#include <memsnap/pageserver.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096u

static uint64_t memsnap_example_word(uint64_t offset)
{
	if ((offset / PAGE) % 8 == 7)
		return 0;
	return (offset + 1) * 0x9e3779b97f4a7c15ull;
}

struct image {
	uint64_t size;
};

static int pattern_read(void *ctx, void *dst, uint64_t offset, size_t len)
{
	const struct image *img = ctx;
	if (offset > img->size || len > img->size - offset || offset % 8 || len % 8)
		return -EINVAL;
	uint8_t *out = dst;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t word = memsnap_example_word(offset + i);
		memcpy(out + i, &word, 8);
	}
	return 0;
}

static uint64_t pattern_size(void *ctx)
{
	return ((const struct image *)ctx)->size;
}

static void log_line(void *ctx, enum memsnap_log_level level, const char *module,
		     const char *message)
{
	(void)ctx;
	if (level <= MEMSNAP_LOG_WARN)
		fprintf(stderr, "pageserver_source: [%s] %s\n", module, message);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: pageserver_source SOCKET SIZE_MIB\n");
		return 2;
	}
	struct image img = {.size = strtoull(argv[2], NULL, 10) << 20};
	if (img.size == 0) {
		fprintf(stderr, "pageserver_source: SIZE_MIB must be a positive number\n");
		return 2;
	}
	memsnap_log_set_sink(log_line, NULL);
	const struct memsnap_page_source source = {.read = pattern_read, .size = pattern_size};
	int err;
	memsnap_pageserver *server = memsnap_pageserver_new(argv[1], &source, &img, NULL, &err);
	if (!server) {
		fprintf(stderr, "pageserver_source: %s: %s\n", argv[1], memsnap_strerror(err));
		return 1;
	}
	printf("listening on %s (%" PRIu64 " MiB)\n", argv[1], img.size >> 20);
	fflush(stdout);
	memsnap_session *session;
	err = memsnap_pageserver_next_session(server, 60 * 1000000000ll, &session);
	if (!err) {
		err = memsnap_session_wait(session, -1);
		printf("served %" PRIu64 " pages for %" PRIu64 " faults: %s\n",
		       memsnap_session_pages_served(session), memsnap_session_faults(session),
		       memsnap_strerror(err));
		memsnap_session_free(session);
	} else {
		fprintf(stderr, "pageserver_source: no VMM came: %s\n", memsnap_strerror(err));
	}
	memsnap_pageserver_free(server);
	return err ? 1 : 0;
}
