/*
 * node_fixture.h - a memsnapd node in-process for the unit tests of its parts
 * (templates.c, sandboxes.c), driven through node_int.h, not through HTTP.
 *
 * Each node gets its own cache and run dirs under one temporary directory;
 * nodes made by one fixture share its file store, as a fleet shares a bucket.
 */
#ifndef MS_TESTS_NODE_FIXTURE_H
#define MS_TESTS_NODE_FIXTURE_H

#include "ms_test.h"
#include "node/node_int.h"

#define NF_MEM (8u << 20)

struct node_fixture {
	char *dir;
	const char *backend; /* "proc", "kvm" (argv[1]) */
	unsigned nodes;	     /* made so far: names their dirs */
};

/* cmocka setup/teardown: a fixture in *state over a fresh temporary directory. */
int nf_setup(void **state);
int nf_teardown(void **state);
/* Runs the group on the backend argv[1] names (default proc; skips where it cannot run). */
int nf_main(int argc, char **argv, const struct CMUnitTest *tests, size_t count);
/* A node of this fixture; tweak (may be NULL) edits its config first. Fails the test on error. */
struct ms_node *nf_node_new(struct node_fixture *f, void (*tweak)(struct ms_node_config *cfg));
/* Shuts the node down and frees it; fails the test if an upload did not finish. */
void nf_node_free(struct ms_node *node);
/* A sandbox record (not in the node's table: the API's create inserts it). */
struct ms_node_sandbox *nf_sandbox_new(struct ms_node *node);
/* Tears the sandbox down (VM, page server, template) and drops it. */
void nf_sandbox_free(struct ms_node_sandbox *sb);
/* A fresh pattern guest filled with (seed, epoch). */
void nf_start_filled(struct ms_node_sandbox *sb, uint64_t seed, uint64_t epoch);
/* Pauses sb; returns the build id. */
ms_uuid nf_pause(struct ms_node_sandbox *sb);
/* Resumes build into sb with exec (NULL: none); returns the error (0 or negative). */
int nf_resume(struct ms_node_sandbox *sb, const ms_uuid *build, const struct ms_api_exec *exec);
/* The guest's verify of (seed, epoch) after a resume of build: 0 mismatched pages. */
void nf_resume_verify(struct ms_node_sandbox *sb, const ms_uuid *build, uint64_t seed,
		      uint64_t epoch);
/* The cached template of id with a reference, or NULL. */
struct ms_template *nf_cached(struct ms_node *node, const ms_uuid *id);
/* Waits until the node recorded the end of id's pipeline; returns its error. */
int nf_wait_done(struct ms_node *node, const ms_uuid *id);

#endif
