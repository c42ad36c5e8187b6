/*
 * cmd_pageserver.c - "memsnap pageserver": serve one build's memory to every
 * VMM that connects with Firecracker's userfaultfd handshake.
 *
 * The build's header is loaded from the store; pages are read through a
 * layered file whose builds come from the store via the diff store (chunked,
 * cached under --cache-dir). One session per connection, until SIGTERM/SIGINT;
 * a one-line summary per session.
 */
#include "build/buildfile.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "header/serialize.h"
#include "uffd/filesource.h"
#include "uffd/pageserver.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const pageserver_usage =
    "usage: memsnap pageserver --store URI --build ID --socket PATH [options]\n"
    "\n"
    "Serves build ID's memory (resolved through its header and its ancestors' data in\n"
    "the store) to every VMM that connects to PATH with Firecracker's userfaultfd\n"
    "handshake (point Firecracker's mem_backend.backend_path here). Runs until SIGTERM.\n"
    "\n"
    "options:\n"
    "  --store URI       file:///dir or s3://bucket/prefix (required)\n"
    "  --endpoint URL    S3 endpoint (default $MEMSNAP_S3_ENDPOINT)\n"
    "  --build ID        the build to serve (required)\n"
    "  --socket PATH     unix socket to listen on, mode 0600 (required)\n"
    "  --cache-dir DIR   local chunk cache (default: a new directory under /tmp)\n"
    "  --batch BYTES     aligned block installed per fault, 4096..2097152 (default 65536)\n"
    "  --workers N       fetch threads per session (default 4)\n"
    "  -h, --help        this help\n";

static atomic_int ms_pageserver_stop_flag;

static void ms_pageserver_on_signal(int sig)
{
	(void)sig;
	atomic_store(&ms_pageserver_stop_flag, 1);
}

struct ms_ps_active {
	struct ms_uffd_session *session;
	int64_t started_ns;
	unsigned number;
};

static void ms_ps_summary(const struct ms_ps_active *a)
{
	const struct ms_uffd_metrics *m = ms_uffd_session_metrics(a->session);
	enum ms_uffd_session_state state = ms_uffd_session_state(a->session);
	int err = ms_uffd_session_error(a->session, NULL);
	uint64_t faults = atomic_load(&m->faults_read) + atomic_load(&m->faults_write) +
			  atomic_load(&m->faults_wp);
	printf("session %u (pid %d): %s%s%s, pages served %llu, zero pages %llu, faults %llu, "
	       "errors %llu, %.3f s\n",
	       a->number, (int)ms_uffd_session_peer_pid(a->session),
	       state == MS_UFFD_SESSION_FAILED ? "FAILED: " : "closed",
	       state == MS_UFFD_SESSION_FAILED ? ms_strerror(err) : "", "",
	       (unsigned long long)atomic_load(&m->pages_source),
	       (unsigned long long)atomic_load(&m->pages_zero), (unsigned long long)faults,
	       (unsigned long long)(atomic_load(&m->source_errors) + atomic_load(&m->errors)),
	       (double)(ms_clock_now_ns() - a->started_ns) / 1e9);
	fflush(stdout);
}

int ms_cli_pageserver(int argc, char **argv)
{
	static const struct option opts[] = {
	    MS_CLI_STORE_OPTIONS,
	    {"build", required_argument, NULL, 'b'},
	    {"socket", required_argument, NULL, 'S'},
	    {"cache-dir", required_argument, NULL, 'c'},
	    {"batch", required_argument, NULL, 'B'},
	    {"workers", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *store_uri = NULL, *endpoint = NULL, *build = NULL, *socket_path = NULL;
	char *cache_dir = NULL;
	unsigned long batch = 65536, workers = 4;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 'b':
			build = optarg;
			break;
		case 'S':
			socket_path = optarg;
			break;
		case 'c':
			cache_dir = optarg;
			break;
		case 'B':
			batch = strtoul(optarg, &end, 0);
			if (!*optarg || *end || batch < 4096 || batch > (2u << 20) ||
			    (batch & (batch - 1))) {
				fprintf(stderr,
					"memsnap: --batch must be a power of two, 4096..2097152\n");
				return 2;
			}
			break;
		case 'w':
			workers = strtoul(optarg, &end, 10);
			if (!*optarg || *end || workers < 1 || workers > 64) {
				fprintf(stderr, "memsnap: --workers must be 1..64\n");
				return 2;
			}
			break;
		case 'h':
			fputs(pageserver_usage, stdout);
			return 0;
		default:
			if (ms_cli_store_option(c, optarg, &store_uri, &endpoint))
				break;
			fputs(pageserver_usage, stderr);
			return 2;
		}
	}
	if (!store_uri || !build || !socket_path || optind != argc) {
		fputs(pageserver_usage, stderr);
		return 2;
	}
	ms_uuid id;
	if (ms_uuid_parse(build, &id)) {
		fprintf(stderr, "memsnap: --build: not a build id: %s\n", build);
		return 2;
	}
	int err, rc = 1;
	char tmp_cache[] = "/tmp/memsnap-pageserver.XXXXXX";
	bool own_cache = !cache_dir;
	if (own_cache && !(cache_dir = mkdtemp(tmp_cache)))
		return ms_cli_fail("cache dir", -errno);
	if (!own_cache && mkdir(cache_dir, 0700) && errno != EEXIST)
		return ms_cli_fail(cache_dir, -errno);
	struct ms_store *store = ms_cli_store_open(store_uri, endpoint, &err);
	struct ms_build_file *bf = NULL;
	struct ms_pageserver *srv = NULL;
	struct ms_ps_active active[256];
	unsigned nactive = 0, served = 0;
	if (!store) {
		rc = ms_cli_fail(store_uri, err);
		goto out;
	}
	if (!(bf = ms_build_file_open(store, &id, cache_dir, &err))) {
		rc = ms_cli_fail("cannot open the build", err);
		goto out;
	}
	uint64_t size = ms_layered_size(bf->file);
	struct ms_pageserver_options options = {.workers = (unsigned)workers, .batch_bytes = batch};
	if (!(srv = ms_pageserver_new(socket_path, &ms_layered_page_source_ops, bf->file, &options,
				      &err))) {
		rc = ms_cli_fail(socket_path, err);
		goto out;
	}
	struct sigaction sa = {.sa_handler = ms_pageserver_on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("pageserver: serving build %s (%llu MiB) on %s, batch %lu, workers %lu\n", build,
	       (unsigned long long)(size >> 20), socket_path, batch, workers);
	fflush(stdout);
	while (!atomic_load(&ms_pageserver_stop_flag)) {
		struct ms_uffd_session *s = NULL;
		err = ms_pageserver_next_session(srv, 200 * MS_NSEC_PER_MSEC, &s);
		if (!err && nactive < sizeof(active) / sizeof(active[0])) {
			active[nactive++] = (struct ms_ps_active){s, ms_clock_now_ns(), ++served};
		} else if (!err) {
			ms_warn("pageserver", "too many sessions; not tracking pid %d",
				(int)ms_uffd_session_peer_pid(s));
			ms_uffd_session_unref(s);
		}
		for (unsigned i = 0; i < nactive;) {
			if (ms_uffd_session_wait(active[i].session, 0) == 0) {
				ms_ps_summary(&active[i]);
				ms_uffd_session_unref(active[i].session);
				active[i] = active[--nactive];
			} else {
				i++;
			}
		}
	}
	printf("pageserver: stopping\n");
	ms_pageserver_stop(srv);
	for (unsigned i = 0; i < nactive; i++) {
		ms_ps_summary(&active[i]);
		ms_uffd_session_unref(active[i].session);
	}
	rc = 0;
out:
	ms_pageserver_free(srv);
	ms_build_file_free(bf);
	ms_store_free(store);
	if (own_cache)
		rmdir(cache_dir);
	return rc;
}
