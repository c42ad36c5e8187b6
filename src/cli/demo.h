/*
 * demo.h - what the three "memsnap demo" commands share (demo_chain.c, demo_resume.c,
 * demo_sandbox.c): options, a work directory with two "nodes", simulated guest memory and
 * publishing a layer the way a pause does.
 */
#ifndef MS_CLI_DEMO_H
#define MS_CLI_DEMO_H

#include "header/header.h"
#include "storage/store.h"
#include "util/uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Options of the demos; which ones a command takes is its "letters" string (demo.c). */
struct ms_demo_opts {
	const char *store_uri; /* --store URI (required), 's' */
	const char *endpoint;  /* --endpoint URL, 'e' */
	const char *backend;   /* --backend auto|kvm|proc, 'b' */
	uint64_t mib;	       /* --mem MIB (1..4096), 'm' */
	uint64_t layers;       /* --layers N (1..64), 'l' */
	double stall;	       /* --stall SECONDS (0..600), 't' */
};

/*
 * Parses argv for the options named in letters (defaults already in *o); --help prints help.
 * true: run the command; false: return *rc (0 after --help, 2 on a usage error, usage printed).
 */
bool ms_demo_parse(int argc, char **argv, const char *letters, const char *help, const char *usage,
		   struct ms_demo_opts *o, int *rc);

/* A work directory "/tmp/memsnap-demo-NAME.XXXXXX" with node-a/, node-b/ and a socket path. */
struct ms_demo_work {
	char dir[64];
	char node_a[128], node_b[128], sock[128];
};
/* 0 or a negative errno. */
int ms_demo_work_init(struct ms_demo_work *w, const char *name);
/* Removes the whole directory; 0, or -1 when that failed. */
int ms_demo_work_fini(struct ms_demo_work *w);

/* A page of content seed (0: zeros). */
void ms_demo_fill(uint8_t *page, uint32_t seed);
/* xorshift64 */
uint64_t ms_demo_rng(uint64_t *state);

struct ms_demo_layer {
	ms_uuid id;
	struct ms_header *header;
	uint32_t *model; /* per page: content seed, 0 = zeros */
};

/*
 * A layer whose every page of pages is in the diff (the model's zero pages too): its header
 * over the nil build, in layer->header. 0 or -ENOMEM.
 */
int ms_demo_base_header(struct ms_demo_layer *layer, uint64_t pages);
/*
 * Publishes one layer the way a pause does: data (zstd frames when compress), then the
 * header (format version). *stored: the bytes of data stored.
 */
int ms_demo_publish(struct ms_store *store, struct ms_demo_layer *layer, const uint8_t *data,
		    size_t len, bool compress, uint64_t version, size_t *stored);

struct ms_layered;
struct ms_pageserver;
/* The demos' page server over file at sock (4 workers, 64 KiB blocks); NULL with *err. */
struct ms_pageserver *ms_demo_pageserver(const char *sock, struct ms_layered *file, int *err);

#endif
