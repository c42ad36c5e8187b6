/*
 * cmd_fc.c - Firecracker artifacts in and out of a store:
 *   memsnap build import --mem FILE [--diff] [--vmstate FILE] [--parent ID] --store URI
 *   memsnap build export ID --mem FILE --store URI
 *
 * Import turns a Firecracker snapshot's memory file into a layered build over a
 * parent, through the pause pipeline (compare, drain, upload, header), as a
 * pause of a memsnap sandbox would. Firecracker writes guest memory regions
 * back to back in the file, so a file is one device space of its own size.
 *   full file: every page is written (a page equal to the parent's is dropped,
 *     an all-zero page becomes nil);
 *   --diff: the written pages are the file's data extents (SEEK_DATA/SEEK_HOLE,
 *     as Firecracker writes its sparse diff files); holes keep the parent's page.
 * The vmstate (optional) is stored as the build's snapfile object behind a
 * format marker (below), so that no memsnap sandbox takes it for its own
 * snapfile; metadata.json names the format. Both are put before the pipeline
 * starts, so they are in the store before the header (nothing incomplete is
 * published: the header goes last).
 *
 * Export writes the full memory of any build (every layer resolved) to a file
 * a Firecracker `File` memory backend loads; all-zero pages stay holes.
 *
 * Firecracker vmstate snapfile (all integers little-endian):
 *   offset size  field
 *   0      8     magic "MSFCVMST"
 *   8      4     version (1)
 *   12     4     reserved (0)
 *   16     8     vmstate length N
 *   24     8     XXH64 of the vmstate bytes (seed 0)
 *   32     N     the vmstate file's bytes, as Firecracker wrote them
 */
#include "build/buildfile.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "header/header.h"
#include "header/serialize.h"
#include "snapshot/pause.h"
#include "storage/artifact.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/future.h"
#include "util/pageset.h"
#include "util/uuid.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define P		    4096ULL
#define MS_FC_VMSTATE_MAGIC "MSFCVMST"
#define MS_FC_VMSTATE_HDR   32
#define MS_FC_VMSTATE_MAX   (256ULL << 20)

static const char *const import_usage =
    "usage: memsnap build import --mem FILE --store URI [options]\n"
    "\n"
    "Turns a Firecracker snapshot's memory file into a memsnap build: a layered diff over\n"
    "--parent (or a new base), deduplicated against it, uploaded (data, snapfile, metadata,\n"
    "then the header). Prints the new build id on stdout; progress goes to stderr.\n"
    "\n"
    "options:\n"
    "  --mem FILE        the memory file (guest regions back to back, as Firecracker writes)\n"
    "  --diff            FILE is a diff snapshot: only its data extents were written (its\n"
    "                    holes keep the parent's pages); needs --parent\n"
    "  --vmstate FILE    Firecracker's vmstate file, stored as the build's snapfile\n"
    "  --parent ID       the build this snapshot is layered over (same memory size)\n"
    "  --store URI       file:///dir or s3://bucket/prefix (required)\n"
    "  --endpoint URL    S3 endpoint (default $MEMSNAP_S3_ENDPOINT)\n"
    "  --dedup MODE      full (default: compare every page with the parent, fetching what it\n"
    "                    must), best-effort (only parent pages cached here) or off\n"
    "  --compress C      none (default), zstd or lz4 frames for the uploaded diff\n"
    "  -h, --help        this help\n";

static const char *const export_usage =
    "usage: memsnap build export ID --mem FILE --store URI [options]\n"
    "\n"
    "Writes build ID's full guest memory (every layer resolved) to FILE, for a Firecracker\n"
    "File memory backend; all-zero pages are left as holes.\n"
    "\n"
    "options:\n"
    "  --mem FILE        the file to write (created or truncated)\n"
    "  --store URI       file:///dir or s3://bucket/prefix (required)\n"
    "  --endpoint URL    S3 endpoint (default $MEMSNAP_S3_ENDPOINT)\n"
    "  -h, --help        this help\n";

/* One import or export's store and cache dir, torn down by ms_fc_close. */
struct ms_fc_ctx {
	struct ms_store *store;
	char cache[32];
};

static int ms_fc_open(struct ms_fc_ctx *c, const char *uri, const char *endpoint)
{
	int err;
	memset(c, 0, sizeof(*c));
	if (!(c->store = ms_cli_store_open(uri, endpoint, &err)))
		return err;
	snprintf(c->cache, sizeof(c->cache), "/tmp/memsnap-fc.XXXXXX");
	if (!mkdtemp(c->cache)) {
		c->cache[0] = '\0';
		return -errno;
	}
	return 0;
}

static void ms_fc_close(struct ms_fc_ctx *c)
{
	ms_store_free(c->store);
	if (c->cache[0]) {
		char cmd[64];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", c->cache);
		if (system(cmd) != 0)
			fprintf(stderr, "memsnap: could not remove %s\n", c->cache);
	}
}

/* Copies [off, off+len) of fd into memfd at the same offset. */
static int ms_fc_copy_range(int fd, int memfd, uint64_t off, uint64_t len)
{
	static uint8_t buf[1 << 20];
	while (len) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		ssize_t got = pread(fd, buf, n, (off_t)off);
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EIO; /* the file shrank under us */
		if (pwrite(memfd, buf, (size_t)got, (off_t)off) != got)
			return errno ? -errno : -EIO;
		off += (uint64_t)got;
		len -= (uint64_t)got;
	}
	return 0;
}

/*
 * Reads the memory file into a new memfd of the same size and fills written:
 * every page (full), or the pages of its data extents (diff).
 */
static int ms_fc_load_mem(int fd, uint64_t size, bool diff, int *memfd_out,
			  struct ms_pageset *written)
{
	int memfd = memfd_create("memsnap-import", MFD_CLOEXEC);
	if (memfd < 0)
		return -errno;
	int err = ftruncate(memfd, (off_t)size) ? -errno : 0;
	uint64_t pos = 0, last_report = 0;
	int64_t t0 = ms_clock_now_ns();
	while (!err && pos < size) {
		uint64_t start = pos, end = size;
		if (diff) {
			off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
			if (d < 0) {
				if (errno == ENXIO)
					break; /* a hole to the end */
				err = -errno;
				break;
			}
			off_t h = lseek(fd, d, SEEK_HOLE);
			if (h < 0) {
				err = -errno;
				break;
			}
			/* extents are block-aligned; a page partly in one was written */
			start = (uint64_t)d / P * P;
			end = ((uint64_t)h + P - 1) / P * P;
			if (end > size)
				end = size;
		}
		if ((err = ms_fc_copy_range(fd, memfd, start, end - start)))
			break;
		ms_pageset_add_range(written, start / P, end / P);
		pos = end;
		if (pos - last_report >= (256ULL << 20) && pos < size) {
			fprintf(stderr, "import: read %llu of %llu MiB (%.1f s)\n",
				(unsigned long long)(pos >> 20), (unsigned long long)(size >> 20),
				(double)(ms_clock_now_ns() - t0) / 1e9);
			last_report = pos;
		}
	}
	if (err) {
		close(memfd);
		return err;
	}
	*memfd_out = memfd;
	return 0;
}

/* The vmstate file wrapped behind the format marker (caller frees *out). */
static int ms_fc_wrap_vmstate(const char *path, void **out, size_t *out_len)
{
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	struct stat st;
	if (path && (fd < 0 || fstat(fd, &st))) {
		int err = -errno;
		if (fd >= 0)
			close(fd);
		return err;
	}
	uint64_t n = path ? (uint64_t)st.st_size : 0;
	if (n > MS_FC_VMSTATE_MAX) {
		close(fd);
		return -EFBIG;
	}
	uint8_t *blob = calloc(1, MS_FC_VMSTATE_HDR + (size_t)n);
	if (!blob) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	uint8_t *data = blob + MS_FC_VMSTATE_HDR;
	for (uint64_t got = 0; got < n;) {
		ssize_t r = pread(fd, data + got, (size_t)(n - got), (off_t)got);
		if (r <= 0) {
			int err = r < 0 ? -errno : -EIO;
			close(fd);
			free(blob);
			return err;
		}
		got += (uint64_t)r;
	}
	if (fd >= 0)
		close(fd);
	uint32_t version = 1;
	uint64_t hash = XXH64(data, (size_t)n, 0);
	memcpy(blob, MS_FC_VMSTATE_MAGIC, 8);
	memcpy(blob + 8, &version, 4);
	memcpy(blob + 16, &n, 8);
	memcpy(blob + 24, &hash, 8);
	*out = blob;
	*out_len = MS_FC_VMSTATE_HDR + (size_t)n;
	return 0;
}

/* metadata.json: what the build is, so readers know the snapfile's format. */
static int ms_fc_put_metadata(struct ms_store *store, const ms_uuid *id, uint64_t mem_bytes,
			      const ms_uuid *parent, bool has_vmstate)
{
	char sid[MS_UUID_STR_LEN], pid[MS_UUID_STR_LEN], key[MS_ARTIFACT_KEY_MAX];
	ms_uuid_format(id, sid);
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "build_id", sid);
	cJSON_AddStringToObject(o, "guest", "firecracker");
	cJSON_AddNumberToObject(o, "mem_bytes", (double)mem_bytes);
	cJSON_AddStringToObject(o, "snapfile_format",
				has_vmstate ? "firecracker-vmstate" : "firecracker-none");
	if (parent) {
		ms_uuid_format(parent, pid);
		cJSON_AddStringToObject(o, "parent_build_id", pid);
	}
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!text)
		return -ENOMEM;
	int err = ms_artifact_key(key, sizeof(key), id, MS_ARTIFACT_METADATA, MS_COMPRESS_NONE);
	if (!err)
		err = ms_store_put_buf(store, key, text, strlen(text), NULL);
	free(text);
	return err;
}

/* The options of build import and export (export's table names only --mem and the store's). */
struct ms_fc_args {
	const char *mem, *vmstate, *parent, *uri, *endpoint;
	bool diff;
	enum ms_dedup_mode dedup;
	enum ms_compression compress;
};

/* Parses argv with opts into *a: 0, or 2 on a usage error (printed, with usage). */
static int ms_fc_parse(int argc, char **argv, const struct option *opts, const char *usage,
		       struct ms_fc_args *a)
{
	*a = (struct ms_fc_args){.dedup = MS_DEDUP_FULL, .compress = MS_COMPRESS_NONE};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'm':
			a->mem = optarg;
			break;
		case 'd':
			a->diff = true;
			break;
		case 'v':
			a->vmstate = optarg;
			break;
		case 'p':
			a->parent = optarg;
			break;
		case 'D':
			if (!strcmp(optarg, "full"))
				a->dedup = MS_DEDUP_FULL;
			else if (!strcmp(optarg, "best-effort"))
				a->dedup = MS_DEDUP_BEST_EFFORT;
			else if (!strcmp(optarg, "off"))
				a->dedup = MS_DEDUP_OFF;
			else {
				fprintf(stderr,
					"memsnap: --dedup takes full, best-effort or off\n");
				return 2;
			}
			break;
		case 'c':
			if (ms_compression_parse(optarg, &a->compress)) {
				fprintf(stderr, "memsnap: --compress takes none, zstd or lz4\n");
				return 2;
			}
			break;
		default:
			if (ms_cli_store_option(ch, optarg, &a->uri, &a->endpoint))
				break;
			fputs(usage, stderr);
			return 2;
		}
	}
	return 0;
}

int ms_cli_build_import(int argc, char **argv)
{
	if (ms_cli_wants_help(argc, argv)) {
		fputs(import_usage, stdout);
		return 0;
	}
	static const struct option opts[] = {{"mem", required_argument, NULL, 'm'},
					     {"diff", no_argument, NULL, 'd'},
					     {"vmstate", required_argument, NULL, 'v'},
					     {"parent", required_argument, NULL, 'p'},
					     MS_CLI_STORE_OPTIONS,
					     {"dedup", required_argument, NULL, 'D'},
					     {"compress", required_argument, NULL, 'c'},
					     {NULL, 0, NULL, 0}};
	struct ms_fc_args a;
	int rc = ms_fc_parse(argc, argv, opts, import_usage, &a);
	if (rc)
		return rc;
	const char *mem = a.mem, *vmstate = a.vmstate, *parent_arg = a.parent, *uri = a.uri,
		   *endpoint = a.endpoint;
	bool diff = a.diff;
	enum ms_dedup_mode dedup = a.dedup;
	enum ms_compression compress = a.compress;
	if (optind != argc || !mem || !uri)
		goto usage;
	if (diff && !parent_arg) {
		fprintf(stderr, "memsnap: --diff needs --parent: a diff's holes are the parent's "
				"pages\n");
		return 2;
	}
	ms_uuid parent_id;
	if (parent_arg && ms_uuid_parse(parent_arg, &parent_id)) {
		fprintf(stderr, "memsnap: --parent '%s' is not a build id\n", parent_arg);
		return 2;
	}
	int fd = open(mem, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st)) {
		int e = -errno;
		if (fd >= 0)
			close(fd);
		return ms_cli_fail(mem, e);
	}
	uint64_t size = (uint64_t)st.st_size;
	if (!S_ISREG(st.st_mode) || size == 0 || size % P || size / P > UINT32_MAX) {
		close(fd);
		fprintf(stderr,
			"memsnap: %s: a memory file is a regular file whose size is a "
			"non-zero multiple of 4096 bytes (it has %llu)\n",
			mem, (unsigned long long)size);
		return 1;
	}
	struct ms_fc_ctx c;
	struct ms_build_file *parent = NULL;
	struct ms_pause *pause = NULL;
	struct ms_pageset *written = ms_pageset_new(), *none = ms_pageset_new();
	void *snap = NULL;
	size_t snap_len = 0;
	int memfd = -1;
	struct ms_future *gate = NULL;
	const char *what = uri;
	bool refused = false;
	int err = ms_fc_open(&c, uri, endpoint);
	if (err)
		goto out;
	err = -ENOMEM;
	if (!written || !none)
		goto out;
	struct ms_header *head = NULL;
	if (parent_arg) {
		what = parent_arg;
		if ((err = ms_build_storage_load_header(c.store, &parent_id,
							MS_ARTIFACT_MEMFILE_HEADER, &head)))
			goto out;
		if (head->meta.size != size) {
			fprintf(stderr,
				"memsnap: %s is %llu bytes but the parent build %s has %llu: a "
				"snapshot's memory has its parent's size\n",
				mem, (unsigned long long)size, parent_arg,
				(unsigned long long)head->meta.size);
			ms_header_free(head);
			refused = true;
			goto out;
		}
	} else {
		ms_uuid base;
		ms_uuid_generate(&base);
		head = ms_header_new_base(&base, MS_HEADER_V4, P, size, false);
	}
	if (!(parent = ms_build_file_new(c.store, head, c.cache, &err)))
		goto out;
	what = mem;
	int64_t t0 = ms_clock_now_ns();
	if ((err = ms_fc_load_mem(fd, size, diff, &memfd, written)))
		goto out;
	fprintf(stderr, "import: %s: %llu MiB, %llu pages written (%s) read in %.1f ms\n", mem,
		(unsigned long long)(size >> 20), (unsigned long long)ms_pageset_count(written),
		diff ? "its data extents" : "every page", (double)(ms_clock_now_ns() - t0) / 1e6);
	what = vmstate ? vmstate : "vmstate";
	if ((err = ms_fc_wrap_vmstate(vmstate, &snap, &snap_len)))
		goto out;
	/* the upload waits until metadata.json is in: it goes before the header */
	err = -ENOMEM;
	if (!(gate = ms_future_new(NULL)))
		goto out;
	struct ms_pause_config pcfg = {.store = c.store,
				       .diffs = parent->cache.diffs,
				       .cache_dir = c.cache,
				       .inflight = false,
				       .dedup = dedup,
				       .compress = compress,
				       .upload_gate = gate,
				       .upload_holder = ms_cli_upload_holder()};
	what = "import";
	int mfd = memfd;
	memfd = -1;
	if ((err = ms_pause_start(&pcfg, parent->file, mfd, written, none, snap, snap_len, &pause)))
		goto out;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(ms_pause_build_id(pause), id);
	err = ms_fc_put_metadata(c.store, ms_pause_build_id(pause), size,
				 parent_arg ? &parent_id : NULL, vmstate != NULL);
	ms_future_set(gate, NULL);
	if (err) { /* the pipeline goes on: the build is whole, without its metadata */
		what = "metadata.json (the build is published without it)";
		goto out;
	}
	uint64_t dirty, equal, zero, kept;
	if ((err = ms_pause_wait(pause, MS_PAUSE_DEDUPED, -1)))
		goto out;
	ms_pause_counts(pause, &dirty, &equal, &zero, &kept);
	fprintf(stderr,
		"import: build %s compared: %llu written pages, %llu equal to the parent, %llu "
		"zero, %llu kept (%.1f ms)\n",
		id, (unsigned long long)dirty, (unsigned long long)equal, (unsigned long long)zero,
		(unsigned long long)kept, (double)(ms_clock_now_ns() - t0) / 1e6);
	if ((err = ms_pause_wait(pause, MS_PAUSE_PUBLISHED, -1)))
		goto out;
	fprintf(stderr, "import: build %s uploaded and published in %s%s%s (%.1f ms)\n", id, uri,
		parent_arg ? " over " : "", parent_arg ? parent_arg : "",
		(double)(ms_clock_now_ns() - t0) / 1e6);
	printf("%s\n", id);
out:
	if (err)
		err = ms_cli_fail(what, err);
	else if (refused)
		err = 1;
	if (gate)
		ms_future_set(gate, NULL); /* never leave the pipeline held */
	ms_pause_free(pause);
	if (gate)
		ms_future_unref(gate);
	ms_build_file_free(parent);
	if (memfd >= 0)
		close(memfd);
	close(fd);
	free(snap);
	ms_pageset_free(written);
	ms_pageset_free(none);
	ms_fc_close(&c);
	return err;
usage:
	fputs(import_usage, stderr);
	return 2;
}

static bool ms_fc_all_zero(const uint8_t *p, size_t len)
{
	static const uint8_t zero[4096];
	for (size_t i = 0; i < len; i += sizeof(zero))
		if (memcmp(p + i, zero, sizeof(zero)))
			return false;
	return true;
}

int ms_cli_build_export(int argc, char **argv)
{
	if (ms_cli_wants_help(argc, argv)) {
		fputs(export_usage, stdout);
		return 0;
	}
	static const struct option opts[] = {
	    {"mem", required_argument, NULL, 'm'}, MS_CLI_STORE_OPTIONS, {NULL, 0, NULL, 0}};
	struct ms_fc_args a;
	int rc = ms_fc_parse(argc, argv, opts, export_usage, &a);
	if (rc)
		return rc;
	const char *mem = a.mem, *uri = a.uri, *endpoint = a.endpoint;
	if (optind != argc - 1 || !mem || !uri)
		goto usage;
	ms_uuid id;
	if (ms_uuid_parse(argv[optind], &id)) {
		fprintf(stderr, "memsnap: '%s' is not a build id\n", argv[optind]);
		return 2;
	}
	struct ms_fc_ctx c;
	struct ms_build_file *bf = NULL;
	uint8_t *buf = NULL;
	int out = -1;
	const char *what = uri;
	int err = ms_fc_open(&c, uri, endpoint);
	if (err || (what = argv[optind], !(bf = ms_build_file_open(c.store, &id, c.cache, &err))))
		goto done;
	struct ms_layered *file = bf->file;
	uint64_t size = ms_layered_size(file);
	err = -ENOMEM;
	const size_t step = 2u << 20;
	if (!(buf = malloc(step)))
		goto done;
	what = mem;
	if ((out = open(mem, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
	    ftruncate(out, (off_t)size)) {
		err = -errno;
		goto done;
	}
	int64_t t0 = ms_clock_now_ns();
	uint64_t written = 0, last_report = 0;
	for (uint64_t off = 0; off < size; off += step) {
		size_t len = size - off < step ? (size_t)(size - off) : step;
		what = argv[optind];
		if ((err = ms_layered_read(file, buf, off, len)))
			goto done;
		what = mem;
		for (size_t p = 0; p < len; p += P) { /* zero pages stay holes */
			if (ms_fc_all_zero(buf + p, P))
				continue;
			if (pwrite(out, buf + p, P, (off_t)(off + p)) != (ssize_t)P) {
				err = errno ? -errno : -EIO;
				goto done;
			}
			written += P;
		}
		if (off - last_report >= (256ULL << 20)) {
			fprintf(stderr, "export: %llu of %llu MiB (%.1f s)\n",
				(unsigned long long)(off >> 20), (unsigned long long)(size >> 20),
				(double)(ms_clock_now_ns() - t0) / 1e9);
			last_report = off;
		}
	}
	if (fsync(out)) {
		err = -errno;
		goto done;
	}
	fprintf(stderr, "export: %s: %llu MiB of memory, %llu MiB of non-zero pages, %.1f ms\n",
		mem, (unsigned long long)(size >> 20), (unsigned long long)(written >> 20),
		(double)(ms_clock_now_ns() - t0) / 1e6);
done:
	if (out >= 0)
		close(out);
	if (err && out >= 0)
		unlink(mem); /* never leave a partial memory file behind */
	free(buf);
	ms_build_file_free(bf);
	ms_fc_close(&c);
	return err ? ms_cli_fail(what, err) : 0;
usage:
	fputs(export_usage, stderr);
	return 2;
}
