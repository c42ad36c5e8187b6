/* tls.c - reading the peer link's certificate files (tls.h). */
#include "node/peer/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MS_PEER_PEM_MAX (1u << 20)

bool ms_peer_tls_on(const struct ms_peer_tls *tls)
{
	return tls && ((tls->ca_file && tls->ca_file[0]) || (tls->cert_file && tls->cert_file[0]) ||
		       (tls->key_file && tls->key_file[0]));
}

/* The whole of path as a NUL-terminated string; -errno, -EFBIG, -ENODATA (empty). */
static int ms_peer_pem_read(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int err = 0;
	char *buf = NULL;
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	if (st.st_size > MS_PEER_PEM_MAX) {
		err = -EFBIG;
		goto out;
	}
	if (st.st_size == 0) {
		err = -ENODATA;
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		err = -ENOMEM;
		goto out;
	}
	size_t have = 0;
	while (have < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + have, (size_t)st.st_size - have);
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			goto out;
		}
		have += (size_t)n;
	}
	buf[have] = '\0';
	*out = buf;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return err;
}

int ms_peer_tls_load(const struct ms_peer_tls *tls, struct ms_peer_tls_pem *pem, char *why,
		     size_t why_len)
{
	memset(pem, 0, sizeof(*pem));
	const struct {
		const char *key, *path;
		char **out;
	} files[] = {
	    {"peer_tls_ca", tls ? tls->ca_file : NULL, &pem->ca},
	    {"peer_tls_cert", tls ? tls->cert_file : NULL, &pem->cert},
	    {"peer_tls_key", tls ? tls->key_file : NULL, &pem->key},
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (!files[i].path || !files[i].path[0]) {
			snprintf(
			    why, why_len,
			    "%s is not set (TLS needs the CA, the node's certificate and its key)",
			    files[i].key);
			ms_peer_tls_pem_fini(pem);
			return -EINVAL;
		}
		int err = ms_peer_pem_read(files[i].path, files[i].out);
		if (err) {
			snprintf(why, why_len, "%s %s: %s", files[i].key, files[i].path,
				 err == -ENODATA ? "empty" : strerror(-err));
			ms_peer_tls_pem_fini(pem);
			return err;
		}
	}
	return 0;
}

void ms_peer_tls_pem_fini(struct ms_peer_tls_pem *pem)
{
	free(pem->ca);
	free(pem->cert);
	free(pem->key);
	memset(pem, 0, sizeof(*pem));
}
