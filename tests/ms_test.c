/* ms_test.c - shared test helpers. */
#include "ms_test.h"
#include "sandbox/sandbox.h"

#include <errno.h>
#include <ftw.h>
#include <string.h>
#include <unistd.h>

const struct ms_sandbox_ops *ms_test_backend(const char *name)
{
	const struct ms_sandbox_ops *ops = NULL;
	char why[160];
	int err = ms_sandbox_backend_pick(name ? name : "proc", &ops, why, sizeof(why));
	if (err == -ENODEV)
		MS_TEST_SKIP_EXIT("%s", why);
	if (err) {
		fprintf(stderr, "%s\n", why);
		exit(1);
	}
	print_message("%s\n", why);
	return ops;
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
