/*
 * test_fc_artifacts.c - Firecracker artifacts in and out, as a Firecracker user
 * runs them: `memsnap build import` of a full memory file (two guest regions
 * back to back) and of a sparse diff file over it, each served by `memsnap
 * pageserver` to a Firecracker-like child (uffd_test_util.c: it sends the
 * region list and the uffd, and touches every page); `memsnap build export`
 * writes the memory back. Every byte is checked against a model built here.
 * Refusals: a diff whose size is not the parent's, a size that is not a
 * multiple of 4 KiB, --diff without --parent; none leaves a build behind.
 */
#include "ms_test.h"
#include "uffd_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE  4096ULL
#define PAGES 2048ULL /* 8 MiB: two 4 MiB regions */
#define SIZE  (PAGES * PAGE)

struct fc_env {
	char *dir;
	char exe[1024], store[600], uri[700];
};

static void fc_env_init(struct fc_env *e)
{
	const char *build_root = getenv("MEMSNAP_BUILD_ROOT");
	assert_non_null(build_root);
	e->dir = ms_test_tmpdir();
	snprintf(e->exe, sizeof(e->exe), "%s/src/cli/memsnap", build_root);
	snprintf(e->store, sizeof(e->store), "%s/store", e->dir);
	snprintf(e->uri, sizeof(e->uri), "file://%s", e->store);
}

static void fc_env_fini(struct fc_env *e)
{
	ms_test_rmtree(e->dir);
	free(e->dir);
}

/*
 * Runs memsnap with args (NULL-terminated); its stdout's first line goes to
 * out (may be NULL), stderr to err_path. Returns the exit status.
 */
static int run_memsnap(const struct fc_env *e, char *out, size_t out_len, const char *err_path,
		       const char *const *args)
{
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], 1);
		int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 2);
		close(pipefd[0]);
		const char *argv[32] = {e->exe};
		for (int i = 0; args[i] && i < 30; i++)
			argv[i + 1] = args[i];
		execv(e->exe, (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	char buf[4096];
	size_t got = 0;
	ssize_t n;
	while ((n = read(pipefd[0], buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	close(pipefd[0]);
	buf[got] = '\0';
	if (out) {
		size_t line = strcspn(buf, "\n");
		if (line >= out_len)
			line = out_len - 1;
		memcpy(out, buf, line);
		out[line] = '\0';
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static bool file_contains(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	char buf[8192];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

static unsigned count_builds(const char *store)
{
	DIR *d = opendir(store);
	if (!d)
		return 0;
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void write_file(const char *path, const uint8_t *data, uint64_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static uint8_t *read_file(const char *path, uint64_t *len)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	uint8_t *buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (uint64_t)st.st_size;
	return buf;
}

/* Serves build id with `memsnap pageserver`; a 2-region Firecracker-like child checks image. */
static void serve_and_check(const struct fc_env *e, const char *id, const uint8_t *image)
{
	char sock[700], log[700];
	snprintf(sock, sizeof(sock), "%s/fc-%s.sock", e->dir, id);
	snprintf(log, sizeof(log), "%s/ps-%s.log", e->dir, id);
	unlink(sock);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(e->exe, e->exe, "pageserver", "--store", e->uri, "--build", id, "--socket",
		      sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 250 && access(sock, F_OK) != 0; i++)
		usleep(20000);
	assert_int_equal(access(sock, F_OK), 0);
	struct fc_child_cfg cfg = {.sock_path = sock,
				   .size = SIZE,
				   .page_size = PAGE,
				   .regions = 2,
				   .wp = true,
				   .source = image};
	struct fc_child child;
	assert_int_equal(fc_child_start(&cfg, &child), 0);
	int64_t bad = fc_child_cmd(&child, FC_READ_CHECK, 0, SIZE, 0, 60000);
	fc_child_exit(&child);
	kill(pid, SIGTERM);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (bad != 0)
		fail_msg("the guest read %lld wrong pages of build %s", (long long)bad, id);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A guest's memory: distinct pages, every 7th zero, pages 10..19 all equal. */
static uint8_t *make_image(void)
{
	uint8_t *image = malloc(SIZE);
	assert_non_null(image);
	for (uint64_t p = 0; p < PAGES; p++) {
		uint8_t *page = image + p * PAGE;
		if (p % 7 == 3) {
			memset(page, 0, PAGE);
			continue;
		}
		for (uint64_t i = 0; i < PAGE; i += 8) {
			uint64_t v = (p >= 10 && p < 20 ? 10 : p) * 0x9e3779b97f4a7c15ULL + i;
			memcpy(page + i, &v, 8);
		}
	}
	return image;
}

static void test_import_serve_export(void **state)
{
	(void)state;
	if (!test_uffd_available())
		skip();
	struct fc_env e;
	fc_env_init(&e);
	char path[800], vmstate[800], errlog[800], out_mem[800], id[128], id2[128];
	snprintf(path, sizeof(path), "%s/full.mem", e.dir);
	snprintf(vmstate, sizeof(vmstate), "%s/vmstate", e.dir);
	snprintf(errlog, sizeof(errlog), "%s/import.err", e.dir);
	snprintf(out_mem, sizeof(out_mem), "%s/export.mem", e.dir);
	uint8_t *image = make_image();
	write_file(path, image, SIZE);
	write_file(vmstate, (const uint8_t *)"firecracker vmstate bytes", 25);

	/* a full memory file */
	const char *full[] = {"build", "import",  "--mem", path, "--vmstate",
			      vmstate, "--store", e.uri,   NULL};
	assert_int_equal(run_memsnap(&e, id, sizeof(id), errlog, full), 0);
	assert_int_equal(strlen(id), 36);
	assert_true(file_contains(errlog, "2048 written pages"));
	serve_and_check(&e, id, image);

	/* the vmstate is the snapfile behind the format marker; metadata names it */
	char obj[900];
	uint64_t len;
	snprintf(obj, sizeof(obj), "%s/%s/snapfile", e.store, id);
	uint8_t *snap = read_file(obj, &len);
	assert_int_equal(len, 32 + 25);
	assert_memory_equal(snap, "MSFCVMST", 8);
	assert_memory_equal(snap + 32, "firecracker vmstate bytes", 25);
	free(snap);
	snprintf(obj, sizeof(obj), "%s/%s/metadata.json", e.store, id);
	assert_true(file_contains(obj, "\"snapfile_format\":\"firecracker-vmstate\""));

	/* a sparse diff over it: pages on both sides of the region boundary, the first and
	 * last page, a page equal to the parent's (dropped by the compare) and a page the
	 * guest zeroed over a non-zero parent page (it must read zero) */
	static const uint64_t pages[] = {0, 1, 511, 1023, 1024, 1025, PAGES - 1};
	uint8_t *expect = malloc(SIZE);
	assert_non_null(expect);
	memcpy(expect, image, SIZE);
	snprintf(path, sizeof(path), "%s/diff.mem", e.dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)SIZE), 0);
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		memset(expect + pages[i] * PAGE, 0x40 + (int)i, PAGE);
		assert_int_equal(
		    pwrite(fd, expect + pages[i] * PAGE, PAGE, (off_t)(pages[i] * PAGE)),
		    (ssize_t)PAGE);
	}
	assert_int_equal(pwrite(fd, image + 200 * PAGE, PAGE, 200 * PAGE), (ssize_t)PAGE);
	memset(expect + 300 * PAGE, 0, PAGE);
	assert_int_equal(pwrite(fd, expect + 300 * PAGE, PAGE, 300 * PAGE), (ssize_t)PAGE);
	close(fd);
	const char *diff[] = {"build",	  "import", "--mem",   path,  "--diff",
			      "--parent", id,	    "--store", e.uri, NULL};
	assert_int_equal(run_memsnap(&e, id2, sizeof(id2), errlog, diff), 0);
	/* 7 + the equal page + the zeroed page written; the equal one dropped, one zero */
	assert_true(
	    file_contains(errlog, "9 written pages, 1 equal to the parent, 1 zero, 7 kept"));
	serve_and_check(&e, id2, expect);

	/* export: the whole memory of the 2-layer build, zero pages left as holes */
	const char *exp[] = {"build", "export", id2, "--mem", out_mem, "--store", e.uri, NULL};
	assert_int_equal(run_memsnap(&e, NULL, 0, errlog, exp), 0);
	uint8_t *exported = read_file(out_mem, &len);
	assert_int_equal(len, SIZE);
	assert_memory_equal(exported, expect, SIZE);
	free(exported);
	struct stat st;
	assert_int_equal(stat(out_mem, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 < SIZE); /* sparse: the zero pages are holes */

	/* refusals, none of which leaves a build in the store */
	unsigned builds = count_builds(e.store);
	snprintf(path, sizeof(path), "%s/small.mem", e.dir);
	write_file(path, image, SIZE / 2);
	const char *small[] = {"build",	   "import", "--mem",	path,  "--diff",
			       "--parent", id,	     "--store", e.uri, NULL};
	assert_int_equal(run_memsnap(&e, NULL, 0, errlog, small), 1);
	assert_true(file_contains(errlog, "a snapshot's memory has its parent's size"));
	snprintf(path, sizeof(path), "%s/odd.mem", e.dir);
	write_file(path, image, 5000);
	const char *odd[] = {"build", "import", "--mem", path, "--store", e.uri, NULL};
	assert_int_equal(run_memsnap(&e, NULL, 0, errlog, odd), 1);
	assert_true(file_contains(errlog, "multiple of 4096"));
	const char *orphan[] = {"build", "import", "--mem", path, "--diff", "--store", e.uri, NULL};
	assert_int_equal(run_memsnap(&e, NULL, 0, errlog, orphan), 2);
	assert_true(file_contains(errlog, "--diff needs --parent"));
	const char *missing[] = {"build", "export", "00000000-0000-0000-0000-0000000000aa",
				 "--mem", out_mem,  "--store",
				 e.uri,	  NULL};
	assert_int_equal(run_memsnap(&e, NULL, 0, errlog, missing), 1);
	assert_int_equal(count_builds(e.store), builds);

	free(expect);
	free(image);
	fc_env_fini(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_import_serve_export),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
