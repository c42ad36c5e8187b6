/*
 * err.h - memsnap error codes.
 *
 * Functions return 0 or a negative errno. Project errors that no errno names
 * (a corrupt header, a checksum mismatch, a missing object) live in a reserved
 * negative range below MS_ERR_BASE so they never collide with -errno values.
 * ms_strerror() names both kinds.
 */
#ifndef MS_UTIL_ERR_H
#define MS_UTIL_ERR_H

#define MS_ERR_BASE 4096

enum ms_err {
	MS_ECORRUPT = -(MS_ERR_BASE + 1), /* malformed or hostile input (header, snapfile, frame) */
	MS_ECHECKSUM = -(MS_ERR_BASE + 2),   /* data does not match its checksum */
	MS_ENOTFOUND = -(MS_ERR_BASE + 3),   /* object or key does not exist */
	MS_ETOOBIG = -(MS_ERR_BASE + 4),     /* over a documented size cap */
	MS_EVERSION = -(MS_ERR_BASE + 5),    /* unsupported format version */
	MS_EINCOMPLETE = -(MS_ERR_BASE + 6), /* header still pending upload: may not be persisted */
	MS_ECLOSED = -(MS_ERR_BASE + 7),     /* source closed or evicted: re-plan the read */
	MS_EPROTO = -(MS_ERR_BASE + 8),	     /* protocol violation by a peer (handshake, HTTP) */
	MS_EREMOTE = -(MS_ERR_BASE + 9),     /* remote store answered with an error status */
	MS_ECANCELED = -(MS_ERR_BASE + 10),  /* work cancelled through its token */
	MS_EFAULT_IO = -(MS_ERR_BASE + 11),  /* SIGBUS/SIGSEGV while copying from a mapping */
	MS_EBACKEND = -(MS_ERR_BASE + 12),   /* snapfile of another sandbox backend */
	MS_ERR_LAST = -(MS_ERR_BASE + 13),
};

/* A message for 0, a negative errno, or an MS_E* code. Never NULL; static storage. */
const char *ms_strerror(int err);

#endif
