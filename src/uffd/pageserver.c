/*
 * pageserver.c - the listening side: unix socket, accept, handshake, sessions.
 *
 * One acceptor thread polls the listening socket and a stop eventfd. Each
 * accepted connection gets accept_timeout_ms to deliver Firecracker's
 * handshake (handshake.h); a bad one is logged and closed with every fd it
 * carried, and the loop goes on. A good one starts a session (session.c),
 * which runs on its own threads until its peer exits or the server stops.
 *
 * Invariants:
 *  1. sessions[] holds one reference to every session started; released only
 *     by ms_pageserver_free after every session was stopped.
 *  2. After ms_pageserver_stop returns, no session thread and no acceptor
 *     runs, and the socket file is gone.
 */
#include "uffd/pageserver.h"
#include "uffd/handshake.h"
#include "uffd/session.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PS_MOD "uffd"

struct ms_pageserver {
	/* Immutable after new. */
	char *path;
	const struct ms_page_source_ops *ops;
	void *ctx;
	struct ms_pageserver_options options;
	int listen_fd;
	int stop_efd;
	pthread_t acceptor;

	pthread_mutex_t lock; /* guards sessions, handed_out, stopped, joined */
	pthread_cond_t cond;  /* a session was added, or the server stopped */
	struct ms_uffd_session **sessions;
	size_t session_count, session_cap;
	size_t handed_out; /* sessions[0, handed_out) were returned by next_session */
	bool stopped;
	bool joined;

	_Atomic uint64_t accepted;
	_Atomic uint64_t rejected;
};

static int ps_add_session(struct ms_pageserver *srv, struct ms_uffd_session *s)
{
	pthread_mutex_lock(&srv->lock);
	if (srv->session_count == srv->session_cap) {
		size_t cap = srv->session_cap ? srv->session_cap * 2 : 8;
		struct ms_uffd_session **grown = realloc(srv->sessions, cap * sizeof(*grown));
		if (!grown) {
			pthread_mutex_unlock(&srv->lock);
			return -ENOMEM;
		}
		srv->sessions = grown;
		srv->session_cap = cap;
	}
	srv->sessions[srv->session_count++] = s;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	return 0;
}

/* Handshake on conn, then a session. Takes conn. */
static void ps_handle_connection(struct ms_pageserver *srv, int conn, uint64_t id)
{
	char *text = NULL;
	size_t len = 0;
	int fds[2] = {-1, -1}, nfds = 0;
	int64_t timeout = (int64_t)srv->options.accept_timeout_ms * MS_NSEC_PER_MSEC;
	int err = ms_uffd_handshake_recv(conn, timeout, &text, &len, fds, &nfds);
	if (err)
		goto fail_conn;
	struct ms_uffd_handshake hs;
	err = ms_uffd_handshake_parse(text, len, srv->ops->size(srv->ctx), &hs);
	free(text);
	if (err)
		goto fail_fds;
	struct ms_uffd_session_config cfg = {
	    .ops = srv->ops, .ctx = srv->ctx, .options = &srv->options, .id = id};
	struct ms_uffd_session *s;
	err = ms_uffd_session_start(&cfg, &hs, fds[0], fds[1], conn, &s);
	if (err) {
		/* start took and closed the fds */
		ms_err(PS_MOD, "connection %llu: cannot start a session: %s",
		       (unsigned long long)id, ms_strerror(err));
		atomic_fetch_add(&srv->rejected, 1);
		return;
	}
	if (srv->options.on_session_start)
		srv->options.on_session_start(srv->options.start_arg, s);
	err = ps_add_session(srv, s);
	if (err) {
		ms_err(PS_MOD, "connection %llu: %s", (unsigned long long)id, ms_strerror(err));
		ms_uffd_session_unref(s);
		atomic_fetch_add(&srv->rejected, 1);
		return;
	}
	atomic_fetch_add(&srv->accepted, 1);
	return;

fail_fds:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
fail_conn:
	ms_warn(PS_MOD, "connection %llu: handshake rejected: %s", (unsigned long long)id,
		ms_strerror(err));
	atomic_fetch_add(&srv->rejected, 1);
	close(conn);
}

static void *ps_acceptor_main(void *arg)
{
	struct ms_pageserver *srv = arg;
	uint64_t next_id = 1;
	for (;;) {
		struct pollfd pfd[2] = {{.fd = srv->listen_fd, .events = POLLIN},
					{.fd = srv->stop_efd, .events = POLLIN}};
		int rc = poll(pfd, 2, -1);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			ms_err(PS_MOD, "accept loop: poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		int conn = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
				ms_warn(PS_MOD, "accept: %s", strerror(errno));
			if (errno == EMFILE || errno == ENFILE)
				ms_clock_sleep_ns(10 * MS_NSEC_PER_MSEC);
			continue;
		}
		ps_handle_connection(srv, conn, next_id++);
	}
	return NULL;
}

/* Binds a fresh socket at path; an existing socket file is replaced, other files are not. */
static int ps_listen(const char *path, int *out)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		if (unlink(path) != 0)
			return -errno;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int err;
	/* Create the socket file 0600 from the start: no window where others may connect. */
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old);
	if (rc != 0) {
		err = -errno;
		goto fail_fd;
	}
	if (chmod(path, 0600) != 0 || listen(fd, 16) != 0) {
		err = -errno;
		goto fail_bound;
	}
	*out = fd;
	return 0;

fail_bound:
	unlink(path);
fail_fd:
	close(fd);
	return err;
}

struct ms_pageserver *ms_pageserver_new(const char *socket_path,
					const struct ms_page_source_ops *ops, void *ctx,
					const struct ms_pageserver_options *options, int *err)
{
	*err = -EINVAL;
	if (!socket_path || !ops || !ops->read || !ops->size)
		return NULL;
	struct ms_pageserver_options opts = options ? *options : (struct ms_pageserver_options){0};
	if (opts.batch_bytes &&
	    (opts.batch_bytes & (opts.batch_bytes - 1) || opts.batch_bytes > MS_UFFD_PAGE_2M)) {
		ms_err(PS_MOD, "batch_bytes %llu: must be a power of two up to 2 MiB",
		       (unsigned long long)opts.batch_bytes);
		return NULL;
	}
	if (opts.accept_timeout_ms <= 0)
		opts.accept_timeout_ms = 10000;
	*err = -ENOMEM;
	struct ms_pageserver *srv = calloc(1, sizeof(*srv));
	if (!srv)
		goto fail;
	srv->path = strdup(socket_path);
	if (!srv->path)
		goto fail_srv;
	srv->ops = ops;
	srv->ctx = ctx;
	srv->options = opts;
	srv->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->stop_efd < 0) {
		*err = -errno;
		goto fail_path;
	}
	*err = ps_listen(socket_path, &srv->listen_fd);
	if (*err)
		goto fail_efd;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&srv->cond, &attr);
	pthread_condattr_destroy(&attr);
	*err = -pthread_create(&srv->acceptor, NULL, ps_acceptor_main, srv);
	if (*err)
		goto fail_listen;
	ms_info(PS_MOD, "page server listening on %s (image %llu bytes)", socket_path,
		(unsigned long long)ops->size(ctx));
	*err = 0;
	return srv;

fail_listen:
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
	close(srv->listen_fd);
	unlink(socket_path);
fail_efd:
	close(srv->stop_efd);
fail_path:
	free(srv->path);
fail_srv:
	free(srv);
fail:
	ms_err(PS_MOD, "page server on %s: %s", socket_path, ms_strerror(*err));
	return NULL;
}

void ms_pageserver_stop(struct ms_pageserver *srv)
{
	pthread_mutex_lock(&srv->lock);
	if (srv->joined) {
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	srv->joined = true;
	pthread_mutex_unlock(&srv->lock);
	uint64_t one = 1;
	if (write(srv->stop_efd, &one, sizeof(one)) < 0)
		ms_warn(PS_MOD, "stop: %s", strerror(errno));
	pthread_join(srv->acceptor, NULL);
	close(srv->listen_fd);
	srv->listen_fd = -1;
	unlink(srv->path);
	/* No session is added after the acceptor is joined: stop them outside the lock. */
	for (size_t i = 0; i < srv->session_count; i++)
		ms_uffd_session_stop(srv->sessions[i]);
	pthread_mutex_lock(&srv->lock);
	srv->stopped = true;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

void ms_pageserver_free(struct ms_pageserver *srv)
{
	if (!srv)
		return;
	ms_pageserver_stop(srv);
	for (size_t i = 0; i < srv->session_count; i++)
		ms_uffd_session_unref(srv->sessions[i]);
	free(srv->sessions);
	close(srv->stop_efd);
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
	free(srv->path);
	free(srv);
}

int ms_pageserver_next_session(struct ms_pageserver *srv, int64_t timeout_ns,
			       struct ms_uffd_session **out)
{
	struct timespec deadline = ms_clock_deadline(timeout_ns);
	int err = 0;
	pthread_mutex_lock(&srv->lock);
	while (srv->handed_out == srv->session_count && !srv->stopped && err == 0)
		err = -pthread_cond_timedwait(&srv->cond, &srv->lock, &deadline);
	if (srv->handed_out < srv->session_count) {
		*out = ms_uffd_session_ref(srv->sessions[srv->handed_out++]);
		err = 0;
	} else if (srv->stopped) {
		err = MS_ECLOSED;
	}
	pthread_mutex_unlock(&srv->lock);
	return err;
}

uint64_t ms_pageserver_sessions_accepted(struct ms_pageserver *srv)
{
	return atomic_load(&srv->accepted);
}

uint64_t ms_pageserver_handshakes_rejected(struct ms_pageserver *srv)
{
	return atomic_load(&srv->rejected);
}
