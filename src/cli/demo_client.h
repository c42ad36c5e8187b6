/*
 * demo_client.h - a stand-in VMM for the demo: a child process that restores
 * guest memory exactly as Firecracker does (anonymous MAP_PRIVATE memory, a
 * userfaultfd with EVENT_REMOVE registered MISSING|WP, one sendmsg of the
 * JSON region list with the uffd) and then touches every page, comparing it
 * with the expected image. Used until the sandbox backends drive resumes.
 */
#ifndef MS_CLI_DEMO_CLIENT_H
#define MS_CLI_DEMO_CLIENT_H

#include <stdint.h>

struct ms_demo_touch {
	uint64_t pages;	     /* pages touched */
	uint64_t mismatches; /* pages that differ from the expected image */
	double seconds;	     /* handshake to last page verified */
};

/* Forks the client against socket_path; 0 with *out filled, or a negative errno. */
int ms_demo_client_touch(const char *socket_path, const uint8_t *expect, uint64_t size,
			 struct ms_demo_touch *out);

#endif
