/* faulty.c - fault injection around any store (see faulty.h). */
#include "storage/faulty.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ms_store_faulty {
	struct ms_store base;
	struct ms_store *inner; /* borrowed (owned: owns_inner), immutable */
	bool owns_inner;	/* immutable after ms_store_faulty_new_owning */
	pthread_mutex_t lock;
	unsigned calls[MS_FAULTY_OPS]; /* guarded by lock */
	bool armed;		       /* guarded by lock; the rule below is valid */
	enum ms_faulty_op rule_op;     /* guarded by lock */
	unsigned rule_at;	       /* guarded by lock: fires when calls[rule_op] == rule_at */
	unsigned rule_every;	      /* guarded by lock: 0 one-shot; n: then every n-th call too */
	enum ms_faulty_action action; /* guarded by lock */
	int err;		      /* guarded by lock */
	int64_t delay_ns;	      /* guarded by lock */
	char match[64];		      /* guarded by lock: "" or the rule's keys contain this */
	unsigned matched;	      /* guarded by lock: matching calls since armed */
	unsigned fired;		      /* guarded by lock: calls the rules acted on */
};

static struct ms_store_faulty *ms_faulty(struct ms_store *store)
{
	return (struct ms_store_faulty *)store;
}

/* Counts the call; true (with the action) when the rule fires for it. */
static bool ms_faulty_hit(struct ms_store_faulty *f, enum ms_faulty_op op, const char *key,
			  enum ms_faulty_action *action, int *err, int64_t *delay_ns)
{
	pthread_mutex_lock(&f->lock);
	f->calls[op]++;
	f->calls[MS_FAULTY_ANY]++;
	bool mine = f->armed && (f->rule_op == op || f->rule_op == MS_FAULTY_ANY);
	bool hit;
	if (f->match[0]) /* a keyed rule counts the calls of its keys only */
		hit = mine && key && strstr(key, f->match) && ++f->matched == f->rule_at;
	else
		hit = mine && f->calls[f->rule_op] == f->rule_at;
	if (hit) {
		f->fired++;
		if (f->rule_every)
			f->rule_at += f->rule_every;
		else
			f->armed = false;
		*action = f->action;
		*err = f->err;
		*delay_ns = f->delay_ns;
	}
	pthread_mutex_unlock(&f->lock);
	return hit;
}

/* Applies a fired rule before delegating: 1 = go on, 0 = handled (result in *ret). */
static bool ms_faulty_before(struct ms_store_faulty *f, enum ms_faulty_op op, const char *key,
			     enum ms_faulty_action *action, int *ret)
{
	int err;
	int64_t delay;
	if (!ms_faulty_hit(f, op, key, action, &err, &delay)) {
		*action = MS_FAULTY_DELAY;
		return true;
	}
	if (*action == MS_FAULTY_DELAY) {
		ms_clock_sleep_ns(delay);
		return true;
	}
	*ret = err ? err : -EIO;
	return (*action == MS_FAULTY_TRUNCATE || *action == MS_FAULTY_CORRUPT) &&
	       op == MS_FAULTY_READ;
}

/* The store a call goes on to (inner), or NULL when a fired rule ended it (result in *ret). */
static struct ms_store *ms_faulty_pass(struct ms_store *store, enum ms_faulty_op op,
				       const char *key, int *ret)
{
	struct ms_store_faulty *f = ms_faulty(store);
	enum ms_faulty_action action;
	return ms_faulty_before(f, op, key, &action, ret) ? f->inner : NULL;
}

static int ms_faulty_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
			     const struct ms_store_meta *meta)
{
	int ret;
	struct ms_store *inner = ms_faulty_pass(store, MS_FAULTY_PUT, key, &ret);
	return inner ? inner->ops->put_buf(inner, key, buf, len, meta) : ret;
}

static int ms_faulty_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
			      const struct ms_store_meta *meta)
{
	int ret;
	struct ms_store *inner = ms_faulty_pass(store, MS_FAULTY_PUT, key, &ret);
	return inner ? inner->ops->put_file(inner, key, fd, size, meta) : ret;
}

static int ms_faulty_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
				size_t len, size_t *got)
{
	struct ms_store_faulty *f = ms_faulty(store);
	enum ms_faulty_action action;
	int ret;
	if (!ms_faulty_before(f, MS_FAULTY_READ, key, &action, &ret))
		return ret;
	if (action == MS_FAULTY_TRUNCATE)
		len /= 2;
	ret = f->inner->ops->read_range(f->inner, key, off, dst, len, got);
	if (!ret && action == MS_FAULTY_CORRUPT && *got > 0)
		((unsigned char *)dst)[0] ^= 0x01;
	return ret;
}

static int ms_faulty_size(struct ms_store *store, const char *key, uint64_t *size)
{
	int ret;
	struct ms_store *inner = ms_faulty_pass(store, MS_FAULTY_SIZE, key, &ret);
	return inner ? inner->ops->size(inner, key, size) : ret;
}

static int ms_faulty_remove(struct ms_store *store, const char *key)
{
	int ret;
	struct ms_store *inner = ms_faulty_pass(store, MS_FAULTY_REMOVE, key, &ret);
	return inner ? inner->ops->remove(inner, key) : ret;
}

static int ms_faulty_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn,
			  void *ctx)
{
	int ret;
	struct ms_store *inner = ms_faulty_pass(store, MS_FAULTY_LIST, prefix, &ret);
	return inner ? inner->ops->list(inner, prefix, fn, ctx) : ret;
}

static int ms_faulty_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta)
{
	int ret;
	struct ms_store *inner = ms_faulty_pass(store, MS_FAULTY_META, key, &ret);
	return inner ? inner->ops->get_meta(inner, key, meta) : ret;
}

static void ms_faulty_free(struct ms_store *store)
{
	struct ms_store_faulty *f = ms_faulty(store);
	pthread_mutex_destroy(&f->lock);
	if (f->owns_inner)
		ms_store_free(f->inner);
	free(f);
}

static const struct ms_store_ops ms_faulty_ops = {
    .name = "faulty",
    .put_buf = ms_faulty_put_buf,
    .put_file = ms_faulty_put_file,
    .read_range = ms_faulty_read_range,
    .size = ms_faulty_size,
    .remove = ms_faulty_remove,
    .list = ms_faulty_list,
    .get_meta = ms_faulty_get_meta,
    .free = ms_faulty_free,
};

struct ms_store *ms_store_faulty_new(struct ms_store *inner)
{
	struct ms_store_faulty *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->base.ops = &ms_faulty_ops;
	f->inner = inner;
	pthread_mutex_init(&f->lock, NULL);
	return &f->base;
}

struct ms_store *ms_store_faulty_new_owning(struct ms_store *inner)
{
	struct ms_store *store = ms_store_faulty_new(inner);
	if (store)
		ms_faulty(store)->owns_inner = true;
	return store;
}

unsigned ms_store_faulty_fired(struct ms_store *store)
{
	struct ms_store_faulty *f = ms_faulty(store);
	pthread_mutex_lock(&f->lock);
	unsigned fired = f->fired;
	pthread_mutex_unlock(&f->lock);
	return fired;
}

static void ms_faulty_arm(struct ms_store *store, enum ms_faulty_op op, unsigned nth,
			  unsigned every, enum ms_faulty_action action, int err, int64_t delay_ns)
{
	struct ms_store_faulty *f = ms_faulty(store);
	pthread_mutex_lock(&f->lock);
	f->armed = nth > 0;
	f->rule_op = op;
	f->rule_at = f->match[0] ? nth : f->calls[op] + nth;
	f->matched = 0;
	f->rule_every = every;
	f->action = action;
	f->err = err;
	f->delay_ns = delay_ns;
	pthread_mutex_unlock(&f->lock);
}

void ms_store_faulty_inject(struct ms_store *store, enum ms_faulty_op op, unsigned nth,
			    enum ms_faulty_action action, int err, int64_t delay_ns)
{
	ms_faulty_arm(store, op, nth, 0, action, err, delay_ns);
}

void ms_store_faulty_inject_every(struct ms_store *store, enum ms_faulty_op op, unsigned every,
				  enum ms_faulty_action action, int err, int64_t delay_ns)
{
	ms_faulty_arm(store, op, every, every, action, err, delay_ns);
}

void ms_store_faulty_match(struct ms_store *store, const char *substring)
{
	struct ms_store_faulty *f = ms_faulty(store);
	pthread_mutex_lock(&f->lock);
	snprintf(f->match, sizeof(f->match), "%s", substring ? substring : "");
	f->armed = false;
	pthread_mutex_unlock(&f->lock);
}

void ms_store_faulty_clear(struct ms_store *store)
{
	struct ms_store_faulty *f = ms_faulty(store);
	pthread_mutex_lock(&f->lock);
	f->armed = false;
	f->match[0] = '\0';
	pthread_mutex_unlock(&f->lock);
}

unsigned ms_store_faulty_calls(struct ms_store *store, enum ms_faulty_op op)
{
	struct ms_store_faulty *f = ms_faulty(store);
	pthread_mutex_lock(&f->lock);
	unsigned calls = f->calls[op];
	pthread_mutex_unlock(&f->lock);
	return calls;
}
