/*
 * routing.c - the routing source and the peer resolver (client.h).
 *
 * A routing source reads one build's data from its peer until the build
 * moves to the store, then from a chunked source over the store, for good.
 * The peer side is a chunker too (cache/chunker.h) over the peer seen as a
 * store (its read_range is a peer data request; the key is ignored): a
 * guest's faults come one at a time, and one 64 KiB request per fault ran at
 * a third of a local resume's speed; chunks fetched in large sub-ranges, with
 * waiters woken as their bytes arrive, amortize the request latency, and what
 * was fetched stays in this node's cache until the build moves. The store
 * side is opened lazily from the build's own header in the store, once, under
 * lock; it is opened on a miss too (a peer that does not hold the build), but
 * only a use_storage answer, a dead peer or ms_peer_routing_move_to_store()
 * moves the state - and a move closes the peer side (its cache goes).
 */
#include "cache/chunker.h"
#include "node/peer/client.h"
#include "node/peer/registry.h"
#include "storage/checksums.h"
#include "storage/verified.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_MOD			     "peer"
#define MS_PEER_STORAGE_WAIT_DEFAULT (60LL * MS_NSEC_PER_SEC)

struct ms_peer_routing;

/*
 * The peer as a store for the peer side's chunker, under a checking store
 * (storage/verified.h): read_range of the data (any key but the table's) is a
 * peer data request; "{id}/checksums" is the peer's table, fetched once it is
 * there (size and read_range only; every other key is not found).
 */
struct ms_peer_data_store {
	struct ms_store base;
	struct ms_peer_routing *r;
	pthread_mutex_t lock; /* guards sums, sums_len */
	uint8_t *sums;	      /* the peer's table once available, else NULL */
	size_t sums_len;
	_Atomic int64_t sums_retry_ns; /* not available: not asked again before this */
};

struct ms_peer_routing {
	struct ms_source base;
	struct ms_peer_data_store peer_store;
	struct ms_store *checked;      /* peer_store under a checking store: the chunker's */
	struct ms_peer_client *client; /* immutable */
	struct ms_build_storage *storage;
	ms_uuid build_id;
	enum ms_peer_file file;
	int64_t storage_wait_ns;
	ms_peer_on_storage_fn on_storage;
	void *ctx;
	struct ms_peer_read_totals *totals; /* may be NULL */
	atomic_bool on_store;		    /* PEER -> STORAGE, once */
	atomic_bool by_use_storage;
	atomic_bool notified;			 /* on_storage called */
	atomic_bool peer_use_storage, peer_miss; /* the peer side's last refusal */
	pthread_mutex_t lock;	    /* guards peer_src, store_src and store_header (opened once) */
	struct ms_source *peer_src; /* NULL once moved */
	struct ms_source *store_src;
	struct ms_header *store_header;
	_Atomic uint64_t peer_reads, storage_reads, misses, peer_failures, waits;
};

static enum ms_peer_file ms_peer_file_of_artifact(enum ms_artifact data)
{
	return data == MS_ARTIFACT_ROOTFS ? MS_PEER_FILE_ROOTFS : MS_PEER_FILE_MEMFILE;
}

static enum ms_artifact ms_peer_header_artifact(enum ms_artifact data)
{
	return data == MS_ARTIFACT_ROOTFS ? MS_ARTIFACT_ROOTFS_HEADER : MS_ARTIFACT_MEMFILE_HEADER;
}

/* The store side, with a reference: MS_ENOTFOUND while the build's header is not there. */
static int ms_peer_routing_store(struct ms_peer_routing *r, struct ms_source **out)
{
	int err = 0;
	pthread_mutex_lock(&r->lock);
	if (!r->store_src) {
		struct ms_header *h;
		err = ms_build_storage_load_header(r->storage->store, &r->build_id,
						   ms_peer_header_artifact(r->storage->data), &h);
		if (!err) {
			const struct ms_build_data *self = ms_header_build(h, &r->build_id);
			if (self && self->size > 0 && (uint64_t)self->size != r->base.size) {
				ms_warn(MS_MOD, "the store's build is %lld bytes, the peer's %llu",
					(long long)self->size, (unsigned long long)r->base.size);
				err = MS_ECORRUPT;
			} else {
				err = ms_build_storage_open(r->storage, &r->build_id, h,
							    &r->store_src);
			}
			if (err)
				ms_header_free(h);
			else
				r->store_header = h;
		}
	}
	if (!err)
		*out = ms_source_ref(r->store_src);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* counter += n, on the source and on the totals */
#define MS_ROUTING_COUNT(r, counter, n)                                                            \
	do {                                                                                       \
		atomic_fetch_add(&(r)->counter, (n));                                              \
		if ((r)->totals)                                                                   \
			atomic_fetch_add(&(r)->totals->counter, (n));                              \
	} while (0)

/* Why a routing source moves to the store. */
enum ms_routing_move {
	MS_MOVE_USE_STORAGE, /* the peer answered use_storage */
	MS_MOVE_GONE,	     /* the peer did not answer (after its retries) */
	MS_MOVE_IN_STORE,    /* the owner saw the build in the store */
};

static void ms_peer_routing_move(struct ms_peer_routing *r, enum ms_routing_move cause)
{
	static const char *const why[] = {[MS_MOVE_USE_STORAGE] = "uploaded (use_storage)",
					  [MS_MOVE_GONE] = "the peer is gone",
					  [MS_MOVE_IN_STORE] = "in the store"};
	if (cause == MS_MOVE_USE_STORAGE)
		atomic_store(&r->by_use_storage, true);
	if (atomic_exchange(&r->on_store, true))
		return;
	if (r->totals)
		atomic_fetch_add(&r->totals->moved, 1);
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&r->build_id, id);
	ms_info(MS_MOD, "build %s: %s; reading the store from now on", id, why[cause]);
	pthread_mutex_lock(&r->lock);
	struct ms_source *peer = r->peer_src;
	r->peer_src = NULL;
	pthread_mutex_unlock(&r->lock);
	if (peer) { /* its readers get MS_ECLOSED and go to the store */
		ms_source_close(peer);
		ms_source_unref(peer);
	}
}

void ms_peer_routing_move_to_store(struct ms_source *src)
{
	if (ms_peer_routing_is_routing(src))
		ms_peer_routing_move((struct ms_peer_routing *)src, MS_MOVE_IN_STORE);
}

static bool ms_peer_is_sums_key(const char *key)
{
	size_t n = strlen(key);
	return n >= 10 && strcmp(key + n - 10, "/checksums") == 0;
}

/*
 * The peer's table into ps->sums: 0, MS_ENOTFOUND (none yet), MS_ECHECKSUM, or
 * the transport error. Only a table that parses is kept: a damaged answer is
 * counted (memsnap_integrity_failures_total{object=checksums}), asked for once
 * more, and if that one is damaged too this read fails and the next asks again.
 */
static int ms_peer_store_sums(struct ms_peer_data_store *ps)
{
	pthread_mutex_lock(&ps->lock);
	bool have = ps->sums != NULL;
	pthread_mutex_unlock(&ps->lock);
	if (have)
		return 0;
	if (ms_clock_now_ns() < atomic_load(&ps->sums_retry_ns))
		return MS_ENOTFOUND;
	struct ms_peer_routing *r = ps->r;
	struct ms_peer_request req = {.op = MS_PEER_OP_CHECKSUMS, .build_id = r->build_id};
	struct ms_peer_answer a;
	int err = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		if ((err = ms_peer_client_get(r->client, &req, &a)))
			return err;
		if (a.status != MS_PEER_AVAILABLE || !a.body || !a.len) {
			if (a.status == MS_PEER_USE_STORAGE)
				atomic_store(&r->peer_use_storage, true);
			atomic_store(&ps->sums_retry_ns, ms_clock_now_ns() + MS_PEER_SUMS_RETRY_NS);
			ms_peer_answer_fini(&a);
			return MS_ENOTFOUND;
		}
		struct ms_sums *parsed = NULL;
		if (!(err = ms_sums_parse(a.body, a.len, &parsed))) {
			ms_sums_unref(parsed);
			break;
		}
		if (!attempt) /* one damaged table counts once, fetched again or not */
			ms_integrity_count(MS_INTEGRITY_CHECKSUMS);
		char text[MS_UUID_STR_LEN];
		ms_uuid_format(&r->build_id, text);
		ms_warn(MS_MOD, "the peer's checksum table of %s (%zu bytes) does not parse: %s%s",
			text, a.len, ms_strerror(err),
			attempt ? ": not kept" : "; asking once more");
		ms_peer_answer_fini(&a);
	}
	if (err)
		return MS_ECHECKSUM;
	pthread_mutex_lock(&ps->lock);
	if (!ps->sums) {
		ps->sums = a.body;
		ps->sums_len = a.len;
		a.body = NULL;
	}
	pthread_mutex_unlock(&ps->lock);
	ms_peer_answer_fini(&a);
	return 0;
}

static int ms_peer_store_size(struct ms_store *s, const char *key, uint64_t *size)
{
	struct ms_peer_data_store *ps = (struct ms_peer_data_store *)s;
	int err = ms_peer_is_sums_key(key) ? ms_peer_store_sums(ps) : MS_ENOTFOUND;
	if (!err) {
		pthread_mutex_lock(&ps->lock);
		*size = ps->sums_len;
		pthread_mutex_unlock(&ps->lock);
	}
	return err;
}

/*
 * The chunker's store read (through the checking store): the table from what
 * ms_peer_store_sums fetched, else one peer data read; refusals noted for the
 * routing source.
 */
static int ms_peer_store_read(struct ms_store *s, const char *key, uint64_t off, void *dst,
			      size_t len, size_t *got)
{
	struct ms_peer_data_store *ps = (struct ms_peer_data_store *)s;
	struct ms_peer_routing *r = ps->r;
	if (ms_peer_is_sums_key(key)) {
		int err = ms_peer_store_sums(ps);
		if (err)
			return err;
		pthread_mutex_lock(&ps->lock); /* once set, sums stays until the free */
		*got =
		    off < ps->sums_len ? (len < ps->sums_len - off ? len : ps->sums_len - off) : 0;
		memcpy(dst, ps->sums + (off < ps->sums_len ? off : 0), *got);
		pthread_mutex_unlock(&ps->lock);
		return 0;
	}
	enum ms_peer_status status;
	int err = ms_peer_client_read(r->client, &r->build_id, r->file, r->base.size, dst, off, len,
				      &status);
	if (err)
		return err;
	if (status != MS_PEER_AVAILABLE) {
		atomic_store(status == MS_PEER_USE_STORAGE ? &r->peer_use_storage : &r->peer_miss,
			     true);
		return MS_ENOTFOUND;
	}
	*got = len;
	if (r->totals)
		atomic_fetch_add(&r->totals->peer_bytes, len);
	return 0;
}

static const struct ms_store_ops ms_peer_store_ops = {
    .name = "peer", .read_range = ms_peer_store_read, .size = ms_peer_store_size};

/* The peer side, with a reference, or NULL once moved. */
static struct ms_source *ms_peer_routing_peer(struct ms_peer_routing *r)
{
	pthread_mutex_lock(&r->lock);
	struct ms_source *peer = r->peer_src ? ms_source_ref(r->peer_src) : NULL;
	pthread_mutex_unlock(&r->lock);
	return peer;
}

/* Tells the owner once, after the store side is open, that the build moved. */
static void ms_peer_routing_notify(struct ms_peer_routing *r)
{
	if (!r->on_storage || !atomic_load(&r->on_store) || atomic_exchange(&r->notified, true))
		return;
	pthread_mutex_lock(&r->lock);
	struct ms_header *copy = r->store_header ? ms_header_copy(r->store_header) : NULL;
	pthread_mutex_unlock(&r->lock);
	if (copy)
		r->on_storage(r->ctx, &r->build_id, copy);
}

static int ms_peer_routing_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	struct ms_peer_routing *r = (struct ms_peer_routing *)src;
	int64_t deadline = ms_clock_now_ns() + r->storage_wait_ns;
	struct ms_backoff backoff;
	ms_backoff_init(&backoff, 50 * MS_NSEC_PER_MSEC, 500 * MS_NSEC_PER_MSEC, 0);
	bool mismatch = false; /* the peer's bytes failed their checksums twice */
	for (;;) {
		if (!atomic_load(&r->on_store) && !mismatch) {
			struct ms_source *peer = ms_peer_routing_peer(r);
			int err = peer ? ms_source_read(peer, dst, off, len) : MS_ECLOSED;
			ms_source_unref(peer);
			if (!err) {
				MS_ROUTING_COUNT(r, peer_reads, 1);
				return 0;
			}
			if (atomic_load(&r->on_store)) {
				/* moved while this read waited: the store */
			} else if (atomic_exchange(&r->peer_use_storage, false)) {
				ms_peer_routing_move(r, MS_MOVE_USE_STORAGE);
			} else if (err == MS_ENOTFOUND && atomic_exchange(&r->peer_miss, false)) {
				/* this read: the store, if it has it */
				MS_ROUTING_COUNT(r, misses, 1);
			} else if (err == -ERANGE || err == -ENOMEM) {
				return err;
			} else if (err == MS_ECHECKSUM) {
				/* not a dead peer: the store, only if it has the build now */
				mismatch = true;
			} else {
				MS_ROUTING_COUNT(r, peer_failures, 1);
				ms_peer_routing_move(r, MS_MOVE_GONE);
			}
		}
		struct ms_source *store;
		int err = ms_peer_routing_store(r, &store);
		if (!err) {
			err = ms_source_read(store, dst, off, len);
			ms_source_unref(store);
			if (!err) {
				MS_ROUTING_COUNT(r, storage_reads, 1);
				ms_peer_routing_notify(r);
				return 0;
			}
		}
		if (err == MS_ECLOSED && ms_source_is_closed(src))
			return err;
		if (err == MS_ECORRUPT || err == -ERANGE || err == -ENOMEM)
			return err;
		if (mismatch)
			return MS_ECHECKSUM;
		/* not in the store yet (its upload still runs), or a store hiccup */
		int64_t delay;
		int64_t now = ms_clock_now_ns();
		if (now >= deadline || !ms_backoff_next(&backoff, &delay))
			return err;
		atomic_fetch_add(&r->waits, 1);
		ms_clock_sleep_ns(delay < deadline - now ? delay : deadline - now);
	}
}

static bool ms_peer_routing_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	struct ms_peer_routing *r = (struct ms_peer_routing *)src;
	pthread_mutex_lock(&r->lock);
	bool cached = (r->store_src && ms_source_is_cached(r->store_src, off, len)) ||
		      (r->peer_src && ms_source_is_cached(r->peer_src, off, len));
	pthread_mutex_unlock(&r->lock);
	return cached;
}

static uint64_t ms_peer_routing_disk_bytes(struct ms_source *src)
{
	struct ms_peer_routing *r = (struct ms_peer_routing *)src;
	pthread_mutex_lock(&r->lock);
	uint64_t bytes = (r->store_src ? ms_source_disk_bytes(r->store_src) : 0) +
			 (r->peer_src ? ms_source_disk_bytes(r->peer_src) : 0);
	pthread_mutex_unlock(&r->lock);
	return bytes;
}

static void ms_peer_routing_close(struct ms_source *src)
{
	struct ms_peer_routing *r = (struct ms_peer_routing *)src;
	pthread_mutex_lock(&r->lock);
	if (r->store_src)
		ms_source_close(r->store_src);
	if (r->peer_src)
		ms_source_close(r->peer_src);
	pthread_mutex_unlock(&r->lock);
}

static void ms_peer_routing_free(struct ms_source *src)
{
	struct ms_peer_routing *r = (struct ms_peer_routing *)src;
	ms_source_unref(r->peer_src);
	ms_source_unref(r->store_src);
	ms_header_free(r->store_header);
	ms_store_free(r->checked);
	free(r->peer_store.sums);
	pthread_mutex_destroy(&r->peer_store.lock);
	ms_peer_client_unref(r->client);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static const struct ms_source_ops ms_peer_routing_ops = {
    .name = "peer-routing",
    .read = ms_peer_routing_read,
    .is_cached = ms_peer_routing_is_cached,
    .disk_bytes = ms_peer_routing_disk_bytes,
    .close = ms_peer_routing_close,
    .free = ms_peer_routing_free,
};

struct ms_source *ms_peer_routing_new(const struct ms_peer_routing_config *config, int *err)
{
	if (!config || !config->client || !config->storage || !config->storage->cache_dir ||
	    ms_uuid_is_nil(&config->build_id)) {
		*err = -EINVAL;
		return NULL;
	}
	struct ms_peer_routing *r = calloc(1, sizeof(*r));
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	ms_source_init(&r->base, &ms_peer_routing_ops, config->size);
	r->client = ms_peer_client_ref(config->client);
	r->storage = config->storage;
	r->build_id = config->build_id;
	r->file = ms_peer_file_of_artifact(config->storage->data);
	r->storage_wait_ns =
	    config->storage_wait_ns > 0 ? config->storage_wait_ns : MS_PEER_STORAGE_WAIT_DEFAULT;
	r->on_storage = config->on_storage;
	r->ctx = config->ctx;
	r->totals = config->totals;
	pthread_mutex_init(&r->lock, NULL);
	r->peer_store = (struct ms_peer_data_store){.base.ops = &ms_peer_store_ops, .r = r};
	pthread_mutex_init(&r->peer_store.lock, NULL);
	if (!(r->checked = ms_store_verified_new(&r->peer_store.base, false))) {
		*err = -ENOMEM;
		goto fail;
	}
	char path[4096], id[MS_UUID_STR_LEN], nonce[MS_UUID_STR_LEN];
	ms_uuid fresh;
	ms_uuid_generate(&fresh);
	ms_uuid_format(&r->build_id, id);
	ms_uuid_format(&fresh, nonce);
	snprintf(path, sizeof(path), "%s/peer-%s-%s-%.8s.cache", config->storage->cache_dir, id,
		 r->file == MS_PEER_FILE_ROOTFS ? "rootfs" : "memfile", nonce);
	struct ms_chunker_config cc = {
	    .chunk_size = config->chunk_size ? config->chunk_size : MS_PEER_CHUNK_DEFAULT,
	    .read_size = config->read_size ? config->read_size : MS_PEER_READ_DEFAULT,
	    .readahead = config->readahead};
	if (cc.read_size > cc.chunk_size)
		cc.read_size = cc.chunk_size;
	char key[MS_ARTIFACT_KEY_MAX]; /* for the chunker's messages: the peer ignores it */
	ms_artifact_key(key, sizeof(key), &r->build_id, config->storage->data, MS_COMPRESS_NONE);
	if (!(r->peer_src = ms_chunker_new(r->checked, key, config->size, NULL, path, &cc, err)))
		goto fail;
	return &r->base;
fail:
	ms_store_free(r->checked);
	pthread_mutex_destroy(&r->peer_store.lock);
	ms_peer_client_unref(r->client);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return NULL;
}

bool ms_peer_routing_is_routing(const struct ms_source *src)
{
	return src && src->ops == &ms_peer_routing_ops;
}

void ms_peer_routing_get_stats(struct ms_source *src, struct ms_peer_routing_stats *out)
{
	struct ms_peer_routing *r = (struct ms_peer_routing *)src;
	*out = (struct ms_peer_routing_stats){
	    .peer_reads = atomic_load(&r->peer_reads),
	    .storage_reads = atomic_load(&r->storage_reads),
	    .misses = atomic_load(&r->misses),
	    .peer_failures = atomic_load(&r->peer_failures),
	    .waits = atomic_load(&r->waits),
	    .on_storage = atomic_load(&r->on_store),
	    .moved_by_use_storage = atomic_load(&r->by_use_storage),
	};
}

/* ---- the resolver ---- */

struct ms_peer_known {
	char *address;
	struct ms_peer_client *client;
};

struct ms_peer_resolver {
	struct ms_build_storage *storage;
	char *token, *self;
	char **static_peers;
	size_t static_peer_count;
	struct ms_peer_client_config client_config;
	int64_t storage_wait_ns;
	ms_peer_on_storage_fn on_storage;
	void *ctx;
	uint64_t chunk_size, read_size;
	uint32_t readahead;
	struct ms_peer_read_totals totals;
	pthread_mutex_t lock; /* guards known and known_count: one client per address */
	struct ms_peer_known *known;
	size_t known_count;
};

void ms_peer_resolver_free(struct ms_peer_resolver *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->known_count; i++) {
		free(r->known[i].address);
		ms_peer_client_unref(r->known[i].client);
	}
	free(r->known);
	for (size_t i = 0; i < r->static_peer_count; i++)
		free(r->static_peers[i]);
	free(r->static_peers);
	free(r->token);
	free(r->self);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

struct ms_peer_resolver *ms_peer_resolver_new(const struct ms_peer_resolver_config *config,
					      int *err)
{
	if (!config || !config->storage || !config->token || !config->token[0] ||
	    (config->static_peer_count && !config->static_peers)) {
		*err = -EINVAL;
		return NULL;
	}
	struct ms_peer_resolver *r = calloc(1, sizeof(*r));
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&r->lock, NULL);
	r->storage = config->storage;
	r->client_config = config->client;
	r->storage_wait_ns = config->storage_wait_ns;
	r->on_storage = config->on_storage;
	r->ctx = config->ctx;
	r->chunk_size = config->chunk_size;
	r->read_size = config->read_size;
	r->readahead = config->readahead;
	if (!(r->token = strdup(config->token)) ||
	    (config->self_address && !(r->self = strdup(config->self_address))) ||
	    (config->static_peer_count &&
	     !(r->static_peers = calloc(config->static_peer_count, sizeof(char *)))))
		goto nomem;
	for (size_t i = 0; i < config->static_peer_count; i++) {
		if (!(r->static_peers[i] = strdup(config->static_peers[i])))
			goto nomem;
		r->static_peer_count = i + 1;
	}
	return r;
nomem:
	ms_peer_resolver_free(r);
	*err = -ENOMEM;
	return NULL;
}

struct ms_peer_read_totals *ms_peer_resolver_totals(struct ms_peer_resolver *r)
{
	return &r->totals;
}

/* The client for address (one reference), made on first use. */
static int ms_peer_client_for(struct ms_peer_resolver *r, const char *address,
			      struct ms_peer_client **out)
{
	int err = 0;
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->known_count; i++) {
		if (strcmp(r->known[i].address, address) == 0) {
			*out = ms_peer_client_ref(r->known[i].client);
			pthread_mutex_unlock(&r->lock);
			return 0;
		}
	}
	struct ms_peer_client_config cfg = r->client_config;
	cfg.address = address;
	cfg.token = r->token;
	struct ms_peer_known *grown = realloc(r->known, (r->known_count + 1) * sizeof(*grown));
	struct ms_peer_client *c = grown ? ms_peer_client_new(&cfg, &err) : NULL;
	char *copy = c ? strdup(address) : NULL;
	if (grown)
		r->known = grown;
	if (!copy) {
		ms_peer_client_unref(c);
		err = err ? err : -ENOMEM;
	} else {
		r->known[r->known_count++] = (struct ms_peer_known){copy, c};
		*out = ms_peer_client_ref(c);
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/*
 * A live peer that holds build_id's file and has not uploaded it: 0 with *client
 * (one reference) and the data size; MS_ENOTFOUND otherwise (go to the store).
 */
static int ms_peer_locate(struct ms_peer_resolver *r, const ms_uuid *build_id,
			  enum ms_peer_file file, struct ms_peer_client **client, uint64_t *size)
{
	struct ms_peer_record rec;
	bool have_rec = ms_peer_registry_lookup(r->storage->store, build_id,
						ms_peer_registry_now_ms(), &rec) == 0;
	size_t candidates = (have_rec ? 1 : 0) + r->static_peer_count;
	for (size_t i = 0; i < candidates; i++) {
		const char *address =
		    have_rec && i == 0 ? rec.address : r->static_peers[i - (have_rec ? 1 : 0)];
		if (r->self && strcmp(address, r->self) == 0)
			continue;
		struct ms_peer_client *c = NULL;
		if (ms_peer_client_for(r, address, &c))
			continue;
		enum ms_peer_status status;
		int err = ms_peer_client_status(c, build_id, file, &status, size);
		if (!err && status == MS_PEER_AVAILABLE) {
			*client = c;
			return 0;
		}
		ms_peer_client_unref(c);
		if (!err && status == MS_PEER_USE_STORAGE)
			break; /* uploaded: the store has it */
	}
	return MS_ENOTFOUND;
}

struct ms_peer_create {
	struct ms_peer_resolver *r;
	const ms_uuid *build_id;
	const struct ms_header *header;
};

static int ms_peer_create_source(const char *key, void *ctx, struct ms_source **out)
{
	(void)key;
	struct ms_peer_create *pc = ctx;
	struct ms_peer_resolver *r = pc->r;
	struct ms_peer_client *client;
	uint64_t size;
	int err;
	if (ms_peer_locate(r, pc->build_id, ms_peer_file_of_artifact(r->storage->data), &client,
			   &size) == 0) {
		struct ms_peer_routing_config rc = {.client = client,
						    .storage = r->storage,
						    .build_id = *pc->build_id,
						    .size = size,
						    .storage_wait_ns = r->storage_wait_ns,
						    .on_storage = r->on_storage,
						    .ctx = r->ctx,
						    .totals = &r->totals,
						    .chunk_size = r->chunk_size,
						    .read_size = r->read_size,
						    .readahead = r->readahead};
		*out = ms_peer_routing_new(&rc, &err);
		ms_peer_client_unref(client);
		return *out ? 0 : err;
	}
	/* the store: sized by the reader's header, or by the build's own header there
	 * (a header from a peer has no entry for a build that was not uploaded then) */
	const struct ms_build_data *entry = ms_header_build(pc->header, pc->build_id);
	struct ms_header *own = NULL;
	if (!entry || (entry->size <= 0 && !entry->frames))
		ms_build_storage_load_header(r->storage->store, pc->build_id,
					     ms_peer_header_artifact(r->storage->data), &own);
	err = ms_build_storage_open(r->storage, pc->build_id, own ? own : pc->header, out);
	ms_header_free(own);
	return err;
}

int ms_peer_resolve(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
		    struct ms_source **out)
{
	struct ms_peer_resolver *r = ctx;
	char key[MS_ARTIFACT_KEY_MAX];
	int err = ms_build_storage_key(r->storage, build_id, key, sizeof(key));
	if (err)
		return err;
	struct ms_peer_create pc = {r, build_id, header};
	return ms_diffstore_get_or_create(r->storage->diffs, key, ms_peer_create_source, &pc, out);
}

int ms_peer_resolver_load_header(struct ms_peer_resolver *r, const ms_uuid *build_id,
				 enum ms_peer_file file, struct ms_header **out, bool *from_peer)
{
	struct ms_peer_client *client;
	uint64_t size;
	*from_peer = false;
	if (ms_peer_locate(r, build_id, file, &client, &size) == 0) {
		enum ms_peer_status status;
		int err = ms_peer_client_header(client, build_id, file, &status, out);
		ms_peer_client_unref(client);
		if (!err && status == MS_PEER_AVAILABLE) {
			atomic_fetch_add(&r->totals.headers_from_peer, 1);
			*from_peer = true;
			return 0;
		}
	}
	return ms_build_storage_load_header(
	    r->storage->store, build_id,
	    file == MS_PEER_FILE_ROOTFS ? MS_ARTIFACT_ROOTFS_HEADER : MS_ARTIFACT_MEMFILE_HEADER,
	    out);
}

int ms_peer_resolver_load_blob(struct ms_peer_resolver *r, const ms_uuid *build_id,
			       enum ms_peer_op op, size_t max_len, void **buf, size_t *len,
			       bool *from_peer)
{
	if (op != MS_PEER_OP_SNAPFILE && op != MS_PEER_OP_METADATA)
		return -EINVAL;
	struct ms_peer_client *client;
	uint64_t size;
	*from_peer = false;
	if (ms_peer_locate(r, build_id, MS_PEER_FILE_MEMFILE, &client, &size) == 0) {
		struct ms_peer_request req = {.op = op, .build_id = *build_id};
		struct ms_peer_answer a;
		int err = ms_peer_client_get(client, &req, &a);
		ms_peer_client_unref(client);
		if (!err && a.status == MS_PEER_AVAILABLE && a.len <= max_len) {
			*buf = a.body ? a.body : malloc(1);
			*len = a.len;
			*from_peer = true;
			return *buf ? 0 : -ENOMEM;
		}
		if (!err)
			ms_peer_answer_fini(&a);
	}
	char key[MS_ARTIFACT_KEY_MAX];
	int err =
	    ms_artifact_key(key, sizeof(key), build_id,
			    op == MS_PEER_OP_SNAPFILE ? MS_ARTIFACT_SNAPFILE : MS_ARTIFACT_METADATA,
			    MS_COMPRESS_NONE);
	return err ? err : ms_store_read_all(r->storage->store, key, max_len, buf, len);
}
