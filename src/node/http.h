/*
 * http.h - memsnapd's HTTP server: libmicrohttpd on a unix socket (always)
 * and optionally TCP on 127.0.0.0/8 with a bearer token, feeding
 * ms_api_parse() and ms_node_handle().
 *
 * The listening sockets are made here (MHD takes them as
 * MHD_OPTION_LISTEN_SOCKET): the unix socket is mode 0600, refused when
 * another daemon answers on it, and a stale socket file is replaced. One
 * thread per connection, so a long request (a guest verifying its memory)
 * never holds up another.
 */
#ifndef MS_NODE_HTTP_H
#define MS_NODE_HTTP_H

#include "node/config.h"
#include "node/node.h"

struct ms_http;

/* Starts listening. NULL on error with why filled. */
struct ms_http *ms_http_start(struct ms_node *node, const struct ms_node_config *cfg, char *why,
			      size_t why_len);
/* The TCP port actually bound (tcp_listen may say port 0), or 0 without TCP. */
unsigned ms_http_tcp_port(struct ms_http *http);
/* Stops accepting connections (requests in progress go on); removes the socket file. */
void ms_http_quiesce(struct ms_http *http);
/* Closes every connection and frees. */
void ms_http_stop(struct ms_http *http);

#endif
