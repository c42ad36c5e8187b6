/* err.c - messages for memsnap's error codes. */
#include "util/err.h"

#include <string.h>

static const char *const ms_messages[] = {
	[MS_ERR_BASE + 1 - MS_ERR_BASE - 1] = "corrupt or malformed data",
	[MS_ERR_BASE + 2 - MS_ERR_BASE - 1] = "checksum mismatch",
	[MS_ERR_BASE + 3 - MS_ERR_BASE - 1] = "object not found",
	[MS_ERR_BASE + 4 - MS_ERR_BASE - 1] = "over the size limit",
	[MS_ERR_BASE + 5 - MS_ERR_BASE - 1] = "unsupported format version",
	[MS_ERR_BASE + 6 - MS_ERR_BASE - 1] = "header is incomplete (pending upload)",
	[MS_ERR_BASE + 7 - MS_ERR_BASE - 1] = "source closed or evicted",
	[MS_ERR_BASE + 8 - MS_ERR_BASE - 1] = "protocol error",
	[MS_ERR_BASE + 9 - MS_ERR_BASE - 1] = "remote store error",
	[MS_ERR_BASE + 10 - MS_ERR_BASE - 1] = "operation cancelled",
	[MS_ERR_BASE + 11 - MS_ERR_BASE - 1] = "I/O fault while reading a mapping (SIGBUS/SIGSEGV)",
	[MS_ERR_BASE + 12 - MS_ERR_BASE - 1] = "snapshot belongs to another sandbox backend",
};

const char *ms_strerror(int err)
{
	if (err == 0)
		return "success";
	if (err < 0 && err > -MS_ERR_BASE)
		return strerror(-err);
	if (err <= -(MS_ERR_BASE + 1) && err > MS_ERR_LAST)
		return ms_messages[-err - MS_ERR_BASE - 1];
	return "unknown error";
}
