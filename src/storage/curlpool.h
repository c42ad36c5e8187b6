/*
 * curlpool.h - idle libcurl easy handles kept for the next request, so that the
 * connections each one holds open (keep-alive, TLS) are reused.
 *
 * A handle is taken by one thread, used for one transfer and given back: a handle and
 * its connections are never used by two threads at once, which is libcurl's rule (its
 * shared connection cache, CURL_LOCK_DATA_CONNECT, is not thread-safe: curl#4915).
 * Given-back handles are reset at once (curl_easy_reset keeps live connections), so an
 * idle handle references nothing of the request it served.
 *
 * Thread-safety: take and give may be called concurrently; init and fini not.
 */
#ifndef MS_STORAGE_CURLPOOL_H
#define MS_STORAGE_CURLPOOL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>

#define MS_CURL_POOL_MAX 64

struct ms_curl_pool {
	unsigned cap; /* immutable: idle handles kept at most (<= MS_CURL_POOL_MAX) */
	pthread_mutex_t lock;
	CURL *idle[MS_CURL_POOL_MAX]; /* guarded by lock */
	unsigned count;		      /* guarded by lock */
};

/* An empty pool keeping up to cap idle handles (capped at MS_CURL_POOL_MAX). */
void ms_curl_pool_init(struct ms_curl_pool *p, unsigned cap);
/* Cleans up every idle handle. */
void ms_curl_pool_fini(struct ms_curl_pool *p);
/* An idle handle (options at their defaults, connections kept) or a new one; NULL: ENOMEM. */
CURL *ms_curl_pool_take(struct ms_curl_pool *p);
/* Back to the pool when healthy and there is room, else cleaned up. h may be NULL. */
void ms_curl_pool_give(struct ms_curl_pool *p, CURL *h, bool healthy);

#endif
