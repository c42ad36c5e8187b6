/*
 * recovery.c - what a daemon that died (SIGKILL, power loss) leaves behind,
 * found and removed when the next one starts on the same directories.
 *
 * The upload journal: cache_dir/.memsnapd.uploads/ holds one empty file per
 * build whose upload this node started and has not finished, named by the
 * build id. An entry is written (and fsynced) before the build's first byte
 * goes to the store - the pause's upload waits for it - and removed once the
 * node recorded the pipeline's end. So after a crash the journal names
 * exactly the builds whose upload this node may have left half done; no other
 * node's build is ever touched (the store is shared by the fleet).
 *
 * For each entry, at start (and again by the janitor while the store does not
 * answer):
 *   - the build's header is in the store: the upload finished (the header is
 *     put last, after data and snapfile): the build is complete; only its
 *     leases (peers/, uploads/: storage/lease.h), if any, are stale and go.
 *   - no header: the build is LOST (its memory went with the daemon). Every
 *     object under "{build_id}/" (data, snapfile, metadata, checksums) and its
 *     leases are removed, and the build answers 410 from now on.
 *   - either way, the puts of the build the daemon died in leave no trace: the
 *     file store's temporary files and S3's incomplete multipart uploads under
 *     "{build_id}/" go, whatever their age (only this node uploads the build).
 * (memsnap store gc finds the same leftovers fleet-wide once the leases have
 * expired; this is the node's own, at once.)
 * Every removal is logged and counted (memsnap_recovery_removed_total{kind}).
 *
 * Invariants:
 *  1. An entry is removed only after its build was resolved (complete, or
 *     every leftover removed); a store error keeps it for the next try.
 *  2. A header in the store is never removed here: a build with a header is
 *     whole (data before header, docs/design.md §5.7).
 */
#include "node/node_int.h"
#include "storage/lease.h"
#include "storage/artifact.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MS_MOD "node"

static int ms_journal_path(struct ms_node *node, const ms_uuid *id, char *path, size_t size)
{
	char text[MS_UUID_STR_LEN] = "";
	if (id)
		ms_uuid_format(id, text);
	int n = snprintf(path, size, "%s/%s%s%s", node->cfg.cache_dir, MS_NODE_JOURNAL_NAME,
			 id ? "/" : "", text);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int ms_journal_sync_dir(struct ms_node *node)
{
	char dir[MS_NODE_PATH_MAX + 64];
	int err = ms_journal_path(node, NULL, dir, sizeof(dir));
	if (err)
		return err;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = fsync(fd) ? -errno : 0;
	close(fd);
	return err;
}

int ms_node_journal_add(struct ms_node *node, const ms_uuid *id)
{
	char path[MS_NODE_PATH_MAX + 64];
	int err = ms_journal_path(node, NULL, path, sizeof(path));
	if (err)
		return err;
	if (mkdir(path, 0700) && errno != EEXIST)
		return -errno;
	if ((err = ms_journal_path(node, id, path, sizeof(path))))
		return err;
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	err = fsync(fd) ? -errno : 0;
	close(fd);
	return err ? err : ms_journal_sync_dir(node);
}

void ms_node_journal_done(struct ms_node *node, const ms_uuid *id)
{
	char path[MS_NODE_PATH_MAX + 64];
	if (ms_journal_path(node, id, path, sizeof(path)) || (unlink(path) && errno != ENOENT))
		ms_warn(MS_MOD, "upload journal: cannot remove %s: %s", path, strerror(errno));
	else
		ms_journal_sync_dir(node);
}

struct ms_leftovers {
	char (*keys)[MS_STORE_KEY_MAX + 1];
	size_t count, cap;
	int err;
};

static int ms_leftover_add(const char *key, uint64_t size, int64_t mtime_ms, void *ctx)
{
	(void)size;
	(void)mtime_ms;
	struct ms_leftovers *l = ctx;
	if (l->count == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		void *grown = realloc(l->keys, cap * sizeof(*l->keys));
		if (!grown) {
			l->err = -ENOMEM;
			return -1;
		}
		l->keys = grown;
		l->cap = cap;
	}
	snprintf(l->keys[l->count++], sizeof(l->keys[0]), "%s", key);
	return 0;
}

static void ms_node_count_removed(struct ms_node *node, enum ms_recovery_kind kind, uint64_t n)
{
	atomic_fetch_add(&node->metrics.recovery_removed[kind], n);
}

/* Removes id's lease of kind (peers/, uploads/) if there is one (counted). */
static int ms_node_remove_lease(struct ms_node *node, const char *kind, const ms_uuid *id,
				const char *text, enum ms_recovery_kind counted)
{
	char key[MS_STORE_KEY_MAX + 1];
	uint64_t size;
	int err = ms_lease_key(kind, id, key, sizeof(key));
	if (err)
		return err;
	if ((err = ms_store_size(node->store, key, &size)) == MS_ENOTFOUND)
		return 0;
	if (err || (err = ms_lease_remove(node->store, kind, id)))
		return err;
	ms_info(MS_MOD, "build %s: removed its stale lease %s", text, key);
	ms_node_count_removed(node, counted, 1);
	return 0;
}

int ms_node_remove_leftovers(struct ms_node *node, const ms_uuid *id, bool *lost)
{
	char text[MS_UUID_STR_LEN], header[MS_ARTIFACT_KEY_MAX], prefix[MS_UUID_STR_LEN + 1];
	ms_uuid_format(id, text);
	int err = ms_artifact_key(header, sizeof(header), id, MS_ARTIFACT_MEMFILE_HEADER,
				  MS_COMPRESS_NONE);
	uint64_t size;
	if (!err)
		err = ms_store_size(node->store, header, &size);
	if (err && err != MS_ENOTFOUND)
		return err;
	*lost = err == MS_ENOTFOUND;
	if (*lost) {
		/* no header: nothing can read the build; everything under its prefix goes */
		struct ms_leftovers l = {0};
		snprintf(prefix, sizeof(prefix), "%s/", text);
		err = ms_store_list(node->store, prefix, ms_leftover_add, &l);
		if (!err)
			err = l.err;
		for (size_t i = 0; !err && i < l.count; i++) {
			if ((err = ms_store_remove(node->store, l.keys[i])) == MS_ENOTFOUND)
				err = 0;
			else if (!err) {
				ms_info(MS_MOD, "build %s: removed the orphaned object %s", text,
					l.keys[i]);
				ms_node_count_removed(node, MS_RECOVERY_STORE_OBJECT, 1);
			}
		}
		free(l.keys);
		if (err)
			return err;
	}
	/* the puts it died in (only this node puts this build's objects) */
	size_t incomplete = 0;
	snprintf(prefix, sizeof(prefix), "%s/", text);
	if ((err = ms_store_remove_incomplete(node->store_base, prefix, 0, false, &incomplete)))
		return err;
	if (incomplete) {
		ms_info(MS_MOD, "build %s: removed %zu leftovers of unfinished puts", text,
			incomplete);
		ms_node_count_removed(node, MS_RECOVERY_INCOMPLETE_PUT, incomplete);
	}
	/* this node no longer serves it, nor uploads it: both leases go */
	int err_peer =
	    ms_node_remove_lease(node, MS_LEASE_PEERS, id, text, MS_RECOVERY_PEER_RECORD);
	err = ms_node_remove_lease(node, MS_LEASE_UPLOADS, id, text, MS_RECOVERY_UPLOAD_LEASE);
	return err_peer ? err_peer : err;
}

/* node->lock held: remembers id as lost (answers 410 from now on). */
static int ms_node_add_lost_locked(struct ms_node *node, const ms_uuid *id)
{
	MS_ASSERT_HELD(&node->lock);
	for (size_t i = 0; i < node->nlost; i++)
		if (ms_uuid_eq(&node->lost[i], id))
			return 0;
	if (node->nlost == node->lost_cap) {
		size_t cap = node->lost_cap ? node->lost_cap * 2 : 8;
		void *grown = realloc(node->lost, cap * sizeof(*node->lost));
		if (!grown)
			return -ENOMEM;
		node->lost = grown;
		node->lost_cap = cap;
	}
	node->lost[node->nlost++] = *id;
	return 0;
}

bool ms_node_is_lost(struct ms_node *node, const ms_uuid *id)
{
	pthread_mutex_lock(&node->lock);
	bool lost = false;
	for (size_t i = 0; !lost && i < node->nlost; i++)
		lost = ms_uuid_eq(&node->lost[i], id);
	pthread_mutex_unlock(&node->lock);
	return lost;
}

int ms_node_recover(struct ms_node *node, unsigned *pending)
{
	char dir[MS_NODE_PATH_MAX + 64];
	int err = ms_journal_path(node, NULL, dir, sizeof(dir));
	*pending = 0;
	if (err)
		return err;
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	struct dirent *e;
	int first_err = 0;
	while ((e = readdir(d))) {
		ms_uuid id;
		if (e->d_name[0] == '.')
			continue;
		if (ms_uuid_parse(e->d_name, &id)) {
			ms_warn(MS_MOD, "upload journal: ignoring %s/%s", dir, e->d_name);
			continue;
		}
		bool lost = false;
		if ((err = ms_node_remove_leftovers(node, &id, &lost))) {
			ms_warn(MS_MOD, "build %s: cannot recover it yet: %s", e->d_name,
				ms_strerror(err));
			(*pending)++;
			if (!first_err)
				first_err = err;
			continue;
		}
		if (lost) {
			ms_warn(MS_MOD,
				"build %s was lost: memsnapd stopped before its upload finished",
				e->d_name);
			atomic_fetch_add(&node->metrics.builds_lost, 1);
			pthread_mutex_lock(&node->lock);
			err = ms_node_add_lost_locked(node, &id);
			pthread_mutex_unlock(&node->lock);
			if (err)
				return err;
		} else {
			ms_info(MS_MOD, "build %s: its upload had finished; nothing lost",
				e->d_name);
		}
		ms_node_journal_done(node, &id);
	}
	closedir(d);
	return first_err;
}
