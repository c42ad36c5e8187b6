/* ms_test.c - shared test helpers. */
#include "ms_test.h"
#include "sandbox/memory.h"
#include "sandbox/sandbox.h"
#include "node/peer/tls.h"
#include "util/err.h"
#include "util/faultsafe.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct ms_sandbox_ops *ms_test_backend(const char *name)
{
	const struct ms_sandbox_ops *ops = NULL;
	char why[320];
	int err = ms_sandbox_backend_pick(name ? name : "proc", &ops, why, sizeof(why));
	if (err == -ENODEV)
		MS_TEST_SKIP_EXIT("%s", why);
	if (err) {
		fprintf(stderr, "%s\n", why);
		exit(1);
	}
	print_message("%s\n", why);
	/* MS_TEST_TRACKER=async|sync: the written-page tracker the end-to-end tests run under */
	const char *tracker = getenv("MS_TEST_TRACKER");
	enum ms_tracker_mode mode = MS_TRACKER_AUTO;
	if (tracker && ms_tracker_mode_parse(tracker, &mode)) {
		fprintf(stderr, "MS_TEST_TRACKER=%s: not auto, async or sync\n", tracker);
		exit(1);
	}
	if (ms_tracker_pick(mode, false, &mode, why, sizeof(why)))
		MS_TEST_SKIP_EXIT("%s", why);
	ms_tracker_set_mode(mode);
	print_message("tracker %s: %s\n", ms_tracker_mode_name(mode), why);
	return ops;
}

struct ms_sandbox *ms_test_sandbox_start(const struct ms_sandbox_ops *ops, int kind, uint64_t mem)
{
	struct ms_sandbox_spec spec = {
	    .guest = (enum ms_guest_kind)kind, .mem_size = mem, .memory = MS_SANDBOX_FRESH};
	struct ms_sandbox *sb = NULL;
	int err = ms_sandbox_create(ops, &spec, &sb);
	if (err == -ENOTSUP)
		MS_TEST_SKIP_EXIT("the kernel lacks the %s tracker's userfaultfd features",
				  ms_tracker_mode_name(ms_tracker_mode()));
	if (err)
		fail_msg("%s: start: %s", ops->name, ms_strerror(err));
	return sb;
}

struct ms_sandbox *ms_test_sandbox_restore_eager(const struct ms_sandbox_ops *ops,
						 const struct ms_sandbox_paused *paused,
						 uint64_t mem)
{
	struct ms_sandbox_spec spec = {.mem_size = mem,
				       .memory = MS_SANDBOX_EAGER,
				       .eager_fd = paused->memfd,
				       .snapfile = paused->snapfile,
				       .snapfile_len = paused->snapfile_len};
	struct ms_sandbox *sb = NULL;
	int err = ms_sandbox_create(ops, &spec, &sb);
	if (err)
		fail_msg("%s: eager restore: %s", ops->name, ms_strerror(err));
	return sb;
}

char *ms_test_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *path = NULL;
	if (asprintf(&path, "%s/memsnap-test.XXXXXX", base ? base : "/tmp") < 0)
		return NULL;
	if (!mkdtemp(path)) {
		free(path);
		return NULL;
	}
	return path;
}

static int ms_test_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void ms_test_rmtree(const char *path)
{
	if (path)
		nftw(path, ms_test_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static struct sigaction ms_test_fs_bus, ms_test_fs_segv, ms_test_cm_bus, ms_test_cm_segv;

int ms_test_faultsafe_init(void)
{
	char probe = 1, copy = 0;
	if (ms_faultsafe_copy(&copy, &probe, 1) != 0) /* installs the fault-safe handlers */
		return -1;
	if (sigaction(SIGBUS, NULL, &ms_test_fs_bus) || sigaction(SIGSEGV, NULL, &ms_test_fs_segv))
		return -1;
	return 0;
}

void ms_test_faultsafe_enter(void)
{
	assert_int_equal(sigaction(SIGBUS, &ms_test_fs_bus, &ms_test_cm_bus), 0);
	assert_int_equal(sigaction(SIGSEGV, &ms_test_fs_segv, &ms_test_cm_segv), 0);
}

void ms_test_faultsafe_leave(void)
{
	sigaction(SIGBUS, &ms_test_cm_bus, NULL);
	sigaction(SIGSEGV, &ms_test_cm_segv, NULL);
}

int ms_test_peer_tls_load(const char *dir, const char *name, struct ms_peer_tls_pem *pem, char *why,
			  size_t why_len)
{
	char ca[512], cert[512], key[512];
	snprintf(ca, sizeof(ca), "%s/fleet.pem", dir);
	snprintf(cert, sizeof(cert), "%s/%s.pem", dir, name);
	snprintf(key, sizeof(key), "%s/%s.key", dir, name);
	struct ms_peer_tls files = {.ca_file = ca, .cert_file = cert, .key_file = key};
	return ms_peer_tls_load(&files, pem, why, why_len) ? -1 : 0;
}
