/* lib_store.c - the public object stores (memsnap/store.h) over storage/. */
#include "memsnap/store.h"
#include "storage/store.h"

#include <errno.h>

/* The public handle is the internal store. */
static struct ms_store *ms_lib_store(memsnap_store *store)
{
	return (struct ms_store *)store;
}

memsnap_store *memsnap_store_open(const char *uri, const struct memsnap_s3_options *s3, int *err)
{
	struct ms_s3_config config = {0};
	if (s3)
		config = (struct ms_s3_config){.endpoint = s3->endpoint,
					       .region = s3->region,
					       .access_key = s3->access_key,
					       .secret_key = s3->secret_key,
					       .credentials_file = s3->credentials_file,
					       .profile = s3->profile};
	return (memsnap_store *)ms_store_open(uri, &config, err);
}

void memsnap_store_free(memsnap_store *store)
{
	ms_store_free(ms_lib_store(store));
}

int memsnap_store_put(memsnap_store *store, const char *key, const void *buf, size_t len)
{
	return ms_store_put_buf(ms_lib_store(store), key, buf, len, NULL);
}

int memsnap_store_read(memsnap_store *store, const char *key, uint64_t off, void *dst, size_t len,
		       size_t *got)
{
	return ms_store_read_range(ms_lib_store(store), key, off, dst, len, got);
}

int memsnap_store_size(memsnap_store *store, const char *key, uint64_t *size)
{
	return ms_store_size(ms_lib_store(store), key, size);
}

int memsnap_store_remove(memsnap_store *store, const char *key)
{
	return ms_store_remove(ms_lib_store(store), key);
}
