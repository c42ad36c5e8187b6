/*
 * tls.h - the sealed peer link: TLS on the peer server (libmicrohttpd over
 * GnuTLS) and its client (libcurl), both ways authenticated by one fleet CA.
 *
 * Every node holds the fleet CA, its own certificate signed by it, and that
 * certificate's key (PEM files). The server presents its certificate and asks
 * for the client's; a request whose client certificate the CA did not sign (or
 * that brings none) is refused with 403 before its token is looked at. The
 * client presents its certificate and accepts only a server whose certificate
 * the fleet CA signed for the address it dialled (the certificate must name
 * the node's peer address, ADDR of peer_listen, as an IP subjectAltName).
 * Nothing but the fleet CA is trusted: not the system's CAs.
 *
 * A NULL (or all-empty) struct ms_peer_tls means plain HTTP.
 */
#ifndef MS_PEER_TLS_H
#define MS_PEER_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct ms_peer_tls {
	const char *ca_file;   /* the fleet CA certificate(s), PEM */
	const char *cert_file; /* this node's certificate, PEM (signed by the CA) */
	const char *key_file;  /* its private key, PEM, unencrypted */
};

/* The PEM bytes of the three files, NUL-terminated (libmicrohttpd takes them from memory). */
struct ms_peer_tls_pem {
	char *ca, *cert, *key;
};

/* Whether tls asks for TLS (any of its files given). */
bool ms_peer_tls_on(const struct ms_peer_tls *tls);
/*
 * Reads the three files (each at most 1 MiB) into pem. 0, or -EINVAL when one
 * is not given (which one is in why), -errno of the read (why names the file);
 * on error nothing is kept.
 */
int ms_peer_tls_load(const struct ms_peer_tls *tls, struct ms_peer_tls_pem *pem, char *why,
		     size_t why_len);
void ms_peer_tls_pem_fini(struct ms_peer_tls_pem *pem);

#endif
