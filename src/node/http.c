/*
 * http.c - libmicrohttpd glue: body collection (capped), bearer-token check
 * on TCP, parse, handle, answer. Every request gets a JSON error or its
 * answer; nothing a client sends can stop the server.
 */
#include "node/http.h"
#include "node/api.h"
#include "util/bearer.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MS_MOD "http"

struct ms_listener {
	struct ms_http *http;
	struct MHD_Daemon *daemon;
	int fd;
	bool tcp; /* requires the token */
};

struct ms_http {
	struct ms_node *node;
	char socket_path[MS_NODE_PATH_MAX];
	char token[256];
	struct ms_listener unix_l, tcp_l;
	unsigned tcp_port;
};

/* One request's body, collected across the handler's calls. */
struct ms_body {
	char *data;
	size_t len;
	bool too_large;
};

/*
 * Queues one answer. allow (405: the path's methods) and retry_after (429,
 * 503: seconds) add their headers when set.
 */
static enum MHD_Result ms_http_send(struct MHD_Connection *conn, unsigned status,
				    const char *content_type, char *body, bool auth_challenge,
				    const char *allow, unsigned retry_after)
{
	struct MHD_Response *r =
	    body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
		 : MHD_create_response_from_buffer(0, (char *)"", MHD_RESPMEM_PERSISTENT);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	if (auth_challenge)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (allow && allow[0])
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	if (retry_after) {
		char seconds[16];
		snprintf(seconds, sizeof(seconds), "%u", retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
	}
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result ms_http_send_error(struct ms_http *http, struct MHD_Connection *conn,
					  const struct ms_api_error *err, bool auth_challenge)
{
	ms_node_count_request(http->node, err->status);
	return ms_http_send(conn, err->status, "application/json", ms_api_error_json(err),
			    auth_challenge, err->allow, 0);
}

static enum MHD_Result ms_http_access(void *cls, struct MHD_Connection *conn, const char *url,
				      const char *method, const char *version,
				      const char *upload_data, size_t *upload_data_size,
				      void **con_cls)
{
	struct ms_listener *l = cls;
	struct ms_http *http = l->http;
	(void)version;
	struct ms_body *body = *con_cls;
	if (!body) {
		if (!(body = calloc(1, sizeof(*body))))
			return MHD_NO;
		*con_cls = body;
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (body->too_large || body->len + n > MS_API_BODY_MAX) {
			body->too_large = true;
			return MHD_YES; /* read and drop the rest; answer 413 at the end */
		}
		char *grown = realloc(body->data, body->len + n + 1);
		if (!grown)
			return MHD_NO;
		memcpy(grown + body->len, upload_data, n);
		body->data = grown;
		body->len += n;
		body->data[body->len] = '\0';
		return MHD_YES;
	}
	struct ms_api_error err = {0};
	if (l->tcp && !ms_bearer_ok(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
								MHD_HTTP_HEADER_AUTHORIZATION),
				    http->token)) {
		ms_api_error_set(&err, 401, "unauthorized", "a valid bearer token is required");
		return ms_http_send_error(http, conn, &err, true);
	}
	if (body->too_large) {
		ms_api_error_set(&err, 413, "too_large", "the body is over %d bytes",
				 MS_API_BODY_MAX);
		return ms_http_send_error(http, conn, &err, false);
	}
	struct ms_api_request req;
	if (ms_api_parse(method, url, body->data, body->len, &req, &err))
		return ms_http_send_error(http, conn, &err, false);
	struct ms_node_response resp;
	ms_node_handle(http->node, &req, &resp);
	ms_debug(MS_MOD, "%s %s -> %u", method, url, resp.status);
	ms_node_count_request(http->node, resp.status);
	return ms_http_send(conn, resp.status, resp.content_type, resp.body, false, NULL,
			    resp.retry_after);
}

static void ms_http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			      enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct ms_body *body = *con_cls;
	if (body) {
		free(body->data);
		free(body);
		*con_cls = NULL;
	}
}

static int ms_http_unix_socket(const char *path, char *why, size_t why_len)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(why, why_len, "socket path too long: %s", path);
		return -1;
	}
	strcpy(addr.sun_path, path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(why, why_len, "%s exists and is not a socket", path);
			return -1;
		}
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
			close(probe);
			snprintf(why, why_len, "another daemon answers on %s", path);
			return -1;
		}
		if (probe >= 0)
			close(probe);
		unlink(path); /* stale: its daemon is gone */
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, why_len, "socket: %s", strerror(errno));
		return -1;
	}
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old);
	if (rc || chmod(path, 0600) || listen(fd, 128)) {
		snprintf(why, why_len, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* "127.0.0.1:PORT" (any 127.0.0.0/8 address; port 0: the kernel picks) */
static int ms_http_tcp_socket(const char *listen_at, unsigned *port_out, char *why, size_t why_len)
{
	char host[64];
	const char *colon = strrchr(listen_at, ':');
	char *end;
	unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
	struct sockaddr_in addr = {.sin_family = AF_INET};
	if (!colon || (size_t)(colon - listen_at) >= sizeof(host) || !colon[1] || *end ||
	    port > 65535) {
		snprintf(why, why_len, "tcp_listen: '%s' is not ADDRESS:PORT", listen_at);
		return -1;
	}
	memcpy(host, listen_at, (size_t)(colon - listen_at));
	host[colon - listen_at] = '\0';
	if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
	    (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
		snprintf(why, why_len, "tcp_listen: only 127.0.0.0/8 addresses, not '%s'", host);
		return -1;
	}
	addr.sin_port = htons((uint16_t)port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 128)) {
		snprintf(why, why_len, "tcp_listen %s: %s", listen_at, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	socklen_t len = sizeof(addr);
	getsockname(fd, (struct sockaddr *)&addr, &len);
	*port_out = ntohs(addr.sin_port);
	return fd;
}

static int ms_http_listen(struct ms_listener *l, char *why, size_t why_len)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_ITC | MHD_USE_AUTO;
	l->daemon =
	    MHD_start_daemon(flags, 0, NULL, NULL, ms_http_access, l, MHD_OPTION_LISTEN_SOCKET,
			     l->fd, MHD_OPTION_NOTIFY_COMPLETED, ms_http_completed, NULL,
			     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_END);
	if (!l->daemon) {
		snprintf(why, why_len, "libmicrohttpd did not start on the %s socket",
			 l->tcp ? "TCP" : "unix");
		return -1;
	}
	return 0;
}

struct ms_http *ms_http_start(struct ms_node *node, const struct ms_node_config *cfg, char *why,
			      size_t why_len)
{
	struct ms_http *http = calloc(1, sizeof(*http));
	if (!http) {
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	http->node = node;
	http->unix_l = (struct ms_listener){.http = http, .fd = -1};
	http->tcp_l = (struct ms_listener){.http = http, .fd = -1, .tcp = true};
	snprintf(http->socket_path, sizeof(http->socket_path), "%s", cfg->socket);
	snprintf(http->token, sizeof(http->token), "%s", cfg->token);
	if (cfg->tcp_listen[0] && !cfg->token[0]) {
		snprintf(why, why_len,
			 "tcp_listen needs a bearer token: set token_file or MEMSNAP_TOKEN");
		goto fail;
	}
	if ((http->unix_l.fd = ms_http_unix_socket(cfg->socket, why, why_len)) < 0)
		goto fail;
	if (ms_http_listen(&http->unix_l, why, why_len))
		goto fail;
	if (cfg->tcp_listen[0]) {
		http->tcp_l.fd = ms_http_tcp_socket(cfg->tcp_listen, &http->tcp_port, why, why_len);
		if (http->tcp_l.fd < 0 || ms_http_listen(&http->tcp_l, why, why_len))
			goto fail;
	}
	return http;
fail:
	ms_http_stop(http);
	return NULL;
}

unsigned ms_http_tcp_port(struct ms_http *http)
{
	return http->tcp_port;
}

static void ms_listener_quiesce(struct ms_listener *l)
{
	if (l->daemon) {
		MHD_socket fd = MHD_quiesce_daemon(l->daemon);
		if (fd != MHD_INVALID_SOCKET && fd == l->fd) {
			close(fd);
			l->fd = -1;
		}
	}
}

void ms_http_quiesce(struct ms_http *http)
{
	ms_listener_quiesce(&http->unix_l);
	ms_listener_quiesce(&http->tcp_l);
	unlink(http->socket_path);
}

void ms_http_stop(struct ms_http *http)
{
	if (!http)
		return;
	struct ms_listener *ls[] = {&http->unix_l, &http->tcp_l};
	bool ours = http->unix_l.fd >= 0; /* the socket file is ours until quiesce */
	for (int i = 0; i < 2; i++) {
		if (ls[i]->daemon)
			MHD_stop_daemon(ls[i]->daemon); /* closes a listen socket it still has */
		else if (ls[i]->fd >= 0)
			close(ls[i]->fd);
	}
	if (ours)
		unlink(http->socket_path);
	free(http);
}
