/* linkmodel.c - reads that cost a modelled network link (see linkmodel.h). */
#include "linkmodel.h"
#include "util/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct ms_link_store {
	struct ms_store base;
	struct ms_store *inner;	    /* borrowed, immutable */
	struct ms_link_model model; /* immutable */
	pthread_mutex_t lock;
	pthread_cond_t freed; /* a slot was given back */
	unsigned busy;	      /* guarded by lock: reads holding a slot */
};

static struct ms_link_store *ms_link(struct ms_store *store)
{
	return (struct ms_link_store *)store;
}

static void ms_link_slot_take(struct ms_link_store *l)
{
	pthread_mutex_lock(&l->lock);
	while (l->model.streams && l->busy >= l->model.streams)
		pthread_cond_wait(&l->freed, &l->lock);
	l->busy++;
	pthread_mutex_unlock(&l->lock);
}

static void ms_link_slot_give(struct ms_link_store *l)
{
	pthread_mutex_lock(&l->lock);
	l->busy--;
	pthread_cond_signal(&l->freed);
	pthread_mutex_unlock(&l->lock);
}

/* Sleeps until ms_clock_now_ns() reaches until_ns (the same clock, CLOCK_MONOTONIC). */
static void ms_link_sleep_until(int64_t until_ns)
{
	struct timespec ts = {.tv_sec = until_ns / 1000000000, .tv_nsec = until_ns % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int ms_link_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
			      size_t len, size_t *got)
{
	struct ms_link_store *l = ms_link(store);
	ms_link_slot_take(l);
	int64_t t0 = ms_clock_now_ns();
	int err = ms_store_read_range(l->inner, key, off, dst, len, got);
	double transfer_ns = err ? 0 : (double)*got / l->model.bytes_per_sec * 1e9;
	ms_link_sleep_until(t0 + l->model.ttfb_ns + (int64_t)transfer_ns);
	ms_link_slot_give(l);
	return err;
}

static int ms_link_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
			   const struct ms_store_meta *meta)
{
	return ms_store_put_buf(ms_link(store)->inner, key, buf, len, meta);
}

static int ms_link_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
			    const struct ms_store_meta *meta)
{
	return ms_store_put_file(ms_link(store)->inner, key, fd, size, meta);
}

static int ms_link_size(struct ms_store *store, const char *key, uint64_t *size)
{
	return ms_store_size(ms_link(store)->inner, key, size);
}

static int ms_link_remove(struct ms_store *store, const char *key)
{
	return ms_store_remove(ms_link(store)->inner, key);
}

static int ms_link_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn, void *ctx)
{
	return ms_store_list(ms_link(store)->inner, prefix, fn, ctx);
}

static int ms_link_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta)
{
	return ms_store_get_meta(ms_link(store)->inner, key, meta);
}

static void ms_link_free(struct ms_store *store)
{
	struct ms_link_store *l = ms_link(store);
	pthread_cond_destroy(&l->freed);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

/* No .local: a modelled link is never a local file. */
static const struct ms_store_ops ms_link_ops = {
    .name = "linkmodel",
    .put_buf = ms_link_put_buf,
    .put_file = ms_link_put_file,
    .read_range = ms_link_read_range,
    .size = ms_link_size,
    .remove = ms_link_remove,
    .list = ms_link_list,
    .get_meta = ms_link_get_meta,
    .free = ms_link_free,
};

struct ms_store *ms_link_model_store(struct ms_store *inner, const struct ms_link_model *model)
{
	struct ms_link_store *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->base.ops = &ms_link_ops;
	l->inner = inner;
	l->model = *model;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->freed, NULL);
	return &l->base;
}
