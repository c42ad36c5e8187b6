/*
 * pause_upload.c - the pause pipeline's upload stage (DRAINED -> UPLOADED):
 * the diff (raw or as compressed frames), the snapfile, the checksum table of
 * every object it puts (storage/checksums.h), then the header, each put retried
 * on transient errors with a backoff that a cancel cuts short.
 * Runs on the pipeline thread; the release of the memory runs beside it.
 */
#include "header/serialize.h"
#include "snapshot/pause_int.h"
#include "storage/artifact.h"
#include "storage/checksums.h"
#include "storage/frames.h"
#include "storage/lease.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static bool ms_pause_transient(int err)
{
	return err == -ETIMEDOUT || err == -ECONNRESET || err == -ECONNREFUSED || err == -EAGAIN ||
	       err == -EIO || err == -EPIPE || err == -EHOSTUNREACH || err == -ENETUNREACH;
}

/*
 * Puts one object: from fd (size bytes from offset 0) or from buf; a transient
 * error is tried again with backoff, any other stops at once. Objects are atomic,
 * so a failed try leaves nothing behind.
 */
static int ms_pause_put(struct ms_pause *p, const char *key, int fd, const void *buf, uint64_t size)
{
	struct ms_backoff b;
	ms_backoff_init(&b, 50 * MS_NSEC_PER_MSEC, MS_NSEC_PER_SEC,
			p->config.upload_attempts ? p->config.upload_attempts : 4);
	for (;;) {
		if (atomic_load(&p->cancelled))
			return MS_ECANCELED; /* before each put: nothing more goes up */
		int err = fd >= 0 ? ms_store_put_file(p->config.store, key, fd, size, NULL)
				  : ms_store_put_buf(p->config.store, key, buf, (size_t)size, NULL);
		int64_t delay;
		if (!err) {
			pthread_mutex_lock(&p->lock);
			p->stats.upload_bytes += size;
			pthread_mutex_unlock(&p->lock);
			MS_PAUSE_COUNT(p, upload_bytes, size);
			return 0;
		}
		if (!ms_pause_transient(err) || !ms_backoff_next(&b, &delay)) {
			pthread_mutex_lock(&p->lock);
			p->stats.upload_failures++;
			pthread_mutex_unlock(&p->lock);
			MS_PAUSE_COUNT(p, upload_failures, 1);
			ms_warn("snapshot", "put %s failed: %s%s", key, ms_strerror(err),
				ms_pause_transient(err) ? " (no attempt left)" : " (not retried)");
			return err;
		}
		ms_info("snapshot", "put %s: %s, trying again in %lld ms", key, ms_strerror(err),
			(long long)(delay / MS_NSEC_PER_MSEC));
		pthread_mutex_lock(&p->lock);
		p->stats.upload_retries++;
		pthread_mutex_unlock(&p->lock);
		MS_PAUSE_COUNT(p, upload_retries, 1);
		if ((err = ms_pause_sleep(p, delay)))
			return err;
	}
}

/*
 * The diff as independent compressed frames: written to a temporary file next
 * to the diff, uploaded as "{id}/memfile.zstd|.lz4"; the frame table and the
 * SHA-256 of the uncompressed data go into self.
 */
static int ms_pause_put_compressed(struct ms_pause *p, int fd, uint64_t size,
				   struct ms_build_data *self, struct ms_sums *sums)
{
	char tmp[4200], key[MS_ARTIFACT_KEY_MAX];
	snprintf(tmp, sizeof(tmp), "%s.frames", p->diff_path);
	int out = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	int err = ms_frames_compress_fd(fd, size, p->config.compress, 0, MS_FRAME_DEFAULT_SIZE, out,
					&self->frames, self->checksum);
	if (!err) {
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE,
				p->config.compress);
		err = ms_sums_add_frames(sums, ms_artifact_name_of(key), out, self->frames);
	}
	if (!err)
		err =
		    ms_pause_put(p, key, out, NULL, (uint64_t)ms_frame_table_size_c(self->frames));
	close(out);
	unlink(tmp);
	return err;
}

/*
 * The builds entries (size, checksum, frame table) of the ancestors final maps,
 * as E2B's appendAncestorBuilds does: a child paused while an
 * ancestor was still uploading inherited a header without that ancestor's
 * entry, and without the frame table a compressed ancestor cannot be read from
 * the store. Called once the parent is published: the parent's live header is
 * then its finalized one, which carries its own ancestors' entries the same
 * way. An entry still missing is taken from the ancestor's own header in the
 * store; an ancestor without one there (a V3 chain) keeps the gap, which the
 * resolver fills from the object's size. On error final may have gained
 * entries; it is the caller's to free.
 */
static int ms_pause_fill_ancestors(struct ms_pause *p, struct ms_header *final)
{
	if (!final->has_builds)
		return 0;
	struct ms_header_ref *parent = NULL;
	int err = ms_layered_durable_header(p->parent, -1, &parent);
	for (size_t i = 0; !err && i < final->mappings.count; i++) {
		const ms_uuid *id = &final->mappings.entries[i].build_id;
		if (ms_uuid_is_nil(id) || ms_uuid_eq(id, &p->real_id) || ms_header_build(final, id))
			continue;
		const struct ms_build_data *entry = ms_header_build(parent->header, id);
		struct ms_header *own = NULL;
		if (!entry) {
			err = ms_build_storage_load_header(p->config.store, id,
							   MS_ARTIFACT_MEMFILE_HEADER, &own);
			if (!err)
				entry = ms_header_build(own, id);
			else if (err == MS_ENOTFOUND)
				err = 0;
		}
		if (!err && entry)
			err = ms_header_set_build(final, entry);
		else if (!err) {
			char text[MS_UUID_STR_LEN];
			ms_uuid_format(id, text);
			ms_info("snapshot", "ancestor %s has no builds entry anywhere: left out",
				text);
		}
		ms_header_free(own);
	}
	ms_header_ref_unref(parent);
	return err;
}

/* The uncompressed diff of size bytes in fd, as the object "memfile" (the packed
 * space a peer serves and an uncompressed upload puts). */
static int ms_pause_sums_add_data(struct ms_pause *p, struct ms_sums *sums, int fd, uint64_t size)
{
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE, MS_COMPRESS_NONE);
	return ms_sums_add_fd(sums, ms_artifact_name_of(key), fd, size, 0);
}

/*
 * The drain's checksum table of the diff (p->data_sums, "memfile"), and the diff
 * file in fd checked against it before it is uploaded or compressed: a byte that
 * changed on the local disk since the drain fails the upload with MS_ECHECKSUM
 * (counted in memsnap_integrity_failures_total) instead of going up under a
 * table made from the damaged bytes.
 */
static int ms_pause_check_drained(struct ms_pause *p, int fd, uint64_t size,
				  const struct ms_sums_object **out)
{
	void *value = NULL;
	int err = 0;
	if (!ms_future_peek(p->data_sums, &value, &err) || err || !value)
		return err ? err : -EINVAL; /* the drain settles it before DRAINED */
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE, MS_COMPRESS_NONE);
	const struct ms_sums_object *o = ms_sums_find(value, ms_artifact_name_of(key));
	if (!o)
		return -EINVAL;
	uint32_t bad = 0;
	err = o->size == size ? ms_sums_check_fd(o, fd, &bad) : MS_ECHECKSUM;
	if (err == -EIO) /* shorter than at the drain */
		err = MS_ECHECKSUM;
	if (err == MS_ECHECKSUM) {
		ms_integrity_count(MS_INTEGRITY_MEMFILE);
		if (o->size == size)
			ms_warn("snapshot",
				"%s changed since the drain: block %u (offset %llu) does not match "
				"its checksum; not uploaded",
				p->diff_path, bad, (unsigned long long)o->starts[bad]);
		else
			ms_warn("snapshot",
				"%s changed since the drain: %llu bytes, was %llu; not uploaded",
				p->diff_path, (unsigned long long)size,
				(unsigned long long)o->size);
	}
	if (!err)
		*out = o;
	return err;
}

/*
 * Data first, then the snapfile and metadata.json, then the header (docs/design.md §5.7); only the
 * header waits for the parent to be published (its ancestors were before it):
 * the data goes up meanwhile, and nothing waits for the memory's release. If the parent never makes
 * it, the data stays in the store unreferenced - no header names it - and this pause fails.
 */
static int ms_pause_upload_objects(struct ms_pause *p)
{
	int err;
	if (p->config.upload_gate && (err = ms_pause_await(p, p->config.upload_gate, -1, NULL)))
		return err;
	char key[MS_ARTIFACT_KEY_MAX];
	int fd = open(p->diff_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st)) {
		err = -errno;
		close(fd);
		return err;
	}
	struct ms_build_data self = {.build_id = p->real_id, .size = st.st_size};
	/* every object put below gets its checksums in here */
	struct ms_sums *sums = ms_sums_new();
	const struct ms_sums_object *drained = NULL;
	if (!sums)
		err = -ENOMEM;
	else if ((err = ms_pause_check_drained(p, fd, (uint64_t)st.st_size, &drained)))
		;
	else if (p->config.compress != MS_COMPRESS_NONE)
		err = ms_pause_put_compressed(p, fd, (uint64_t)st.st_size, &self, sums);
	else {
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE,
				MS_COMPRESS_NONE);
		/* the drain's table, not one made again from the file */
		err = ms_sums_add_object(sums, drained);
		if (!err)
			err = ms_pause_put(p, key, fd, NULL, (uint64_t)st.st_size);
	}
	close(fd);
	if (err) {
		ms_sums_unref(sums);
		ms_frame_table_free(self.frames);
		return err;
	}
	ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_SNAPFILE, MS_COMPRESS_NONE);
	struct ms_header *final = NULL;
	err = ms_sums_add_buf(sums, ms_artifact_name_of(key), p->snapfile, p->snapfile_len, 0);
	if (!err)
		err = ms_pause_put(p, key, -1, p->snapfile, p->snapfile_len);
	if (!err && p->metadata) {
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_METADATA,
				MS_COMPRESS_NONE);
		err = ms_sums_add_buf(sums, ms_artifact_name_of(key), p->metadata, p->metadata_len,
				      0);
		if (!err)
			err = ms_pause_put(p, key, -1, p->metadata, p->metadata_len);
	}
	if (!err &&
	    /* an ancestor that never reached the store: no child header */
	    !(err = p->config.parent_published
			? ms_pause_await(p, p->config.parent_published, -1, NULL)
			: 0) &&
	    /* the deduped header, swapped in or not: only the release waits for the swap */
	    !(final = ms_header_copy(p->durable->header)))
		err = -ENOMEM;
	if (err) {
		ms_sums_unref(sums);
		ms_frame_table_free(self.frames);
		return err;
	}
	final->incomplete = false;
	uint8_t *blob = NULL;
	size_t len;
	err = ms_header_set_build(final, &self);
	ms_frame_table_free(self.frames);
	if (!err)
		err = ms_pause_fill_ancestors(p, final);
	if (!err && !(err = ms_header_serialize(final, 0, false, &blob, &len))) {
		/* the checksum table goes last before the header, which commits the build */
		uint8_t *table = NULL;
		size_t table_len;
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_CHECKSUMS,
				MS_COMPRESS_NONE);
		if (!(err = ms_build_storage_sums_finish(p->config.store, &p->real_id, sums, blob,
							 len, &table, &table_len)))
			err = ms_pause_put(p, key, -1, table, table_len);
		free(table);
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE_HEADER,
				MS_COMPRESS_NONE);
		if (!err)
			err = ms_pause_put(p, key, -1, blob, len);
	}
	ms_sums_unref(sums);
	free(blob);
	if (err) {
		ms_header_free(final);
		return err;
	}
	p->final = final; /* publish swaps it in */
	return ms_pause_enter(p, MS_PAUSE_UPLOADED, NULL);
}

int ms_pause_data_sums(struct ms_pause *p)
{
	int fd = open(p->diff_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	struct ms_sums *sums = NULL;
	int err = fstat(fd, &st) ? -errno : (sums = ms_sums_new()) ? 0 : -ENOMEM;
	if (!err)
		err = ms_pause_sums_add_data(p, sums, fd, (uint64_t)st.st_size);
	close(fd);
	if (!err && !(err = ms_future_set(p->data_sums, sums)))
		return 0;
	ms_sums_unref(sums);
	return err;
}

/*
 * The upload under the build's uploads/ lease: taken before the first put,
 * given back after the header (or the failure). A lease that cannot be taken
 * or given back is logged, never a failure of the upload: it only guards the
 * data against a collector, whose age limit guards it too.
 */
int ms_pause_upload(struct ms_pause *p)
{
	if (!p->config.upload_holder)
		return ms_pause_upload_objects(p);
	int err = ms_lease_put(p->config.store, MS_LEASE_UPLOADS, "holder", &p->real_id,
			       p->config.upload_holder, 0, ms_lease_now_ms());
	if (err)
		ms_warn("snapshot", "upload lease not taken: %s", ms_strerror(err));
	int rc = ms_pause_upload_objects(p);
	if (!err && (err = ms_lease_remove(p->config.store, MS_LEASE_UPLOADS, &p->real_id)))
		ms_warn("snapshot", "upload lease not given back (it expires): %s",
			ms_strerror(err));
	return rc;
}
