/*
 * fault_client.c - the VMM side for test_examples.sh: a child that maps SIZE_MIB of guest
 * memory, registers it with userfaultfd and sends Firecracker's handshake to SOCKET
 * (tests/uffd/uffd_test_util), then reads every page and compares it with the image
 * examples/pageserver_source.c serves (the same formula, written again here as the
 * test's model). Exit 0: every page right; 1: a wrong page or an error; 77: no
 * userfaultfd here.
 */
#include "uffd/uffd_test_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t model_word(uint64_t offset)
{
	return (offset / 4096) % 8 == 7 ? 0 : (offset + 1) * 0x9e3779b97f4a7c15ull;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: fault_client SOCKET SIZE_MIB\n");
		return 2;
	}
	uint64_t size = strtoull(argv[2], NULL, 10) << 20;
	uint8_t *image = malloc(size);
	if (!size || !image)
		return 1;
	for (uint64_t off = 0; off < size; off += 8) {
		uint64_t word = model_word(off);
		memcpy(image + off, &word, 8);
	}
	struct fc_child_cfg cfg = {
	    .sock_path = argv[1], .size = size, .page_size = 4096, .regions = 1, .source = image};
	struct fc_child child;
	int err = fc_child_start(&cfg, &child);
	if (err == -EPERM || err == -ENOSYS) {
		printf("SKIP: userfaultfd is not available here (%s)\n", strerror(-err));
		return 77;
	}
	if (err) {
		fprintf(stderr, "fault_client: the VMM child did not start: %s\n", strerror(-err));
		return 1;
	}
	int64_t bad = fc_child_cmd(&child, FC_READ_CHECK, 0, size, 0, 60000);
	fc_child_exit(&child);
	free(image);
	printf("fault_client: %" PRIu64 " pages read, %" PRId64 " wrong\n", size / 4096, bad);
	return bad == 0 ? 0 : 1;
}
