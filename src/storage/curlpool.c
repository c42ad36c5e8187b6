/* curlpool.c - idle libcurl easy handles (see curlpool.h). */
#include "storage/curlpool.h"

void ms_curl_pool_init(struct ms_curl_pool *p, unsigned cap)
{
	p->cap = cap < MS_CURL_POOL_MAX ? cap : MS_CURL_POOL_MAX;
	p->count = 0;
	pthread_mutex_init(&p->lock, NULL);
}

void ms_curl_pool_fini(struct ms_curl_pool *p)
{
	for (unsigned i = 0; i < p->count; i++)
		curl_easy_cleanup(p->idle[i]);
	p->count = 0;
	pthread_mutex_destroy(&p->lock);
}

CURL *ms_curl_pool_take(struct ms_curl_pool *p)
{
	pthread_mutex_lock(&p->lock);
	CURL *h = p->count ? p->idle[--p->count] : NULL;
	pthread_mutex_unlock(&p->lock);
	return h ? h : curl_easy_init();
}

void ms_curl_pool_give(struct ms_curl_pool *p, CURL *h, bool healthy)
{
	if (!h)
		return;
	if (healthy) {
		curl_easy_reset(h); /* keeps the live connections */
		pthread_mutex_lock(&p->lock);
		if (p->count < p->cap) {
			p->idle[p->count++] = h;
			h = NULL;
		}
		pthread_mutex_unlock(&p->lock);
	}
	if (h)
		curl_easy_cleanup(h);
}
