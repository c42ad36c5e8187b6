/*
 * fs.c - the fs object store: a directory where object K is the file ROOT/K.
 *
 * A store written by hand or by E2B's tools can be served as is. Writes go to a
 * temporary file ".NAME.tmp.XXXXXX" in the object's directory, are fsynced and
 * renamed over the object, then the directory is fsynced (store.h semantics 1):
 * a reader sees the old or the new object, never a prefix or a stale tail.
 * Metadata lives in a sidecar ".NAME.meta" (JSON object), written the same way.
 * Names starting with '.' are never objects: listing skips them, and keys
 * whose last segment starts with '.' are refused.
 * Keys cannot escape ROOT: store.c rejects "..", ".", empty segments and a
 * leading '/'; files are opened with O_NOFOLLOW on the last component.
 *
 * Thread-safety: stateless apart from the root path; safe from any thread.
 */
#include "storage/store.h"
#include "util/err.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct ms_store_fs {
	struct ms_store base;
	char *root; /* absolute, no trailing '/'; immutable */
};

static struct ms_store_fs *ms_fs(struct ms_store *store)
{
	return (struct ms_store_fs *)store;
}

/* ROOT/key into buf; -ENAMETOOLONG or -EINVAL for a dot-name object. */
static int ms_fs_path(struct ms_store_fs *fs, const char *key, char *buf, size_t size)
{
	const char *name = strrchr(key, '/');
	name = name ? name + 1 : key;
	if (name[0] == '.')
		return -EINVAL;
	int n = snprintf(buf, size, "%s/%s", fs->root, key);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Sidecar ".NAME.meta" or temp prefix ".NAME.tmp." next to the object. */
static int ms_fs_side_path(struct ms_store_fs *fs, const char *key, const char *suffix, char *buf,
			   size_t size)
{
	const char *slash = strrchr(key, '/');
	int dir_len = slash ? (int)(slash - key) : 0;
	const char *name = slash ? slash + 1 : key;
	int n = snprintf(buf, size, "%s/%.*s%s.%s%s", fs->root, dir_len, key, slash ? "/" : "",
			 name, suffix);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* mkdir -p of every directory above path (path itself is a file). */
static int ms_fs_mkdirs(char *path, size_t root_len)
{
	for (char *p = path + root_len + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		int rc = mkdir(path, 0755);
		int err = rc && errno != EEXIST ? -errno : 0;
		*p = '/';
		if (err)
			return err;
	}
	return 0;
}

static int ms_fs_fsync_dir(const char *file_path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", file_path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int err = fsync(fd) ? -errno : 0;
	close(fd);
	return err;
}

static int ms_fs_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Copies size bytes of src_fd from offset 0 into dst_fd. */
static int ms_fs_copy_fd(int src_fd, int dst_fd, uint64_t size)
{
	loff_t in_off = 0;
	while ((uint64_t)in_off < size) {
		ssize_t n =
		    copy_file_range(src_fd, &in_off, dst_fd, NULL, size - (uint64_t)in_off, 0);
		if (n > 0)
			continue;
		if (n == 0)
			return -EIO; /* the source is shorter than size */
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP &&
		    errno != EBADF)
			return -errno;
		/* no copy_file_range between these files: plain pread/write */
		char *buf = malloc(1 << 20);
		if (!buf)
			return -ENOMEM;
		int err = 0;
		while (!err && (uint64_t)in_off < size) {
			size_t want = size - (uint64_t)in_off > (1 << 20) ? (1 << 20)
									  : size - (uint64_t)in_off;
			ssize_t r = pread(src_fd, buf, want, in_off);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				err = r < 0 ? -errno : -EIO;
			else if (!(err = ms_fs_write_all(dst_fd, buf, (size_t)r)))
				in_off += r;
		}
		free(buf);
		return err;
	}
	return 0;
}

/*
 * Atomic replace of path: fill a temp file through write_fn, fsync, rename,
 * fsync the directory. On error the temp file is removed and path is unchanged.
 */
static int ms_fs_atomic_write(struct ms_store_fs *fs, const char *key, const char *path,
			      int (*write_fn)(int fd, void *ctx), void *ctx)
{
	char tmp[PATH_MAX];
	int err = ms_fs_side_path(fs, key, "tmp.XXXXXX", tmp, sizeof(tmp));
	if (err)
		return err;
	if ((err = ms_fs_mkdirs(tmp, strlen(fs->root))))
		return err;
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if ((err = write_fn(fd, ctx)))
		goto fail;
	if (fchmod(fd, 0644) || fsync(fd)) {
		err = -errno;
		goto fail;
	}
	if (close(fd)) {
		fd = -1;
		err = -errno;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path)) {
		err = -errno;
		goto fail;
	}
	return ms_fs_fsync_dir(path);
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return err;
}

struct ms_fs_buf_ctx {
	const void *buf;
	size_t len;
};

static int ms_fs_write_buf(int fd, void *ctx)
{
	struct ms_fs_buf_ctx *c = ctx;
	return ms_fs_write_all(fd, c->buf, c->len);
}

struct ms_fs_fd_ctx {
	int fd;
	uint64_t size;
};

static int ms_fs_write_fd(int fd, void *ctx)
{
	struct ms_fs_fd_ctx *c = ctx;
	return ms_fs_copy_fd(c->fd, fd, c->size);
}

static int ms_fs_put_meta(struct ms_store_fs *fs, const char *key, const struct ms_store_meta *meta)
{
	char path[PATH_MAX];
	int err = ms_fs_side_path(fs, key, "meta", path, sizeof(path));
	if (err)
		return err;
	if (!meta || meta->count == 0) {
		if (unlink(path) && errno != ENOENT)
			return -errno;
		return 0;
	}
	cJSON *obj = cJSON_CreateObject();
	if (!obj)
		return -ENOMEM;
	for (unsigned i = 0; i < meta->count; i++)
		if (!cJSON_AddStringToObject(obj, meta->items[i].key, meta->items[i].value)) {
			cJSON_Delete(obj);
			return -ENOMEM;
		}
	char *text = cJSON_PrintUnformatted(obj);
	cJSON_Delete(obj);
	if (!text)
		return -ENOMEM;
	struct ms_fs_buf_ctx ctx = {text, strlen(text)};
	err = ms_fs_atomic_write(fs, key, path, ms_fs_write_buf, &ctx);
	free(text);
	return err;
}

/*
 * The object is renamed in first, then its metadata: a reader may briefly see
 * the new object with the previous metadata, never a partial object.
 */
static int ms_fs_put(struct ms_store *store, const char *key, int (*write_fn)(int, void *),
		     void *ctx, const struct ms_store_meta *meta)
{
	struct ms_store_fs *fs = ms_fs(store);
	char path[PATH_MAX];
	int err = ms_fs_path(fs, key, path, sizeof(path));
	if (err)
		return err;
	if ((err = ms_fs_atomic_write(fs, key, path, write_fn, ctx)))
		return err;
	return ms_fs_put_meta(fs, key, meta);
}

static int ms_fs_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
			 const struct ms_store_meta *meta)
{
	struct ms_fs_buf_ctx ctx = {buf, len};
	return ms_fs_put(store, key, ms_fs_write_buf, &ctx, meta);
}

static int ms_fs_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
			  const struct ms_store_meta *meta)
{
	struct ms_fs_fd_ctx ctx = {fd, size};
	return ms_fs_put(store, key, ms_fs_write_fd, &ctx, meta);
}

static int ms_fs_open(struct ms_store *store, const char *key)
{
	char path[PATH_MAX];
	int err = ms_fs_path(ms_fs(store), key, path, sizeof(path));
	if (err)
		return err;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? MS_ENOTFOUND : -errno;
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return MS_ENOTFOUND;
	}
	return fd;
}

static int ms_fs_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
			    size_t len, size_t *got)
{
	*got = 0;
	int fd = ms_fs_open(store, key);
	if (fd < 0)
		return fd;
	int err = 0;
	while (*got < len) {
		ssize_t n = pread(fd, (char *)dst + *got, len - *got, (off_t)(off + *got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			break;
		}
		if (n == 0)
			break; /* end of object: short read */
		*got += (size_t)n;
	}
	close(fd);
	return err;
}

static int ms_fs_local(struct ms_store *store, const char *key, char *path, size_t cap,
		       struct ms_sums **sums)
{
	*sums = NULL;
	int fd = ms_fs_open(store, key); /* a regular file that is there */
	if (fd < 0)
		return fd;
	close(fd);
	return ms_fs_path(ms_fs(store), key, path, cap);
}

static int ms_fs_size(struct ms_store *store, const char *key, uint64_t *size)
{
	int fd = ms_fs_open(store, key);
	if (fd < 0)
		return fd;
	struct stat st;
	int err = fstat(fd, &st) ? -errno : 0;
	if (!err)
		*size = (uint64_t)st.st_size;
	close(fd);
	return err;
}

static int ms_fs_remove(struct ms_store *store, const char *key)
{
	struct ms_store_fs *fs = ms_fs(store);
	char path[PATH_MAX], meta[PATH_MAX];
	int err = ms_fs_path(fs, key, path, sizeof(path));
	if (err || (err = ms_fs_side_path(fs, key, "meta", meta, sizeof(meta))))
		return err;
	struct stat st;
	if (lstat(path, &st) || !S_ISREG(st.st_mode))
		return MS_ENOTFOUND;
	if (unlink(path))
		return errno == ENOENT ? MS_ENOTFOUND : -errno;
	if (unlink(meta) && errno != ENOENT)
		return -errno;
	return ms_fs_fsync_dir(path);
}

static int ms_fs_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta)
{
	struct ms_store_fs *fs = ms_fs(store);
	uint64_t size;
	int err = ms_fs_size(store, key, &size);
	if (err)
		return err;
	char path[PATH_MAX];
	if ((err = ms_fs_side_path(fs, key, "meta", path, sizeof(path))))
		return err;
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno; /* no sidecar: no metadata */
	char text[8192];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	cJSON *obj = cJSON_Parse(text);
	if (!cJSON_IsObject(obj)) {
		cJSON_Delete(obj);
		return MS_ECORRUPT;
	}
	const cJSON *item;
	err = 0;
	cJSON_ArrayForEach(item, obj)
	{
		if (!cJSON_IsString(item) ||
		    ms_store_meta_set(meta, item->string, item->valuestring)) {
			err = MS_ECORRUPT;
			break;
		}
	}
	cJSON_Delete(obj);
	return err;
}

/* ---- listing: a recursive walk in key order ---- */

struct ms_fs_list {
	ms_store_list_fn fn;
	void *ctx;
	const char *prefix;
	size_t prefix_len;
};

static int ms_fs_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks ROOT/rel (rel "" or "a/b/"); keys compare as "rel + name". */
static int ms_fs_walk(struct ms_store_fs *fs, const char *rel, struct ms_fs_list *list)
{
	char dir_path[PATH_MAX];
	snprintf(dir_path, sizeof(dir_path), "%s/%s", fs->root, rel);
	DIR *dir = opendir(dir_path);
	if (!dir)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	char **names = NULL;
	size_t count = 0, cap = 0;
	int err = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue; /* ., .., temp files, sidecars */
		if (count == cap) {
			cap = cap ? cap * 2 : 32;
			char **grown = realloc(names, cap * sizeof(*grown));
			if (!grown) {
				err = -ENOMEM;
				break;
			}
			names = grown;
		}
		if (!(names[count] = strdup(de->d_name))) {
			err = -ENOMEM;
			break;
		}
		count++;
	}
	closedir(dir);
	/* sorted by name within each directory; a directory's keys come at its name
	 * (an empty directory has no names array: qsort's base may not be NULL) */
	if (count)
		qsort(names, count, sizeof(*names), ms_fs_name_cmp);
	for (size_t i = 0; !err && i < count; i++) {
		char key[MS_STORE_KEY_MAX + 2];
		int n = snprintf(key, sizeof(key), "%s%s", rel, names[i]);
		if (n < 0 || (size_t)n > MS_STORE_KEY_MAX)
			continue;
		/* prune subtrees that cannot match the prefix */
		size_t common = (size_t)n < list->prefix_len ? (size_t)n : list->prefix_len;
		if (strncmp(key, list->prefix, common) != 0)
			continue;
		char full[PATH_MAX];
		snprintf(full, sizeof(full), "%s/%s", fs->root, key);
		struct stat st;
		if (lstat(full, &st))
			continue;
		if (S_ISDIR(st.st_mode)) {
			strcat(key, "/");
			err = ms_fs_walk(fs, key, list);
		} else if (S_ISREG(st.st_mode) && (size_t)n >= list->prefix_len) {
			int64_t mtime_ms =
			    (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
			int stop = list->fn(key, (uint64_t)st.st_size, mtime_ms, list->ctx);
			if (stop)
				err = stop > 0 ? 1 : stop;
		}
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return err;
}

static int ms_fs_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn, void *ctx)
{
	struct ms_fs_list list = {fn, ctx, prefix, strlen(prefix)};
	int err = ms_fs_walk(ms_fs(store), "", &list);
	return err > 0 ? 0 : err; /* 1 = stopped by the callback */
}

/*
 * The temporary files of puts that never finished (".NAME.tmp.XXXXXX", also of
 * sidecars) under ROOT/rel whose key (rel + the object's name) starts with
 * prefix, modified at least older_than_ms ago.
 */
static int ms_fs_incomplete_walk(struct ms_store_fs *fs, const char *rel, const char *prefix,
				 int64_t older_than_ms, int64_t now_ms, bool dry_run, size_t *count)
{
	char dir_path[PATH_MAX];
	snprintf(dir_path, sizeof(dir_path), "%s/%s", fs->root, rel);
	DIR *dir = opendir(dir_path);
	if (!dir)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	size_t prefix_len = strlen(prefix);
	int err = 0;
	struct dirent *de;
	while (!err && (de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char key[MS_STORE_KEY_MAX + 2];
		const char *tmp = de->d_name[0] == '.' ? strstr(de->d_name, ".tmp.") : NULL;
		/* the key the file belongs to: ".NAME[.meta].tmp.X" -> NAME */
		int n = tmp ? snprintf(key, sizeof(key), "%s%.*s", rel, (int)(tmp - de->d_name - 1),
				       de->d_name + 1)
			    : snprintf(key, sizeof(key), "%s%s/", rel, de->d_name);
		if (n < 0 || (size_t)n > MS_STORE_KEY_MAX)
			continue;
		size_t common = (size_t)n < prefix_len ? (size_t)n : prefix_len;
		if (strncmp(key, prefix, common) != 0)
			continue;
		struct stat st;
		char path[PATH_MAX + 256];
		snprintf(path, sizeof(path), "%s/%s", dir_path, de->d_name);
		if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue; /* gone meanwhile */
		if (!tmp) {
			if (S_ISDIR(st.st_mode) && de->d_name[0] != '.')
				err = ms_fs_incomplete_walk(fs, key, prefix, older_than_ms, now_ms,
							    dry_run, count);
			continue;
		}
		if (!S_ISREG(st.st_mode) || (size_t)n < prefix_len)
			continue;
		int64_t mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
		if (now_ms - mtime_ms < older_than_ms)
			continue; /* a put may still be writing it */
		if (!dry_run && unlinkat(dirfd(dir), de->d_name, 0)) {
			if (errno != ENOENT)
				err = -errno;
			continue;
		}
		ms_info("storage", "%s the temporary file %s of an unfinished put",
			dry_run ? "would remove" : "removed", path);
		(*count)++;
	}
	closedir(dir);
	return err;
}

static int ms_fs_remove_incomplete(struct ms_store *store, const char *prefix,
				   int64_t older_than_ms, bool dry_run, size_t *count)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	return ms_fs_incomplete_walk(ms_fs(store), "", prefix, older_than_ms, now_ms, dry_run,
				     count);
}

static void ms_fs_free(struct ms_store *store)
{
	struct ms_store_fs *fs = ms_fs(store);
	free(fs->root);
	free(fs);
}

static const struct ms_store_ops ms_fs_ops = {
    .name = "fs",
    .put_buf = ms_fs_put_buf,
    .put_file = ms_fs_put_file,
    .read_range = ms_fs_read_range,
    .size = ms_fs_size,
    .remove = ms_fs_remove,
    .list = ms_fs_list,
    .get_meta = ms_fs_get_meta,
    .free = ms_fs_free,
    .remove_incomplete = ms_fs_remove_incomplete,
    .local = ms_fs_local,
};

struct ms_store *ms_store_fs_new(const char *dir, int *err)
{
	*err = -EINVAL;
	if (!dir || !*dir)
		return NULL;
	if (mkdir(dir, 0755) && errno != EEXIST) {
		*err = -errno;
		return NULL;
	}
	char *root = realpath(dir, NULL);
	if (!root) {
		*err = -errno;
		return NULL;
	}
	struct stat st;
	if (stat(root, &st) || !S_ISDIR(st.st_mode)) {
		*err = -ENOTDIR;
		free(root);
		return NULL;
	}
	struct ms_store_fs *fs = calloc(1, sizeof(*fs));
	if (!fs) {
		*err = -ENOMEM;
		free(root);
		return NULL;
	}
	fs->base.ops = &ms_fs_ops;
	fs->root = root;
	*err = 0;
	return &fs->base;
}
