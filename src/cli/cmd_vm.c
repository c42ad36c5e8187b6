/*
 * cmd_vm.c - "memsnap vm run|restore": a guest in a sandbox from the command line.
 *
 *   vm run      starts a test guest (pattern fills its memory with --seed/--epoch;
 *               counter counts; mutator dirties --writes random pages), pauses it
 *               and saves the snapshot: --out DIR (snapfile + full memory file),
 *               or --store URI (published through the pause pipeline over an
 *               empty template; prints the build id).
 *   vm restore  restores a snapshot eagerly (--eager MEMFILE) or lazily through a
 *               page server (--lazy SOCKET, e.g. `memsnap pageserver`), resumes
 *               the guest and has it check itself (pattern: VERIFY; counter: one
 *               more report).
 */
#include "build/buildfile.h"
#include "cli/cli.h"
#include "cli/cmd_vmctl.h"
#include "cli/commands.h"
#include "sandbox/memory.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "storage/artifact.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define P 4096

/* "64M", "1G", "262144K" or bytes. */
static int ms_vm_parse_size(const char *text, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || end == text)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	else if (*end == 'G' || *end == 'g')
		v <<= 30, end++;
	if (*end || v < (64u << 10) || v > (64ull << 30) || v % P)
		return -EINVAL;
	*out = v;
	return 0;
}

struct ms_vm_opts {
	const char *guest, *backend, *out, *store, *endpoint, *eager, *lazy, *snapfile, *build,
	    *control, *tracker;
	uint64_t mem, seed, epoch, writes;
	double stall_compare;	      /* seconds the dedup compare waits (tests, demos) */
	bool no_inflight;	      /* no provisional header: resumable after the compare */
	enum ms_compression compress; /* the uploaded diff's frames */
	enum ms_guest_kind kind;      /* --guest, parsed */
};

/* The field of the options that take their argument as it is: --guest, --out, ... */
static const char **ms_vm_text_option(struct ms_vm_opts *o, int c)
{
	static const struct {
		int c;
		size_t offset;
	} fields[] = {
	    {'g', offsetof(struct ms_vm_opts, guest)},
	    {'b', offsetof(struct ms_vm_opts, backend)},
	    {'o', offsetof(struct ms_vm_opts, out)},
	    {'e', offsetof(struct ms_vm_opts, eager)},
	    {'l', offsetof(struct ms_vm_opts, lazy)},
	    {'f', offsetof(struct ms_vm_opts, snapfile)},
	    {'B', offsetof(struct ms_vm_opts, build)},
	    {'C', offsetof(struct ms_vm_opts, control)},
	    {'k', offsetof(struct ms_vm_opts, tracker)},
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (fields[i].c == c)
			return (const char **)((char *)o + fields[i].offset);
	return NULL;
}

/*
 * Parses vm run's (restore false) or vm restore's options with their checks. 0: go on;
 * 1: --help was printed (exit 0); 2: a usage error, printed.
 */
static int ms_vm_parse(int argc, char **argv, struct ms_vm_opts *o, const char *usage, bool restore)
{
	static const struct option opts[] = {
	    {"guest", required_argument, NULL, 'g'},
	    {"mem", required_argument, NULL, 'm'},
	    {"backend", required_argument, NULL, 'b'},
	    {"out", required_argument, NULL, 'o'},
	    MS_CLI_STORE_OPTIONS,
	    {"eager", required_argument, NULL, 'e'},
	    {"lazy", required_argument, NULL, 'l'},
	    {"snapfile", required_argument, NULL, 'f'},
	    {"build", required_argument, NULL, 'B'},
	    {"seed", required_argument, NULL, 'S'},
	    {"epoch", required_argument, NULL, 'p'},
	    {"writes", required_argument, NULL, 'w'},
	    {"control", required_argument, NULL, 'C'},
	    {"stall-compare", required_argument, NULL, 'T'},
	    {"no-inflight", no_argument, NULL, 'I'},
	    {"compress", required_argument, NULL, 'Z'},
	    {"tracker", required_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	*o = (struct ms_vm_opts){.guest = "pattern",
				 .backend = "auto",
				 .tracker = "auto",
				 .mem = 64u << 20,
				 .seed = 1,
				 .epoch = 1,
				 .writes = 100};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		const char **text = ms_vm_text_option(o, c);
		if (text) {
			*text = optarg;
			continue;
		}
		if (ms_cli_store_option(c, optarg, &o->store, &o->endpoint))
			continue;
		switch (c) {
		case 'T':
			o->stall_compare = strtod(optarg, &end);
			if (!*optarg || *end || o->stall_compare < 0 || o->stall_compare > 3600) {
				fprintf(stderr, "memsnap: --stall-compare: seconds, 0 to 3600\n");
				return 2;
			}
			break;
		case 'I':
			o->no_inflight = true;
			break;
		case 'Z':
			if (strcmp(optarg, "zstd") == 0)
				o->compress = MS_COMPRESS_ZSTD;
			else if (strcmp(optarg, "lz4") == 0)
				o->compress = MS_COMPRESS_LZ4;
			else if (strcmp(optarg, "none") == 0)
				o->compress = MS_COMPRESS_NONE;
			else {
				fprintf(stderr, "memsnap: --compress: zstd, lz4 or none\n");
				return 2;
			}
			break;
		case 'm':
			if (ms_vm_parse_size(optarg, &o->mem)) {
				fprintf(stderr, "memsnap: --mem: a size like 64M or 1G (>= 64K, "
						"a multiple of 4 KiB)\n");
				return 2;
			}
			break;
		case 'S':
		case 'p':
		case 'w': {
			unsigned long long v = strtoull(optarg, &end, 0);
			if (!*optarg || *end) {
				fprintf(stderr, "memsnap: not a number: %s\n", optarg);
				return 2;
			}
			*(c == 'S' ? &o->seed : c == 'p' ? &o->epoch : &o->writes) = v;
			break;
		}
		case 'h': {
			const struct ms_sandbox_ops *ops;
			char why[160];
			fputs(usage, stdout);
			ms_sandbox_backend_pick("auto", &ops, why, sizeof(why));
			printf("Backends: kvm (KVM microVMs, where /dev/kvm opens) and proc (a "
			       "ptrace-driven\nprocess sandbox, any Linux machine). On this "
			       "machine auto picks: %s.\n",
			       why);
			return 1; /* handled: exit 0 */
		}
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	bool bad = optind != argc || ms_guest_parse(o->guest, &o->kind);
	if (restore)
		bad = bad || !o->eager == !o->lazy || !o->snapfile == !(o->store && o->build) ||
		      o->kind == MS_GUEST_MUTATOR;
	else
		bad = bad || !o->out == !o->store;
	if (bad) {
		fputs(usage, stderr);
		return 2;
	}
	return 0;
}

static const struct ms_sandbox_ops *ms_vm_backend(const char *name)
{
	const struct ms_sandbox_ops *ops;
	char why[160];
	if (ms_sandbox_backend_pick(name, &ops, why, sizeof(why))) {
		fprintf(stderr, "memsnap: %s\n", why);
		return NULL;
	}
	printf("sandbox: %s\n", why);
	return ops;
}

/*
 * Picks the written-page tracker (--tracker) as memsnapd does: 0, or 1 after
 * printing why not. MEMSNAP_TEST_TRACKER_PROBE_NONE (tests) makes the probe report
 * nothing. A lazy restore under sync is refused here: its page server is another
 * process, which cannot hand the guest's write faults back.
 */
static int ms_vm_tracker(const char *name, bool lazy)
{
	enum ms_tracker_mode want, mode;
	char why[320];
	if (ms_tracker_mode_parse(name, &want)) {
		fprintf(stderr, "memsnap: --tracker: auto, async or sync\n");
		return 1;
	}
	const char *none = getenv("MEMSNAP_TEST_TRACKER_PROBE_NONE");
	if (ms_tracker_pick(want, none && strcmp(none, "0") && strcmp(none, "off"), &mode, why,
			    sizeof(why))) {
		fprintf(stderr, "memsnap: %s\n", why);
		return 1;
	}
	if (lazy && mode == MS_TRACKER_SYNC) {
		fprintf(stderr,
			"memsnap: the sync tracker cannot follow a lazy restore from a page "
			"server in another process (use memsnapd, or --eager)\n");
		return 1;
	}
	ms_tracker_set_mode(mode);
	printf("tracker: %s (%s)\n", ms_tracker_mode_name(mode), why);
	return 0;
}

/* Pages of the guest memory present in its memfd (mincore over the host's view). */
static uint64_t ms_vm_resident(void *ram, uint64_t size)
{
	uint64_t pages = size / P, resident = 0;
	unsigned char *vec = malloc(pages);
	if (vec && mincore(ram, size, vec) == 0)
		for (uint64_t i = 0; i < pages; i++)
			resident += vec[i] & 1;
	free(vec);
	return resident;
}

static int ms_vm_command(struct ms_sandbox *sb, uint64_t cmd, uint64_t a0, uint64_t a1)
{
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb);
	box[MS_GUEST_CMD / 8] = cmd;
	box[MS_GUEST_ARG0 / 8] = a0;
	box[MS_GUEST_ARG1 / 8] = a1;
	int err = ms_sandbox_run(sb);
	return err ? err : ms_sandbox_wait_report(sb, 120 * MS_NSEC_PER_SEC);
}

static int ms_vm_write_file(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, buf, len);
	int err = n == (ssize_t)len ? 0 : -EIO;
	if (close(fd) && !err)
		err = -errno;
	return err;
}

/* One line to the console, and to the control client waiting for the snapshot. */
static void ms_vm_stage(int client, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ms_vm_stage(int client, const char *fmt, ...)
{
	char line[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	printf("%s\n", line);
	fflush(stdout);
	ms_vmctl_progress(client, line);
}

/*
 * Publishes a paused guest through the pause pipeline into o->store, over the
 * build parent_id (NULL: an empty template), printing each stage as it
 * completes; result gets the new build's line.
 */
static int ms_vm_publish(const struct ms_vm_opts *o, struct ms_sandbox_paused *paused,
			 const char *parent_id, int client, char *result, size_t result_len)
{
	int err;
	struct ms_store *store = ms_cli_store_open(o->store, o->endpoint, &err);
	if (!store)
		return ms_cli_fail(o->store, err);
	char cache[] = "/tmp/memsnap-vm.XXXXXX";
	struct ms_build_file *parent = NULL;
	struct ms_pause *pause = NULL;
	struct ms_pageset *none = ms_pageset_new();
	struct ms_future *gate = o->stall_compare > 0 ? ms_future_new(NULL) : NULL;
	if (!mkdtemp(cache)) {
		err = -errno;
		cache[0] = '\0';
		goto out;
	}
	if (parent_id) { /* the build this guest was restored from: its durable header */
		ms_uuid id;
		if ((err = ms_uuid_parse(parent_id, &id) ? -EINVAL : 0) ||
		    !(parent = ms_build_file_open(store, &id, cache, &err)))
			goto out;
	} else {
		ms_uuid template_id;
		ms_uuid_generate(&template_id);
		if (!(parent = ms_build_file_new(
			  store, ms_header_new_base(&template_id, MS_HEADER_V4, P, o->mem, false),
			  cache, &err)))
			goto out;
	}
	err = -ENOMEM;
	if (!none || (o->stall_compare > 0 && !gate))
		goto out;
	struct ms_pause_config pcfg = {.store = store,
				       .diffs = parent->cache.diffs,
				       .cache_dir = cache,
				       .inflight = !o->no_inflight,
				       .compress = o->compress,
				       .compare_gate = gate,
				       .upload_holder = ms_cli_upload_holder()};
	int memfd = paused->memfd;
	paused->memfd = -1;
	int64_t t0 = ms_clock_now_ns();
	if (gate && !o->no_inflight)
		ms_vm_stage(client, "stage:  dedup compare stalled for %.1f s (--stall-compare)",
			    o->stall_compare);
	if (o->no_inflight && gate) { /* without in-flight serving the start waits for it */
		ms_clock_sleep_ns((int64_t)(o->stall_compare * 1e9));
		ms_future_set(gate, NULL);
	}
	if ((err = ms_pause_start(&pcfg, parent->file, memfd, paused->written, none,
				  paused->snapfile, paused->snapfile_len, &pause)))
		goto out;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(ms_pause_build_id(pause), id);
	ms_vm_stage(client, "stage:  build %s resumable after %.2f ms (%s)", id,
		    (double)(ms_clock_now_ns() - t0) / 1e6,
		    o->no_inflight ? "deduped header"
				   : "provisional header, served from the memfd");
	if (gate && !o->no_inflight) {
		ms_clock_sleep_ns((int64_t)(o->stall_compare * 1e9));
		ms_future_set(gate, NULL);
	}
	if ((err = ms_pause_wait(pause, MS_PAUSE_COMPARED, -1)))
		goto out;
	uint64_t dirty, equal, zero, kept;
	ms_pause_counts(pause, &dirty, &equal, &zero, &kept);
	ms_vm_stage(client,
		    "stage:  compared after %.1f ms: %llu written pages, %llu equal to the parent, "
		    "%llu zero, %llu kept",
		    (double)(ms_clock_now_ns() - t0) / 1e6, (unsigned long long)dirty,
		    (unsigned long long)equal, (unsigned long long)zero, (unsigned long long)kept);
	if ((err = ms_pause_wait(pause, MS_PAUSE_RELEASED, -1)))
		goto out;
	ms_vm_stage(client, "stage:  drained after %.1f ms (%.2f MiB diff; memfd released)",
		    (double)(ms_clock_now_ns() - t0) / 1e6, (double)(kept * P) / 1048576.0);
	if ((err = ms_pause_wait(pause, MS_PAUSE_PUBLISHED, -1)))
		goto out;
	ms_vm_stage(client, "stage:  uploaded and published after %.1f ms",
		    (double)(ms_clock_now_ns() - t0) / 1e6);
	printf("published: build %s in %s%s%s\n", id, o->store, parent_id ? " over " : "",
	       parent_id ? parent_id : "");
	snprintf(result, result_len, "published build %s in %s", id, o->store);
out:
	ms_cli_pause_free(pause, gate);
	ms_build_file_free(parent);
	ms_pageset_free(none);
	ms_store_free(store);
	if (cache[0])
		rmdir(cache);
	return err ? ms_cli_fail("publish", err) : 0;
}

/* Writes the snapfile and the whole memory into o->out. */
static int ms_vm_write_out(const struct ms_vm_opts *o, const struct ms_sandbox_paused *paused,
			   char *result, size_t result_len)
{
	if (mkdir(o->out, 0755) && errno != EEXIST)
		return ms_cli_fail(o->out, -errno);
	void *mem = malloc(o->mem);
	int err = mem ? 0 : -ENOMEM;
	if (!err && pread(paused->memfd, mem, o->mem, 0) != (ssize_t)o->mem)
		err = -EIO;
	if (!err &&
	    !(err = ms_vm_write_file(o->out, "snapfile", paused->snapfile, paused->snapfile_len)))
		err = ms_vm_write_file(o->out, "memory", mem, o->mem);
	free(mem);
	if (err)
		return ms_cli_fail("cannot write the snapshot", err);
	printf("saved:  %s/snapfile, %s/memory\n", o->out, o->out);
	snprintf(result, result_len, "saved %s/snapfile and %s/memory", o->out, o->out);
	return 0;
}

/* Saves (--out) or publishes (--store) a paused guest; answers the control client. */
static int ms_vm_save(const struct ms_vm_opts *o, struct ms_sandbox_paused *paused,
		      const char *parent_id, int client)
{
	char result[512] = "the snapshot was not saved (see the vm output)";
	int rc = o->out ? ms_vm_write_out(o, paused, result, sizeof(result))
			: ms_vm_publish(o, paused, parent_id, client, result, sizeof(result));
	ms_vmctl_finish(client, rc, result);
	return rc;
}

static const char *const vm_run_usage =
    "usage: memsnap vm run [--guest pattern|counter|mutator] [--mem SIZE]\n"
    "                      [--backend auto|kvm|proc] [--tracker auto|async|sync]\n"
    "                      (--out DIR | --store URI)\n"
    "                      [--seed N] [--epoch N] [--writes N] [--control SOCKET]\n"
    "                      [--stall-compare S] [--no-inflight] [--compress zstd|lz4|none]\n\n"
    "Starts a test guest in a sandbox, lets it work, pauses it and saves the snapshot.\n"
    "  pattern  fills every data page from (seed, page, epoch)\n"
    "  counter  counts (the count lives in a register and in RAM)\n"
    "  mutator  writes --writes pseudo-random pages (xorshift from --seed)\n"
    "  --out DIR    writes DIR/snapfile and DIR/memory (the whole guest memory)\n"
    "  --store URI  publishes the snapshot through the pause pipeline over an empty\n"
    "               template and prints its build id\n"
    "  --mem SIZE   guest memory, e.g. 64M (default) or 1G\n"
    "  --tracker M  written-page tracker: async (WP_ASYNC + PAGEMAP_SCAN, Linux >= 6.7),\n"
    "               sync (write-protect faults, Linux >= 5.19), auto (default: async\n"
    "               where the kernel has it); sync restores --eager only\n"
    "  --control SOCKET  after the work, keep the guest running and take requests\n"
    "               on SOCKET: memsnap vm pause|resume|status, and vm snapshot, which\n"
    "               pauses it and saves/publishes the snapshot as --out/--store say\n"
    "Publishing (--store) runs the pause pipeline and prints each stage:\n"
    "  --stall-compare S  hold the dedup compare for S seconds (shows that the build\n"
    "               is resumable before dedup)\n"
    "  --no-inflight  no provisional header: resumable only after the compare\n"
    "  --compress zstd|lz4|none  upload the diff as compressed frames (default none)\n";

int ms_cli_vm_run(int argc, char **argv)
{
	struct ms_vm_opts o;
	int rc = ms_vm_parse(argc, argv, &o, vm_run_usage, false);
	if (rc)
		return rc == 1 ? 0 : rc;
	enum ms_guest_kind kind = o.kind;
	const struct ms_sandbox_ops *ops = ms_vm_backend(o.backend);
	if (!ops || ms_vm_tracker(o.tracker, false))
		return 1;
	if (!getenv("MEMSNAP_LOG"))
		ms_log_set_level(MS_LOG_WARN);
	struct ms_sandbox_spec spec = {
	    .guest = kind, .mem_size = o.mem, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *sb = NULL;
	struct ms_sandbox_paused paused = {.memfd = -1};
	int64_t t0 = ms_clock_now_ns();
	int err = ms_sandbox_create(ops, &spec, &sb);
	if (err)
		return ms_cli_fail("cannot start the sandbox", err);
	if (kind == MS_GUEST_PATTERN)
		err = ms_vm_command(sb, MS_PATTERN_FILL, o.seed, o.epoch);
	else if (kind == MS_GUEST_MUTATOR)
		err = ms_vm_command(sb, 1, o.seed, o.writes);
	else
		err = ms_vm_command(sb, 0, 1000000, 0); /* counter: one report per million */
	if (err) {
		if (err == -ECHILD)
			fprintf(stderr, "memsnap: the guest died: %s\n",
				ms_sandbox_death_cause(sb));
		ms_sandbox_destroy(sb);
		return ms_cli_fail("guest run", err);
	}
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb);
	box[MS_GUEST_CMD / 8] = 0; /* after a resume the guest reports first */
	double ran = (double)(ms_clock_now_ns() - t0) / 1e6;
	int client = -1;
	if (o.control) {
		printf("sandbox: %s guest, %llu MiB, worked for %.1f ms\n", o.guest,
		       (unsigned long long)(o.mem >> 20), ran);
		err = ms_vmctl_serve(o.control, sb, kind, &paused, &client);
	} else {
		err = ms_sandbox_pause(sb, &paused);
	}
	uint64_t count = box[MS_GUEST_RESULT0 / 8];
	ms_sandbox_destroy(sb);
	if (err)
		return ms_cli_fail(o.control ? o.control : "pause", err);
	printf("run:    %s guest, %llu MiB, %.1f ms%s; paused: %llu pages written, snapfile %zu "
	       "bytes\n",
	       o.guest, (unsigned long long)(o.mem >> 20), ran, kind == MS_GUEST_COUNTER ? "" : "",
	       (unsigned long long)ms_pageset_count(paused.written), paused.snapfile_len);
	if (kind == MS_GUEST_COUNTER)
		printf("counter: %llu\n", (unsigned long long)count);
	rc = ms_vm_save(&o, &paused, NULL, client);
	ms_sandbox_paused_fini(&paused);
	return rc;
}

static const char *const vm_restore_usage =
    "usage: memsnap vm restore --mem SIZE [--backend auto|kvm|proc]\n"
    "                          [--tracker auto|async|sync]\n"
    "                          (--eager MEMFILE | --lazy SOCKET)\n"
    "                          (--snapfile FILE | --store URI --build ID)\n"
    "                          [--guest pattern|counter] [--seed N] [--epoch N]\n"
    "                          [--control SOCKET [--out DIR] [--stall-compare S]\n"
    "                           [--no-inflight] [--compress zstd|lz4|none]]\n\n"
    "Restores a paused guest in a new sandbox: eagerly from a memory file, or lazily\n"
    "through a page server (e.g. `memsnap pageserver`) with Firecracker's userfaultfd\n"
    "handshake. The guest then checks itself: pattern verifies every data page against\n"
    "(--seed, --epoch) and the command exits 1 on any mismatch; counter reports its count.\n"
    "  --control SOCKET  then keep the guest running for memsnap vm pause|resume|\n"
    "               snapshot|status --control SOCKET; vm snapshot saves it to --out (eager)\n"
    "               or publishes it as a diff over --build into --store (lazy), printing\n"
    "               each pipeline stage (flags as for vm run)\n";

int ms_cli_vm_restore(int argc, char **argv)
{
	struct ms_vm_opts o;
	int rc = ms_vm_parse(argc, argv, &o, vm_restore_usage, true);
	if (rc)
		return rc == 1 ? 0 : rc;
	enum ms_guest_kind kind = o.kind;
	/*
	 * --control: the next snapshot of an eagerly restored guest is saved whole
	 * (--out); a lazily restored one holds only the pages it touched, so its
	 * snapshot is a diff published over the build it came from (--store --build).
	 */
	if (o.control && (o.eager ? !o.out : (!o.build || o.out))) {
		fprintf(stderr, "memsnap: vm restore --control needs --out DIR with --eager, or "
				"--store URI --build ID with --lazy (the snapshot is published "
				"over that build)\n");
		return 2;
	}
	const struct ms_sandbox_ops *ops = ms_vm_backend(o.backend);
	if (!ops || ms_vm_tracker(o.tracker, o.lazy != NULL))
		return 1;
	if (!getenv("MEMSNAP_LOG"))
		ms_log_set_level(MS_LOG_WARN);
	void *snap = NULL;
	size_t snap_len = 0;
	int err;
	if (o.snapfile) {
		struct ms_store *dir = NULL;
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s", o.snapfile);
		char *slash = strrchr(tmp, '/');
		const char *name = slash ? slash + 1 : tmp;
		if (slash)
			*slash = '\0';
		dir = ms_store_fs_new(slash ? (tmp[0] ? tmp : "/") : ".", &err);
		if (!dir)
			return ms_cli_fail(o.snapfile, err);
		err = ms_store_read_all(dir, name, 64u << 20, &snap, &snap_len);
		ms_store_free(dir);
	} else {
		ms_uuid id;
		struct ms_store *store = ms_uuid_parse(o.build, &id)
					     ? NULL
					     : ms_cli_store_open(o.store, o.endpoint, &err);
		if (!store)
			return ms_cli_fail(o.store, ms_uuid_parse(o.build, &id) ? -EINVAL : err);
		char key[MS_ARTIFACT_KEY_MAX];
		ms_artifact_key(key, sizeof(key), &id, MS_ARTIFACT_SNAPFILE, MS_COMPRESS_NONE);
		err = ms_store_read_all(store, key, 64u << 20, &snap, &snap_len);
		ms_store_free(store);
	}
	if (err)
		return ms_cli_fail("cannot read the snapfile", err);
	int eager_fd = -1;
	if (o.eager && (eager_fd = open(o.eager, O_RDONLY | O_CLOEXEC)) < 0) {
		free(snap);
		return ms_cli_fail(o.eager, -errno);
	}
	struct ms_sandbox_spec spec = {.mem_size = o.mem,
				       .memory = o.eager ? MS_SANDBOX_EAGER : MS_SANDBOX_LAZY,
				       .eager_fd = eager_fd,
				       .lazy_socket = o.lazy,
				       .snapfile = snap,
				       .snapfile_len = snap_len};
	struct ms_sandbox *sb = NULL;
	int64_t t0 = ms_clock_now_ns();
	err = ms_sandbox_create(ops, &spec, &sb);
	if (eager_fd >= 0)
		close(eager_fd);
	free(snap);
	if (err)
		return ms_cli_fail("cannot restore", err);
	/* the guest reports first (bringing its mailbox in), then checks itself */
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb);
	rc = 1;
	if ((err = ms_sandbox_run(sb)) || (err = ms_sandbox_wait_report(sb, 60 * MS_NSEC_PER_SEC)))
		goto done;
	double resumed = (double)(ms_clock_now_ns() - t0) / 1e6;
	if (strcmp(o.guest, "counter") == 0) {
		uint64_t before = box[MS_GUEST_RESULT0 / 8];
		if ((err = ms_sandbox_run(sb)) ||
		    (err = ms_sandbox_wait_report(sb, 60 * MS_NSEC_PER_SEC)))
			goto done;
		printf("restore: %s, resumed in %.1f ms; counter %llu -> %llu%s\n",
		       o.eager ? "eager" : "lazy", resumed, (unsigned long long)before,
		       (unsigned long long)box[MS_GUEST_RESULT0 / 8],
		       box[MS_GUEST_RESULT1 / 8] ? " (register and RAM disagree!)" : "");
		rc = box[MS_GUEST_RESULT1 / 8] ? 1 : 0;
		goto done;
	}
	if ((err = ms_vm_command(sb, MS_PATTERN_VERIFY, o.seed, o.epoch)))
		goto done;
	uint64_t bad = box[MS_GUEST_RESULT0 / 8];
	double total = (double)(ms_clock_now_ns() - t0) / 1e6;
	printf("restore: %s, resumed in %.1f ms; the guest verified its memory: %llu mismatched "
	       "pages, %.1f ms in all\n",
	       o.eager ? "eager" : "lazy", resumed, (unsigned long long)bad, total);
	if (o.lazy) /* pages the page server installed: resident in the guest's memfd */
		printf("memory: %llu of %llu pages installed by the page server (%.0f MiB/s)\n",
		       (unsigned long long)ms_vm_resident(box, o.mem),
		       (unsigned long long)(o.mem / P),
		       (double)ms_vm_resident(box, o.mem) * P / (1 << 20) / (total / 1e3));
	rc = bad ? 1 : 0;
done:
	if (!err && !rc && o.control) { /* keep it running: pause|resume|snapshot from outside */
		struct ms_sandbox_paused paused = {.memfd = -1};
		int client = -1;
		box[MS_GUEST_CMD / 8] = 0;
		if ((err = ms_vmctl_serve(o.control, sb, kind, &paused, &client)) == 0) {
			ms_sandbox_destroy(sb);
			sb = NULL;
			printf("paused: %llu pages written since the restore, snapfile %zu bytes\n",
			       (unsigned long long)ms_pageset_count(paused.written),
			       paused.snapfile_len);
			rc = ms_vm_save(&o, &paused, o.lazy ? o.build : NULL, client);
		}
		ms_sandbox_paused_fini(&paused);
	}
	if (err) {
		if (err == -ECHILD)
			fprintf(stderr, "memsnap: the guest died: %s\n",
				ms_sandbox_death_cause(sb));
		rc = ms_cli_fail("restore", err);
	}
	ms_sandbox_destroy(sb);
	return rc;
}
