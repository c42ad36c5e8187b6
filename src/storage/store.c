/* store.c - the store interface: key checks, URI parsing, dispatch to backends. */
#include "storage/store.h"
#include "util/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool ms_store_key_valid(const char *key)
{
	if (!key || !*key || key[0] == '/')
		return false;
	size_t len = strnlen(key, MS_STORE_KEY_MAX + 1);
	if (len > MS_STORE_KEY_MAX)
		return false;
	const char *seg = key;
	for (;;) {
		const char *slash = strchr(seg, '/');
		size_t seg_len = slash ? (size_t)(slash - seg) : strlen(seg);
		if (seg_len == 0 || (seg_len == 1 && seg[0] == '.') ||
		    (seg_len == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		if (!slash)
			return true;
		seg = slash + 1;
	}
}

static bool ms_meta_key_valid(const char *key)
{
	if (!*key || strlen(key) >= MS_STORE_META_KEY_MAX)
		return false;
	for (const char *p = key; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return false;
	return true;
}

int ms_store_meta_set(struct ms_store_meta *meta, const char *key, const char *value)
{
	if (!ms_meta_key_valid(key) || strlen(value) >= MS_STORE_META_VALUE_MAX)
		return -EINVAL;
	for (const char *p = value; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			return -EINVAL;
	unsigned i = 0;
	while (i < meta->count && strcmp(meta->items[i].key, key) != 0)
		i++;
	if (i == meta->count) {
		if (meta->count == MS_STORE_META_MAX)
			return -E2BIG;
		meta->count++;
	}
	strcpy(meta->items[i].key, key);
	strcpy(meta->items[i].value, value);
	return 0;
}

const char *ms_store_meta_get(const struct ms_store_meta *meta, const char *key)
{
	for (unsigned i = 0; i < meta->count; i++)
		if (strcmp(meta->items[i].key, key) == 0)
			return meta->items[i].value;
	return NULL;
}

static int ms_store_meta_check(const struct ms_store_meta *meta)
{
	if (!meta)
		return 0;
	if (meta->count > MS_STORE_META_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < meta->count; i++)
		if (!ms_meta_key_valid(meta->items[i].key) ||
		    strnlen(meta->items[i].value, MS_STORE_META_VALUE_MAX) ==
			MS_STORE_META_VALUE_MAX)
			return -EINVAL;
	return 0;
}

int ms_store_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
		     const struct ms_store_meta *meta)
{
	if (!ms_store_key_valid(key) || (len && !buf))
		return -EINVAL;
	int err = ms_store_meta_check(meta);
	return err ? err : store->ops->put_buf(store, key, buf, len, meta);
}

int ms_store_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
		      const struct ms_store_meta *meta)
{
	if (!ms_store_key_valid(key) || fd < 0)
		return -EINVAL;
	int err = ms_store_meta_check(meta);
	return err ? err : store->ops->put_file(store, key, fd, size, meta);
}

int ms_store_local(struct ms_store *store, const char *key, char *path, size_t cap,
		   struct ms_sums **sums)
{
	*sums = NULL;
	if (!ms_store_key_valid(key))
		return -EINVAL;
	return store->ops->local ? store->ops->local(store, key, path, cap, sums) : -ENOTSUP;
}

int ms_store_remove_incomplete(struct ms_store *store, const char *prefix, int64_t older_than_ms,
			       bool dry_run, size_t *count)
{
	*count = 0;
	if (!prefix || older_than_ms < 0 || strstr(prefix, ".."))
		return -EINVAL;
	return store->ops->remove_incomplete
		   ? store->ops->remove_incomplete(store, prefix, older_than_ms, dry_run, count)
		   : 0;
}

int ms_store_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
			size_t len, size_t *got)
{
	if (!ms_store_key_valid(key) || (len && !dst))
		return -EINVAL;
	size_t ignored;
	return store->ops->read_range(store, key, off, dst, len, got ? got : &ignored);
}

int ms_store_read_all(struct ms_store *store, const char *key, size_t max_len, void **buf,
		      size_t *len)
{
	uint64_t size;
	int err = ms_store_size(store, key, &size);
	if (err)
		return err;
	if (size > max_len)
		return MS_ETOOBIG;
	void *data = malloc(size ? size : 1);
	if (!data)
		return -ENOMEM;
	size_t got = 0;
	err = ms_store_read_range(store, key, 0, data, size, &got);
	if (!err && got != size)
		err = MS_ECORRUPT; /* the object changed size under us */
	if (err) {
		free(data);
		return err;
	}
	*buf = data;
	*len = got;
	return 0;
}

int ms_store_size(struct ms_store *store, const char *key, uint64_t *size)
{
	if (!ms_store_key_valid(key))
		return -EINVAL;
	return store->ops->size(store, key, size);
}

int ms_store_exists(struct ms_store *store, const char *key, bool *exists)
{
	uint64_t size;
	int err = ms_store_size(store, key, &size);
	*exists = err == 0;
	return err == MS_ENOTFOUND ? 0 : err;
}

int ms_store_remove(struct ms_store *store, const char *key)
{
	if (!ms_store_key_valid(key))
		return -EINVAL;
	return store->ops->remove(store, key);
}

int ms_store_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn, void *ctx)
{
	if (!prefix || !fn || strlen(prefix) > MS_STORE_KEY_MAX || prefix[0] == '/')
		return -EINVAL;
	return store->ops->list(store, prefix, fn, ctx);
}

int ms_store_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta)
{
	if (!ms_store_key_valid(key))
		return -EINVAL;
	memset(meta, 0, sizeof(*meta));
	return store->ops->get_meta(store, key, meta);
}

void ms_store_free(struct ms_store *store)
{
	if (store)
		store->ops->free(store);
}
