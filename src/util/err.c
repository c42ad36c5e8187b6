/* err.c - messages for memsnap's error codes. */
#include "util/err.h"

#include <assert.h>
#include <string.h>

/* Messages in the order of enum ms_err, from MS_ECORRUPT on. */
static const char *const ms_messages[] = {
    "corrupt or malformed data",			  /* MS_ECORRUPT */
    "checksum mismatch",				  /* MS_ECHECKSUM */
    "object not found",					  /* MS_ENOTFOUND */
    "over the size limit",				  /* MS_ETOOBIG */
    "unsupported format version",			  /* MS_EVERSION */
    "header is incomplete (pending upload)",		  /* MS_EINCOMPLETE */
    "source closed or evicted",				  /* MS_ECLOSED */
    "protocol error",					  /* MS_EPROTO */
    "remote store error",				  /* MS_EREMOTE */
    "operation cancelled",				  /* MS_ECANCELED */
    "I/O fault while reading a mapping (SIGBUS/SIGSEGV)", /* MS_EFAULT_IO */
    "snapshot belongs to another sandbox backend",	  /* MS_EBACKEND */
};
static_assert(sizeof(ms_messages) / sizeof(ms_messages[0]) == -MS_ERR_LAST - MS_ERR_BASE - 1,
	      "one message per error code");

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
