/*
 * test_s3.c - the s3 backend against a real S3 server (Ceph RGW from scripts/rgw.sh).
 *
 * Needs MEMSNAP_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY (scripts/run-tests.sh sets them);
 * without them the program is skipped. Only 127.0.0.1 is contacted: another endpoint
 * host is refused (skip). Each run makes its own bucket.
 *
 * Retries and failures are injected by a tiny HTTP proxy on 127.0.0.1 (a thread in this
 * program): it answers the first N requests with a chosen status, or drops the
 * connections of requests whose request line contains a string, and forwards the rest
 * to RGW unchanged (one request per connection, "Connection: close"). The Host header
 * is passed through, so SigV4 still verifies at RGW.
 */
#include "ms_test.h"

#include "storage/s3.h"
#include "storage/store.h"
#include "util/err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *endpoint, *access_key, *secret_key, *region;
static char bucket[64];
static uint16_t upstream_port;

/* ---- the fault-injecting proxy ---- */

struct proxy {
	int listen_fd;
	uint16_t port;
	pthread_t thread;
	pthread_mutex_t lock; /* guards everything below */
	int fail_first;	      /* answer this many next requests with fail_status */
	int fail_status;
	char kill_method[8]; /* ...and (if set) whose method is this */
	char kill_match[64]; /* drop the connection of requests whose line contains this */
	unsigned requests;   /* requests seen */
	unsigned killed;
	unsigned kill_max; /* stop killing after this many (0: no limit) */
	bool stop;
};

static bool write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static long content_length(const char *head)
{
	for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
		if (strncasecmp(p + 2, "content-length:", 15) == 0)
			return strtol(p + 17, NULL, 10);
	return 0;
}

static void proxy_handle(struct proxy *px, int conn)
{
	char head[65536];
	size_t have = 0;
	char *end = NULL;
	while (!end && have < sizeof(head) - 1) {
		ssize_t n = recv(conn, head + have, sizeof(head) - 1 - have, 0);
		if (n <= 0)
			return;
		have += (size_t)n;
		head[have] = '\0';
		end = strstr(head, "\r\n\r\n");
	}
	if (!end)
		return;
	size_t head_len = (size_t)(end + 4 - head);
	long body_len = content_length(head);
	size_t extra = have - head_len; /* body bytes already read */

	pthread_mutex_lock(&px->lock);
	px->requests++;
	char *eol = strstr(head, "\r\n");
	bool kill = px->kill_match[0] &&
		    memmem(head, (size_t)(eol - head), px->kill_match, strlen(px->kill_match)) &&
		    strncmp(head, px->kill_method, strlen(px->kill_method)) == 0 &&
		    (!px->kill_max || px->killed < px->kill_max);
	int fail = 0;
	if (kill)
		px->killed++;
	else if (px->fail_first > 0) {
		px->fail_first--;
		fail = px->fail_status;
	}
	pthread_mutex_unlock(&px->lock);
	if (kill)
		return; /* the caller closes: the client sees a reset or an empty reply */

	if (fail) {
		/* Drain the body, then answer with the injected status. */
		long left = body_len - (long)extra;
		char buf[65536];
		while (left > 0) {
			ssize_t n = recv(conn, buf, sizeof(buf), 0);
			if (n <= 0)
				return;
			left -= n;
		}
		const char *code = fail >= 500 ? "InternalError" : "AccessDenied";
		char body[128], resp[512];
		int blen = snprintf(body, sizeof(body), "<Error><Code>%s</Code></Error>", code);
		int rlen = snprintf(resp, sizeof(resp),
				    "HTTP/1.1 %d Injected\r\nContent-Type: application/xml\r\n"
				    "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
				    fail, blen, body);
		write_all(conn, resp, (size_t)rlen);
		return;
	}

	int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(upstream_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (up < 0 || connect(up, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		goto out;
	/* The head with its Connection header replaced by "Connection: close". */
	char *line = eol + 2;
	if (!write_all(up, head, (size_t)(line - head)))
		goto out;
	while (line < end + 2) {
		char *next = strstr(line, "\r\n") + 2;
		if (strncasecmp(line, "connection:", 11) != 0 &&
		    !write_all(up, line, (size_t)(next - line)))
			goto out;
		line = next;
	}
	if (!write_all(up, "Connection: close\r\n\r\n", 21) ||
	    !write_all(up, head + head_len, extra))
		goto out;
	long left = body_len - (long)extra;
	char buf[65536];
	while (left > 0) {
		ssize_t n = recv(conn, buf, sizeof(buf), 0);
		if (n <= 0 || !write_all(up, buf, (size_t)n))
			goto out;
		left -= n;
	}
	for (;;) {
		ssize_t n = recv(up, buf, sizeof(buf), 0);
		if (n <= 0 || !write_all(conn, buf, (size_t)n))
			break;
	}
out:
	if (up >= 0)
		close(up);
}

static void *proxy_main(void *arg)
{
	struct proxy *px = arg;
	for (;;) {
		pthread_mutex_lock(&px->lock);
		bool stop = px->stop;
		pthread_mutex_unlock(&px->lock);
		if (stop)
			return NULL;
		struct pollfd pfd = {.fd = px->listen_fd, .events = POLLIN};
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int conn = accept4(px->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		proxy_handle(px, conn);
		close(conn);
	}
}

static void proxy_start(struct proxy *px)
{
	memset(px, 0, sizeof(*px));
	pthread_mutex_init(&px->lock, NULL);
	px->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(px->listen_fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(px->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(px->listen_fd, 16), 0);
	socklen_t len = sizeof(sa);
	assert_int_equal(getsockname(px->listen_fd, (struct sockaddr *)&sa, &len), 0);
	px->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&px->thread, NULL, proxy_main, px), 0);
}

static void proxy_stop(struct proxy *px)
{
	pthread_mutex_lock(&px->lock);
	px->stop = true;
	pthread_mutex_unlock(&px->lock);
	pthread_join(px->thread, NULL);
	close(px->listen_fd);
	pthread_mutex_destroy(&px->lock);
}

static void proxy_set_method(struct proxy *px, const char *method)
{
	pthread_mutex_lock(&px->lock);
	snprintf(px->kill_method, sizeof(px->kill_method), "%s", method ? method : "");
	pthread_mutex_unlock(&px->lock);
}

static void proxy_set(struct proxy *px, int fail_first, int fail_status, const char *kill)
{
	pthread_mutex_lock(&px->lock);
	px->fail_first = fail_first;
	px->fail_status = fail_status;
	snprintf(px->kill_match, sizeof(px->kill_match), "%s", kill ? kill : "");
	px->requests = 0;
	px->killed = 0;
	px->kill_max = 0;
	pthread_mutex_unlock(&px->lock);
}

static void proxy_set_kill_max(struct proxy *px, unsigned max)
{
	pthread_mutex_lock(&px->lock);
	px->kill_max = max;
	pthread_mutex_unlock(&px->lock);
}

static unsigned proxy_requests(struct proxy *px)
{
	pthread_mutex_lock(&px->lock);
	unsigned n = px->requests;
	pthread_mutex_unlock(&px->lock);
	return n;
}

/* ---- helpers ---- */

static const char *test_getenv(const char *name)
{
	return getenv(name);
}

static struct ms_s3_config base_config(const char *prefix)
{
	return (struct ms_s3_config){
	    .endpoint = endpoint,
	    .bucket = bucket,
	    .prefix = prefix,
	    .region = region,
	    .access_key = access_key,
	    .secret_key = secret_key,
	    .max_attempts = 4,
	    .retry_initial_ns = 10 * 1000 * 1000,
	    .timeout_ms = 30000,
	};
}

static struct ms_store *open_store(const struct ms_s3_config *config)
{
	int err = 0;
	struct ms_store *store = ms_store_s3_new(config, &err);
	assert_int_equal(err, 0);
	assert_non_null(store);
	return store;
}

static void fill_random(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)(x >> 24);
	}
}

static void assert_absent(struct ms_store *store, const char *key)
{
	bool exists = true;
	assert_int_equal(ms_store_exists(store, key, &exists), 0);
	assert_false(exists);
}

/* ---- tests ---- */

static void test_put_get_range(void **state)
{
	(void)state;
	struct ms_s3_config config = base_config("basic");
	struct ms_store *store = open_store(&config);
	const char *text = "hello world";
	struct ms_store_meta meta = {0};
	assert_int_equal(ms_store_meta_set(&meta, "build-id", "b-123"), 0);
	assert_int_equal(ms_store_meta_set(&meta, "kind", "memfile"), 0);
	assert_int_equal(ms_store_put_buf(store, "b1/obj", text, strlen(text), &meta), 0);

	uint64_t size = 0;
	assert_int_equal(ms_store_size(store, "b1/obj", &size), 0);
	assert_int_equal(size, 11);
	bool exists = false;
	assert_int_equal(ms_store_exists(store, "b1/obj", &exists), 0);
	assert_true(exists);

	void *all = NULL;
	size_t all_len = 0;
	assert_int_equal(ms_store_read_all(store, "b1/obj", 1024, &all, &all_len), 0);
	assert_int_equal(all_len, 11);
	assert_memory_equal(all, text, 11);
	free(all);
	assert_int_equal(ms_store_read_all(store, "b1/obj", 5, &all, &all_len), MS_ETOOBIG);

	char buf[64];
	size_t got = 99;
	assert_int_equal(ms_store_read_range(store, "b1/obj", 6, buf, 5, &got), 0);
	assert_int_equal(got, 5);
	assert_memory_equal(buf, "world", 5);
	/* Past the end: the bytes that exist, then none (416), never an error. */
	assert_int_equal(ms_store_read_range(store, "b1/obj", 6, buf, 100, &got), 0);
	assert_int_equal(got, 5);
	assert_memory_equal(buf, "world", 5);
	assert_int_equal(ms_store_read_range(store, "b1/obj", 11, buf, 4, &got), 0);
	assert_int_equal(got, 0);
	assert_int_equal(ms_store_read_range(store, "b1/obj", 1000, buf, 4, &got), 0);
	assert_int_equal(got, 0);
	/* The last 4 bytes (suffix-style), a one-byte range, a zero-length read. */
	assert_int_equal(ms_store_read_range(store, "b1/obj", size - 4, buf, 4, &got), 0);
	assert_int_equal(got, 4);
	assert_memory_equal(buf, "orld", 4);
	assert_int_equal(ms_store_read_range(store, "b1/obj", 0, buf, 1, &got), 0);
	assert_int_equal(got, 1);
	assert_int_equal(buf[0], 'h');
	assert_int_equal(ms_store_read_range(store, "b1/obj", 3, buf, 0, &got), 0);
	assert_int_equal(got, 0);

	struct ms_store_meta back;
	assert_int_equal(ms_store_get_meta(store, "b1/obj", &back), 0);
	assert_int_equal(back.count, 2);
	assert_string_equal(ms_store_meta_get(&back, "build-id"), "b-123");
	assert_string_equal(ms_store_meta_get(&back, "kind"), "memfile");

	/* Overwrite replaces content and metadata. */
	assert_int_equal(ms_store_put_buf(store, "b1/obj", "x", 1, NULL), 0);
	assert_int_equal(ms_store_read_range(store, "b1/obj", 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 1);
	assert_int_equal(ms_store_get_meta(store, "b1/obj", &back), 0);
	assert_int_equal(back.count, 0);

	/* An empty object. */
	assert_int_equal(ms_store_put_buf(store, "b1/empty", NULL, 0, NULL), 0);
	assert_int_equal(ms_store_size(store, "b1/empty", &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(ms_store_read_range(store, "b1/empty", 0, buf, 8, &got), 0);
	assert_int_equal(got, 0);

	assert_int_equal(ms_store_remove(store, "b1/obj"), 0);
	assert_absent(store, "b1/obj");
	assert_int_equal(ms_store_remove(store, "b1/obj"), MS_ENOTFOUND);
	assert_int_equal(ms_store_read_range(store, "b1/obj", 0, buf, 4, &got), MS_ENOTFOUND);
	assert_int_equal(ms_store_read_range(store, "b1/obj", 0, buf, 0, &got), MS_ENOTFOUND);
	assert_int_equal(ms_store_size(store, "b1/obj", &size), MS_ENOTFOUND);
	assert_int_equal(ms_store_get_meta(store, "b1/obj", &back), MS_ENOTFOUND);
	assert_int_equal(ms_store_remove(store, "b1/empty"), 0);
	assert_int_equal(ms_store_put_buf(store, "../bad", "x", 1, NULL), -EINVAL);
	ms_store_free(store);
}

struct listed {
	char keys[64][128];
	uint64_t sizes[64];
	int64_t mtimes[64];
	unsigned count;
	unsigned stop_after;
	int stop_value;
};

static int collect(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	struct listed *l = ctx;
	if (l->count < 64) {
		snprintf(l->keys[l->count], sizeof(l->keys[0]), "%s", key);
		l->sizes[l->count] = size;
		l->mtimes[l->count] = mtime_ms;
	}
	l->count++;
	return l->stop_after && l->count == l->stop_after ? l->stop_value : 0;
}

static void test_list_pages(void **state)
{
	(void)state;
	struct ms_s3_config config = base_config("listing/");
	struct ms_store *store = open_store(&config);
	assert_int_equal(ms_store_s3_set_list_page(store, 4), 0);
	assert_int_equal(ms_store_s3_set_list_page(store, 0), -EINVAL);
	const unsigned n = 23;
	for (unsigned i = 0; i < n; i++) {
		char key[64], body[64];
		snprintf(key, sizeof(key), "dir/k%03u", i);
		int len = snprintf(body, sizeof(body), "%*u", (int)(i + 1), i);
		assert_int_equal(ms_store_put_buf(store, key, body, (size_t)len, NULL), 0);
	}
	/* Keys that need encoding in the URL and entities in the XML. */
	const char *odd = "dir/odd key&<x>+\xc3\xa9=1";
	assert_int_equal(ms_store_put_buf(store, odd, "odd", 3, NULL), 0);
	assert_int_equal(ms_store_put_buf(store, "other/x", "o", 1, NULL), 0);

	struct listed *l = calloc(1, sizeof(*l));
	assert_non_null(l);
	assert_int_equal(ms_store_list(store, "dir/", collect, l), 0);
	assert_int_equal(l->count, n + 1);
	for (unsigned i = 0; i < n; i++) {
		char key[64];
		snprintf(key, sizeof(key), "dir/k%03u", i);
		assert_string_equal(l->keys[i], key);
		assert_int_equal(l->sizes[i], i + 1);
		/* the server's LastModified: written within a minute of now */
		int64_t now_ms = (int64_t)time(NULL) * 1000;
		assert_true(l->mtimes[i] > now_ms - 60000 && l->mtimes[i] < now_ms + 60000);
	}
	assert_string_equal(l->keys[n], odd);
	assert_int_equal(l->sizes[n], 3);
	char buf[8];
	size_t got;
	assert_int_equal(ms_store_read_range(store, odd, 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 3);

	/* The whole store prefix; keys come back relative to it. */
	memset(l, 0, sizeof(*l));
	assert_int_equal(ms_store_list(store, "", collect, l), 0);
	assert_int_equal(l->count, n + 2);
	assert_string_equal(l->keys[n + 1], "other/x");

	/* A positive callback return stops the listing (0); a negative one is returned. */
	memset(l, 0, sizeof(*l));
	l->stop_after = 6;
	l->stop_value = 1;
	assert_int_equal(ms_store_list(store, "dir/", collect, l), 0);
	assert_int_equal(l->count, 6);
	memset(l, 0, sizeof(*l));
	l->stop_after = 5;
	l->stop_value = -ECANCELED;
	assert_int_equal(ms_store_list(store, "dir/", collect, l), -ECANCELED);
	assert_int_equal(l->count, 5);

	memset(l, 0, sizeof(*l));
	assert_int_equal(ms_store_list(store, "nothing/", collect, l), 0);
	assert_int_equal(l->count, 0);
	free(l);
	ms_store_free(store);
}

static void test_multipart(void **state)
{
	(void)state;
	const size_t size = 12 * 1024 * 1024 + 333;
	unsigned char *data = malloc(size);
	assert_non_null(data);
	fill_random(data, size, 7);
	struct ms_s3_config config = base_config("mpu");
	config.multipart_threshold = 8 * 1024 * 1024;
	config.part_size = 5 * 1024 * 1024;
	struct ms_store *store = open_store(&config);
	struct ms_store_meta meta = {0};
	assert_int_equal(ms_store_meta_set(&meta, "layers", "3"), 0);

	/* From a buffer (signed payloads). */
	assert_int_equal(ms_store_put_buf(store, "big/buf", data, size, &meta), 0);
	void *back = NULL;
	size_t back_len = 0;
	assert_int_equal(ms_store_read_all(store, "big/buf", size, &back, &back_len), 0);
	assert_int_equal(back_len, size);
	assert_memory_equal(back, data, size);
	free(back);
	struct ms_store_meta mback;
	assert_int_equal(ms_store_get_meta(store, "big/buf", &mback), 0);
	assert_string_equal(ms_store_meta_get(&mback, "layers"), "3");
	/* A range across the first part boundary. */
	unsigned char win[4096];
	size_t got;
	uint64_t off = 5 * 1024 * 1024 - 2000;
	assert_int_equal(ms_store_read_range(store, "big/buf", off, win, sizeof(win), &got), 0);
	assert_int_equal(got, sizeof(win));
	assert_memory_equal(win, data + off, sizeof(win));

	/* From a file (UNSIGNED-PAYLOAD parts). */
	char *dir = ms_test_tmpdir();
	assert_non_null(dir);
	char path[512];
	snprintf(path, sizeof(path), "%s/big.bin", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	fill_random(data, size, 8);
	assert_int_equal(write(fd, data, size), (ssize_t)size);
	assert_int_equal(ms_store_put_file(store, "big/file", fd, size, NULL), 0);
	assert_int_equal(ms_store_read_all(store, "big/file", size, &back, &back_len), 0);
	assert_int_equal(back_len, size);
	assert_memory_equal(back, data, size);
	free(back);
	/* A small file: one streamed PUT. */
	assert_int_equal(ms_store_put_file(store, "small/file", fd, 100000, NULL), 0);
	assert_int_equal(ms_store_read_range(store, "small/file", 90000, win, sizeof(win), &got),
			 0);
	assert_int_equal(got, sizeof(win));
	assert_memory_equal(win, data + 90000, sizeof(win));
	/* A file shorter than the size claimed fails, and leaves nothing. */
	assert_int_not_equal(ms_store_put_file(store, "small/short", fd, size + 10, NULL), 0);
	assert_absent(store, "small/short");
	close(fd);
	ms_test_rmtree(dir);
	free(dir);

	unsigned pending = 99;
	assert_int_equal(ms_store_s3_pending_uploads(store, "", &pending), 0);
	assert_int_equal(pending, 0);
	assert_int_equal(ms_store_remove(store, "big/buf"), 0);
	assert_int_equal(ms_store_remove(store, "big/file"), 0);
	ms_store_free(store);
	free(data);
}

static struct ms_s3_config proxied_config(struct proxy *px, const char *prefix, char *ep,
					  size_t ep_len)
{
	snprintf(ep, ep_len, "http://127.0.0.1:%u", px->port);
	struct ms_s3_config config = base_config(prefix);
	config.endpoint = ep;
	return config;
}

static void test_errors_and_retries(void **state)
{
	(void)state;
	static struct proxy px; /* static: a failed assert leaves its thread running */
	proxy_start(&px);
	char ep[64];
	struct ms_s3_config config = proxied_config(&px, "retry", ep, sizeof(ep));
	config.max_attempts = 4;
	struct ms_store *store = open_store(&config);
	char buf[16];
	size_t got;

	/* Passthrough works (the Host header survives the proxy). */
	proxy_set(&px, 0, 0, NULL);
	assert_int_equal(ms_store_put_buf(store, "r/a", "abc", 3, NULL), 0);
	assert_int_equal(proxy_requests(&px), 1);

	/* Two injected 500s: the third attempt succeeds, body re-sent in full. */
	proxy_set(&px, 2, 500, NULL);
	assert_int_equal(ms_store_put_buf(store, "r/b", "retried", 7, NULL), 0);
	assert_int_equal(proxy_requests(&px), 3);
	proxy_set(&px, 3, 503, NULL);
	assert_int_equal(ms_store_read_range(store, "r/b", 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 7);
	assert_memory_equal(buf, "retried", 7);
	assert_int_equal(proxy_requests(&px), 4);

	/* More 500s than attempts: MS_EREMOTE after exactly max_attempts requests. */
	proxy_set(&px, 100, 500, NULL);
	assert_int_equal(ms_store_put_buf(store, "r/c", "x", 1, NULL), MS_EREMOTE);
	assert_int_equal(proxy_requests(&px), 4);
	proxy_set(&px, 0, 0, NULL);
	assert_absent(store, "r/c");

	/* A 4xx is never retried. */
	proxy_set(&px, 5, 403, NULL);
	assert_int_equal(ms_store_put_buf(store, "r/d", "x", 1, NULL), MS_EREMOTE);
	assert_int_equal(proxy_requests(&px), 1);

	/* Connection drops are retried too. */
	proxy_set(&px, 0, 0, "r/b");
	assert_int_equal(ms_store_read_range(store, "r/b", 0, buf, sizeof(buf), &got), -EIO);
	assert_int_equal(proxy_requests(&px), 4);
	ms_store_free(store);

	/* A wrong secret: 403 SignatureDoesNotMatch from RGW, one request only. */
	struct ms_s3_config wrong = config;
	wrong.secret_key = "not-the-secret";
	store = open_store(&wrong);
	proxy_set(&px, 0, 0, NULL);
	assert_int_equal(ms_store_put_buf(store, "r/e", "x", 1, NULL), MS_EREMOTE);
	assert_int_equal(proxy_requests(&px), 1);
	proxy_set(&px, 0, 0, NULL);
	assert_int_equal(ms_store_read_range(store, "r/a", 0, buf, sizeof(buf), &got), MS_EREMOTE);
	assert_int_equal(proxy_requests(&px), 1);
	ms_store_free(store);

	proxy_stop(&px);
}

static void test_multipart_failure(void **state)
{
	(void)state;
	static struct proxy px; /* static: a failed assert leaves its thread running */
	proxy_start(&px);
	char ep[64];
	struct ms_s3_config config = proxied_config(&px, "mpufail", ep, sizeof(ep));
	config.multipart_threshold = 6 * 1024 * 1024;
	config.part_size = 5 * 1024 * 1024;
	config.max_attempts = 2;
	struct ms_store *store = open_store(&config);
	const size_t size = 11 * 1024 * 1024;
	unsigned char *data = malloc(size);
	assert_non_null(data);
	fill_random(data, size, 9);

	/* Every attempt at part 2 loses its connection: the put fails and is aborted. */
	proxy_set(&px, 0, 0, "partNumber=2&");
	assert_int_not_equal(ms_store_put_buf(store, "m/obj", data, size, NULL), 0);
	proxy_set(&px, 0, 0, NULL);
	assert_absent(store, "m/obj");
	unsigned pending = 99;
	assert_int_equal(ms_store_s3_pending_uploads(store, "m/", &pending), 0);
	assert_int_equal(pending, 0);

	/* A complete that never gets through is aborted as well (the abort is a DELETE). */
	proxy_set(&px, 0, 0, "?uploadId=");
	proxy_set_method(&px, "POST ");
	assert_int_not_equal(ms_store_put_buf(store, "m/obj", data, size, NULL), 0);
	proxy_set_method(&px, NULL);
	proxy_set(&px, 0, 0, NULL);
	assert_absent(store, "m/obj");
	assert_int_equal(ms_store_s3_pending_uploads(store, "m/", &pending), 0);
	assert_int_equal(pending, 0);

	/* Part 2 dropped once mid-body, from a buffer and from a file: the retry re-sends
	 * the part from its start and the object is intact. */
	proxy_set(&px, 0, 0, "partNumber=2&");
	proxy_set_kill_max(&px, 1);
	assert_int_equal(ms_store_put_buf(store, "m/retried", data, size, NULL), 0);
	void *back = NULL;
	size_t back_len = 0;
	assert_int_equal(ms_store_read_all(store, "m/retried", size, &back, &back_len), 0);
	assert_int_equal(back_len, size);
	assert_memory_equal(back, data, size);
	free(back);
	char *dir = ms_test_tmpdir();
	assert_non_null(dir);
	char path[512];
	snprintf(path, sizeof(path), "%s/part.bin", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	fill_random(data, size, 10);
	assert_int_equal(write(fd, data, size), (ssize_t)size);
	proxy_set(&px, 0, 0, "partNumber=2&");
	proxy_set_kill_max(&px, 1);
	assert_int_equal(ms_store_put_file(store, "m/retried", fd, size, NULL), 0);
	assert_int_equal(ms_store_read_all(store, "m/retried", size, &back, &back_len), 0);
	assert_int_equal(back_len, size);
	assert_memory_equal(back, data, size);
	free(back);
	/* A single streamed PUT from the file after an injected 500. */
	proxy_set(&px, 1, 500, NULL);
	assert_int_equal(ms_store_put_file(store, "m/small", fd, 300000, NULL), 0);
	assert_int_equal(proxy_requests(&px), 2); /* max_attempts is 2 here */
	proxy_set(&px, 0, 0, NULL);
	assert_int_equal(ms_store_read_all(store, "m/small", size, &back, &back_len), 0);
	assert_int_equal(back_len, 300000);
	assert_memory_equal(back, data, 300000);
	free(back);
	close(fd);
	ms_test_rmtree(dir);
	free(dir);
	assert_int_equal(ms_store_remove(store, "m/retried"), 0);
	assert_int_equal(ms_store_remove(store, "m/small"), 0);

	/* Through the same proxy without faults it works. */
	fill_random(data, size, 9);
	assert_int_equal(ms_store_put_buf(store, "m/obj", data, size, NULL), 0);
	assert_int_equal(ms_store_read_all(store, "m/obj", size, &back, &back_len), 0);
	assert_memory_equal(back, data, size);
	free(back);
	assert_int_equal(ms_store_remove(store, "m/obj"), 0);
	free(data);
	ms_store_free(store);
	proxy_stop(&px);
}

/*
 * A writer that dies mid multipart put leaves the upload pending (every part and
 * the abort lose their connection here): ms_store_remove_incomplete aborts those
 * under a prefix that are old enough, the dry run only counts them.
 */
static void test_incomplete_uploads(void **state)
{
	(void)state;
	static struct proxy px; /* static: a failed assert leaves its thread running */
	proxy_start(&px);
	char ep[64];
	struct ms_s3_config config = proxied_config(&px, "mpuleft", ep, sizeof(ep));
	config.multipart_threshold = 6 * 1024 * 1024;
	config.part_size = 5 * 1024 * 1024;
	config.max_attempts = 1;
	struct ms_store *store = open_store(&config);
	const size_t size = 11 * 1024 * 1024;
	unsigned char *data = malloc(size);
	assert_non_null(data);
	fill_random(data, size, 11);
	proxy_set(&px, 0, 0, "uploadId=");
	assert_int_not_equal(ms_store_put_buf(store, "b1/memfile", data, size, NULL), 0);
	assert_int_not_equal(ms_store_put_buf(store, "b2/memfile", data, size, NULL), 0);
	proxy_set(&px, 0, 0, NULL);
	unsigned pending = 0;
	assert_int_equal(ms_store_s3_pending_uploads(store, "", &pending), 0);
	assert_int_equal(pending, 2);
	size_t n = 99;
	/* started just now: younger than an hour, kept */
	assert_int_equal(ms_store_remove_incomplete(store, "", 3600 * 1000, false, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(ms_store_remove_incomplete(store, "", 0, true, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ms_store_s3_pending_uploads(store, "", &pending), 0);
	assert_int_equal(pending, 2);
	/* one build's prefix only */
	assert_int_equal(ms_store_remove_incomplete(store, "b1/", 0, false, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ms_store_s3_pending_uploads(store, "b1/", &pending), 0);
	assert_int_equal(pending, 0);
	assert_int_equal(ms_store_s3_pending_uploads(store, "b2/", &pending), 0);
	assert_int_equal(pending, 1);
	assert_int_equal(ms_store_remove_incomplete(store, "", 0, false, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ms_store_s3_pending_uploads(store, "", &pending), 0);
	assert_int_equal(pending, 0);
	assert_absent(store, "b1/memfile");
	assert_absent(store, "b2/memfile");
	free(data);
	ms_store_free(store);
	proxy_stop(&px);
}

struct worker {
	struct ms_store *store;
	unsigned id;
	int err;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (unsigned i = 0; i < 8 && !w->err; i++) {
		char key[64], body[64], back[64];
		snprintf(key, sizeof(key), "t%u/k%u", w->id, i);
		int len = snprintf(body, sizeof(body), "worker %u item %u", w->id, i);
		size_t got;
		w->err = ms_store_put_buf(w->store, key, body, (size_t)len, NULL);
		if (!w->err)
			w->err = ms_store_read_range(w->store, key, 0, back, sizeof(back), &got);
		if (!w->err && (got != (size_t)len || memcmp(back, body, got) != 0))
			w->err = -EIO;
		if (!w->err)
			w->err = ms_store_remove(w->store, key);
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	struct ms_s3_config config = base_config("threads");
	struct ms_store *store = open_store(&config);
	pthread_t threads[4];
	struct worker workers[4];
	for (unsigned i = 0; i < 4; i++) {
		workers[i] = (struct worker){.store = store, .id = i};
		assert_int_equal(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		assert_int_equal(workers[i].err, 0);
	}
	ms_store_free(store);
}

struct reader {
	struct ms_store *store;
	const uint8_t *data;
	size_t size;
	unsigned id;
	int err;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t buf[8192];
	for (unsigned i = 0; i < 16 && !r->err; i++) {
		size_t off = ((size_t)r->id * 7919 + i * 4099) % (r->size - sizeof(buf)), got;
		r->err = ms_store_read_range(r->store, "churn/object", off, buf, sizeof(buf), &got);
		if (!r->err && (got != sizeof(buf) || memcmp(buf, r->data + off, got) != 0))
			r->err = -EIO;
	}
	return NULL;
}

/* Ranged reads from waves of short-lived threads, as the chunker's fetch threads make
 * them: connections outlive the threads that opened them (the store's handle pool) and
 * every byte read is the object's. */
static void test_thread_churn(void **state)
{
	(void)state;
	struct ms_s3_config config = base_config("churn");
	struct ms_store *store = open_store(&config);
	const size_t size = 1u << 20;
	uint8_t *data = malloc(size);
	assert_non_null(data);
	for (size_t i = 0; i < size; i++)
		data[i] = (uint8_t)(i * 131 + (i >> 9));
	assert_int_equal(ms_store_put_buf(store, "churn/object", data, size, NULL), 0);
	for (unsigned wave = 0; wave < 8; wave++) {
		pthread_t threads[8];
		struct reader readers[8];
		for (unsigned i = 0; i < 8; i++) {
			readers[i] = (struct reader){
			    .store = store, .data = data, .size = size, .id = wave * 8 + i};
			assert_int_equal(
			    pthread_create(&threads[i], NULL, reader_main, &readers[i]), 0);
		}
		for (unsigned i = 0; i < 8; i++) {
			pthread_join(threads[i], NULL);
			assert_int_equal(readers[i].err, 0);
		}
	}
	assert_int_equal(ms_store_remove(store, "churn/object"), 0);
	free(data);
	ms_store_free(store);
}

static void restore_env(const char *name, char *saved)
{
	if (saved) {
		setenv(name, saved, 1);
		free(saved);
	} else {
		unsetenv(name);
	}
}

static void test_config_and_credentials(void **state)
{
	(void)state;
	int err = 0;
	struct ms_s3_config config = base_config("cfg");
	config.part_size = 1024;
	assert_null(ms_store_s3_new(&config, &err));
	assert_int_equal(err, -EINVAL);
	config = base_config("cfg");
	config.endpoint = "ftp://127.0.0.1";
	assert_null(ms_store_s3_new(&config, &err));
	assert_int_equal(err, -EINVAL);
	config = base_config("cfg");
	config.bucket = NULL;
	assert_null(ms_store_s3_new(&config, &err));
	assert_int_equal(err, -EINVAL);
	assert_int_equal(ms_store_s3_set_list_page(NULL, 5), -EINVAL);

	/* Credentials from a shared credentials file, with env and config empty. */
	const char *names[] = {"AWS_ACCESS_KEY_ID",	      "AWS_SECRET_ACCESS_KEY",
			       "MEMSNAP_S3_ACCESS_KEY",	      "MEMSNAP_S3_SECRET_KEY",
			       "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"};
	char *saved[6];
	for (int i = 0; i < 6; i++) {
		const char *v = getenv(names[i]);
		saved[i] = v ? strdup(v) : NULL;
		unsetenv(names[i]);
	}
	char *dir = ms_test_tmpdir();
	assert_non_null(dir);
	char path[512];
	snprintf(path, sizeof(path), "%s/credentials", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f,
		"[other]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n\n"
		"# comment\n[default]\naws_access_key_id = %s\naws_secret_access_key=%s\n",
		access_key, secret_key);
	fclose(f);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	config = base_config("cfg");
	config.access_key = config.secret_key = NULL;
	struct ms_s3_env env;
	ms_s3_env_read(&env, test_getenv);
	ms_s3_env_apply(&env, &config);
	struct ms_store *store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	assert_int_equal(ms_store_put_buf(store, "c/a", "creds", 5, NULL), 0);
	assert_int_equal(ms_store_remove(store, "c/a"), 0);
	ms_store_free(store);
	setenv("AWS_PROFILE", "other", 1);
	ms_s3_env_read(&env, test_getenv);
	ms_s3_env_apply(&env, &config);
	store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	assert_int_equal(ms_store_put_buf(store, "c/a", "creds", 5, NULL), MS_EREMOTE);
	ms_store_free(store);
	setenv("AWS_PROFILE", "missing", 1);
	ms_s3_env_read(&env, test_getenv);
	config.profile = NULL;
	ms_s3_env_apply(&env, &config);
	assert_null(ms_store_s3_new(&config, &err));
	assert_int_equal(err, -EINVAL);
	unsetenv("AWS_PROFILE");
	/* Env credentials (MEMSNAP_S3_*) and the s3:// URI. */
	setenv("MEMSNAP_S3_ACCESS_KEY", access_key, 1);
	setenv("MEMSNAP_S3_SECRET_KEY", secret_key, 1);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
	char uri[128];
	snprintf(uri, sizeof(uri), "s3://%s/via-uri", bucket);
	ms_s3_env_read(&env, test_getenv);
	struct ms_s3_config defaults = {.endpoint = endpoint};
	ms_s3_env_apply(&env, &defaults);
	store = ms_store_open(uri, &defaults, &err);
	assert_non_null(store);
	assert_int_equal(ms_store_put_buf(store, "u", "uri", 3, NULL), 0);
	ms_store_free(store);
	config = base_config("via-uri");
	store = open_store(&config);
	char buf[8];
	size_t got;
	assert_int_equal(ms_store_read_range(store, "u", 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 3);
	assert_int_equal(ms_store_remove(store, "u"), 0);
	ms_store_free(store);

	for (int i = 0; i < 6; i++)
		restore_env(names[i], saved[i]);
	ms_test_rmtree(dir);
	free(dir);
}

static int group_setup(void **state)
{
	(void)state;
	struct ms_s3_config config = base_config(NULL);
	int err = 0;
	struct ms_store *store = ms_store_s3_new(&config, &err);
	if (!store)
		return -1;
	err = ms_store_s3_create_bucket(store);
	if (!err)
		err = ms_store_s3_create_bucket(store); /* again: already ours */
	ms_store_free(store);
	return err ? -1 : 0;
}

int main(void)
{
	endpoint = getenv("MEMSNAP_S3_ENDPOINT");
	access_key = getenv("MEMSNAP_S3_ACCESS_KEY");
	secret_key = getenv("MEMSNAP_S3_SECRET_KEY");
	region = getenv("MEMSNAP_S3_REGION");
	if (!endpoint || !*endpoint || !access_key || !secret_key)
		MS_TEST_SKIP_EXIT(
		    "MEMSNAP_S3_ENDPOINT/ACCESS_KEY/SECRET_KEY unset (scripts/run-tests.sh "
		    "starts a test S3 server)");
	unsigned port = 0;
	char tail = 0;
	if (sscanf(endpoint, "http://127.0.0.1:%u%c", &port, &tail) < 1 || port == 0 ||
	    port > 65535 || (tail && tail != '/'))
		MS_TEST_SKIP_EXIT("MEMSNAP_S3_ENDPOINT %s is not http://127.0.0.1:PORT", endpoint);
	upstream_port = (uint16_t)port;
	snprintf(bucket, sizeof(bucket), "memsnap-test-%ld-%d", (long)time(NULL), (int)getpid());

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_put_get_range),
	    cmocka_unit_test(test_list_pages),
	    cmocka_unit_test(test_multipart),
	    cmocka_unit_test(test_errors_and_retries),
	    cmocka_unit_test(test_multipart_failure),
	    cmocka_unit_test(test_incomplete_uploads),
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_thread_churn),
	    cmocka_unit_test(test_config_and_credentials),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
