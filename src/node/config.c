/*
 * config.c - memsnapd's options: one table (key, kind, default, help) drives
 * the file parser, the environment, the flags and --help, so the four can
 * never disagree.
 */
#include "node/config.h"
#include "util/clock.h"
#include "memsnap/memsnap.h"
#include "util/log.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ms_opt_kind {
	OPT_STR,
	OPT_BOOL,
	OPT_COUNT,
	OPT_DURATION,
	OPT_COMPRESS,
	OPT_PREFETCH,
	OPT_BYTES
};

struct ms_opt {
	const char *key;
	enum ms_opt_kind kind;
	size_t offset;
	size_t size; /* strings: the buffer's size */
	const char *def;
	const char *help;
};

#define STR(field, def, help)                                                                      \
	{                                                                                          \
#field, OPT_STR, offsetof(struct ms_node_config, field),                           \
		    sizeof(((struct ms_node_config *)0)->field), def, help                         \
	}
#define OPT(field, kind, def, help)                                                                \
	{                                                                                          \
#field, kind, offsetof(struct ms_node_config, field), 0, def, help                 \
	}

static const struct ms_opt ms_opts[] = {
    STR(socket, "/run/memsnap/memsnapd.sock", "the API's unix socket (mode 0600)"),
    STR(run_dir, "/run/memsnap", "page-server sockets of lazily resumed sandboxes"),
    STR(cache_dir, "/var/cache/memsnap", "diff files and chunk caches; emptied at start"),
    STR(store, "file:///var/lib/memsnap/store", "object store: file:///dir or s3://bucket/prefix"),
    STR(s3_endpoint, "", "S3 endpoint URL for s3:// stores (default: MEMSNAP_S3_ENDPOINT)"),
    OPT(s3_create_bucket, OPT_BOOL, "off", "s3:// stores: create the bucket at start if missing"),
    STR(s3_sts_endpoint, "",
	"STS for web-identity credentials (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN); empty: "
	"AWS_ENDPOINT_URL_STS, else https://sts.amazonaws.com"),
    OPT(s3_imds, OPT_BOOL, "off",
	"s3:// stores: take credentials from the instance metadata service (IMDSv2) when no "
	"other source has them"),
    STR(s3_imds_endpoint, "",
	"the instance metadata service; empty: AWS_EC2_METADATA_SERVICE_ENDPOINT, else "
	"http://169.254.169.254"),
    STR(tcp_listen, "", "also serve the API on 127.0.0.1:PORT (requires a token); empty: off"),
    STR(token_file, "", "file holding the bearer token for TCP (or set MEMSNAP_TOKEN)"),
    STR(backend, "auto", "sandbox backend: auto (kvm where /dev/kvm opens, else proc), kvm, proc"),
    STR(tracker, "auto",
	"written-page tracker: auto (async where the kernel has UFFD_FEATURE_WP_ASYNC and "
	"PAGEMAP_SCAN, Linux >= 6.7, else sync), async, or sync (userfaultfd write-protect "
	"faults, Linux >= 5.19)"),
    STR(log_level, "info", "error, warn, info or debug"),
    STR(log_format, "text",
	"log lines as text, or json (one object a line: ts, level, module, msg, sandbox_id, "
	"build_id)"),
    OPT(max_sandboxes, OPT_COUNT, "64", "sandboxes (running or paused) this node holds at most"),
    OPT(pageserver_workers, OPT_COUNT, "4", "fetch threads per lazy resume's page server"),
    OPT(prefetch_source, OPT_PREFETCH, "init",
	"what a lazy resume fetches and installs ahead of the guest's faults: init (the pages "
	"the last resume touched first, from the build's metadata.json), last-cycle (the pages "
	"the build itself holds), both, or off"),
    OPT(prefetch_workers, OPT_COUNT, "16", "fetch threads of one resume's prefetch"),
    OPT(prefetch_last_cycle_max_mib, OPT_COUNT, "256", "last-cycle prefetch: MiB at most"),
    OPT(store_quota_bytes, OPT_BYTES, "0",
	"the store's size limit (K, M, G, T: binary units): a pause that could pass it is "
	"refused (507); 0: none"),
    OPT(inflight_serve, OPT_BOOL, "on", "resume from a pause's memory while dedup runs"),
    OPT(dedup, OPT_BOOL, "on", "drop pages equal to the parent's (compare) before upload"),
    OPT(dedup_best_effort, OPT_BOOL, "on",
	"compare only with parent pages cached on this node (never fetch for dedup)"),
    OPT(compress, OPT_COMPRESS, "none", "upload diffs as none, zstd or lz4 frames"),
    OPT(grace_ns, OPT_DURATION, "30s", "memfd swap grace: longest a pause holds guest memory"),
    OPT(failed_hold_ns, OPT_DURATION, "10m",
	"a failed pause keeps its guest memory for the sandboxes still reading it, at most this "
	"long"),
    OPT(template_ttl_ns, OPT_DURATION, "25h", "template cache TTL (a hit never shortens it)"),
    OPT(cache_ttl_ns, OPT_DURATION, "25h",
	"the diff store's entries (open diff files and sources, with their fds) go this long "
	"after their last use (a sandbox using one keeps it)"),
    OPT(cache_delete_delay_ns, OPT_DURATION, "60s",
	"an expired or evicted entry is closed and freed this long after, for the readers "
	"still holding it"),
    OPT(guest_timeout_ns, OPT_DURATION, "120s", "longest wait for a guest's report"),
    OPT(fetch_timeout_ns, OPT_DURATION, "60s", "longest wait for a template's header+snapfile"),
    OPT(shutdown_timeout_ns, OPT_DURATION, "600s", "SIGTERM: longest wait for uploads to finish"),
    STR(peer_listen, "",
	"serve this node's builds to other nodes on ADDR:PORT (an IPv4 address they reach; "
	"needs the peer token); empty: off"),
    STR(peer_token_file, "",
	"file holding the token the nodes share for peer reads (or set MEMSNAP_PEER_TOKEN); "
	"without one this node reads other builds from the store only"),
    STR(peers, "", "static peers ADDR:PORT,... asked when the store's registry names none"),
    OPT(peer_ttl_ns, OPT_DURATION, "122m",
	"registry records (peers/{build}) expire after this if a node dies before removing them"),
    OPT(peer_tls, OPT_BOOL, "on",
	"the peer link over TLS, both ends certified by the fleet CA (needs peer_tls_ca, _cert "
	"and _key); off: plain HTTP, for a network nobody else is on"),
    STR(peer_tls_ca, "", "the fleet CA certificate (PEM) that signs every node's certificate"),
    STR(peer_tls_cert, "",
	"this node's certificate (PEM), signed by the fleet CA, naming the ADDR of peer_listen as "
	"an IP subjectAltName"),
    STR(peer_tls_key, "", "the private key of peer_tls_cert (PEM, unencrypted)"),
    OPT(test_stall_compare_ns, OPT_DURATION, "0",
	"tests: each pause's dedup compare waits this long before starting"),
    OPT(test_stall_drain_ns, OPT_DURATION, "0",
	"tests: each pause's drain waits this long before writing (the stop cuts it short)"),
    OPT(test_store_delay_ns, OPT_DURATION, "0", "tests: every object-store write sleeps this long"),
    STR(test_hold_store, "",
	"tests: OP:SUBSTRING (OP put or remove): every such store call on a key containing "
	"SUBSTRING hangs for an hour - for crash tests, which SIGKILL the daemon meanwhile"),
    STR(test_store_faults, "",
	"tests: KIND:N,... (put_timeout, put_refused, read_truncate): every N-th store call of "
	"the kind fails with ETIMEDOUT or ECONNREFUSED, or reads half the bytes"),
    STR(test_hold_upload, "",
	"tests: each pause's upload waits until this file exists (or the daemon stops)"),
    OPT(test_peer_die_after, OPT_COUNT, "0",
	"tests: on the Nth peer data request, let every upload finish, then die by SIGKILL "
	"(a node lost in the middle of a peer's read); 0: off"),
    OPT(test_tracker_probe_none, OPT_BOOL, "off",
	"tests: the written-page tracker's kernel probe reports no feature (the refusal at "
	"start)"),
};
#define MS_OPT_COUNT (sizeof(ms_opts) / sizeof(ms_opts[0]))

/* "grace_ns" -> "grace": the name people type */
static void ms_opt_name(const struct ms_opt *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->key);
	size_t n = strlen(out);
	if (n > 3 && strcmp(out + n - 3, "_ns") == 0)
		out[n - 3] = '\0';
}

static const struct ms_opt *ms_opt_find(const char *name)
{
	char buf[64];
	for (size_t i = 0; i < MS_OPT_COUNT; i++) {
		ms_opt_name(&ms_opts[i], buf, sizeof(buf));
		if (strcmp(buf, name) == 0)
			return &ms_opts[i];
	}
	return NULL;
}

static int ms_parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
		*out = true;
	else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

int ms_node_config_set(struct ms_node_config *cfg, const char *key, const char *value, char *why,
		       size_t why_len)
{
	const struct ms_opt *o = ms_opt_find(key);
	char scratch[8];
	if (!why) {
		why = scratch;
		why_len = sizeof(scratch);
	}
	if (!o) {
		snprintf(why, why_len, "unknown option '%s'", key);
		return -ENOENT;
	}
	void *field = (char *)cfg + o->offset;
	switch (o->kind) {
	case OPT_STR:
		if (strlen(value) >= o->size) {
			snprintf(why, why_len, "%s: longer than %zu bytes", key, o->size - 1);
			return -EINVAL;
		}
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case OPT_BOOL:
		if (ms_parse_bool(value, field)) {
			snprintf(why, why_len, "%s: '%s' is not on or off", key, value);
			return -EINVAL;
		}
		return 0;
	case OPT_COUNT: /* a count is a size without a unit, at most a million */
	case OPT_BYTES: {
		bool bytes = o->kind == OPT_BYTES;
		char *end;
		errno = 0;
		unsigned long long n = strtoull(value, &end, 10);
		unsigned shift = !*end		     ? 0
				 : !bytes	     ? 99
				 : !strcmp(end, "K") ? 10
				 : !strcmp(end, "M") ? 20
				 : !strcmp(end, "G") ? 30
				 : !strcmp(end, "T") ? 40
						     : 99;
		if (errno || !isdigit((unsigned char)*value) || shift == 99 ||
		    (shift && n > (UINT64_MAX >> shift)) || (!bytes && n > 1000000)) {
			snprintf(why, why_len, "%s: '%s' is not a %s", key, value,
				 bytes ? "size (like 500G, 2T, 0)" : "count (0..1000000)");
			return -EINVAL;
		}
		*(uint64_t *)field = (uint64_t)n << shift;
		return 0;
	}
	case OPT_DURATION:
		if (ms_duration_parse(value, field)) {
			snprintf(why, why_len, "%s: '%s' is not a duration (like 30s, 500ms, 25h)",
				 key, value);
			return -EINVAL;
		}
		return 0;
	case OPT_COMPRESS: {
		enum ms_compression *c = field;
		if (!strcmp(value, "none"))
			*c = MS_COMPRESS_NONE;
		else if (!strcmp(value, "zstd"))
			*c = MS_COMPRESS_ZSTD;
		else if (!strcmp(value, "lz4"))
			*c = MS_COMPRESS_LZ4;
		else {
			snprintf(why, why_len, "%s: '%s' is not none, zstd or lz4", key, value);
			return -EINVAL;
		}
		return 0;
	}
	case OPT_PREFETCH:
		if (ms_uffd_prefetch_source_parse(value, field)) {
			snprintf(why, why_len, "%s: '%s' is not init, last-cycle, both or off", key,
				 value);
			return -EINVAL;
		}
		return 0;
	}
	return -EINVAL;
}

void ms_node_config_defaults(struct ms_node_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < MS_OPT_COUNT; i++) {
		char name[64];
		ms_opt_name(&ms_opts[i], name, sizeof(name));
		int err = ms_node_config_set(cfg, name, ms_opts[i].def, NULL, 0);
		(void)err;
		assert(err == 0);
	}
}

static char *ms_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

int ms_node_config_parse_text(struct ms_node_config *cfg, const char *text, const char *source,
			      char *why, size_t why_len)
{
	char reason[256];
	unsigned line_no = 0;
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		line_no++;
		char line[1024];
		if (len >= sizeof(line)) {
			snprintf(why, why_len, "%s:%u: line too long", source, line_no);
			return -EINVAL;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		p += len + (nl ? 1 : 0);
		/* a comment: a whole line, or '#' after whitespace */
		for (char *c = line; *c; c++)
			if (*c == '#' && (c == line || c[-1] == ' ' || c[-1] == '\t')) {
				*c = '\0';
				break;
			}
		char *s = ms_trim(line);
		if (!*s)
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			snprintf(why, why_len, "%s:%u: expected 'key = value'", source, line_no);
			return -EINVAL;
		}
		*eq = '\0';
		char *key = ms_trim(s), *value = ms_trim(eq + 1);
		if (!*key) {
			snprintf(why, why_len, "%s:%u: empty key", source, line_no);
			return -EINVAL;
		}
		if (ms_node_config_set(cfg, key, value, reason, sizeof(reason))) {
			snprintf(why, why_len, "%s:%u: %s", source, line_no, reason);
			return -EINVAL;
		}
	}
	return 0;
}

static int ms_config_read_file(struct ms_node_config *cfg, const char *path, bool must_exist,
			       char *why, size_t why_len)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT && !must_exist)
			return 0;
		snprintf(why, why_len, "%s: %s", path, strerror(errno));
		return -EINVAL;
	}
	char *text = malloc(1 << 20);
	size_t n = text ? fread(text, 1, (1 << 20) - 1, f) : 0;
	bool too_big = text && n == (1 << 20) - 1 && fgetc(f) != EOF;
	fclose(f);
	if (!text || too_big) {
		free(text);
		snprintf(why, why_len, "%s: %s", path,
			 text ? "larger than 1 MiB" : "out of memory");
		return -EINVAL;
	}
	text[n] = '\0';
	if (memchr(text, '\0', n)) {
		free(text);
		snprintf(why, why_len, "%s: a NUL byte: not a text file", path);
		return -EINVAL;
	}
	int err = ms_node_config_parse_text(cfg, text, path, why, why_len);
	free(text);
	return err;
}

/* Reads a token file (name: the option, for messages) into token[size]; "" is no file. */
static int ms_config_read_token(const char *name, const char *path, char *token, size_t size,
				char *why, size_t why_len)
{
	if (!path[0])
		return 0;
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(why, why_len, "%s %s: %s", name, path, strerror(errno));
		return -EINVAL;
	}
	char buf[sizeof(((struct ms_node_config *)0)->token) + 2]; /* both tokens: 256 */
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *t = buf;
	while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
		t[--n] = '\0';
	if (n == 0 || n >= size) {
		snprintf(why, why_len, "%s %s: empty or longer than %zu bytes", name, path,
			 size - 1);
		return -EINVAL;
	}
	memcpy(token, t, n + 1);
	return 0;
}

void ms_node_config_usage(FILE *out)
{
	fprintf(out,
		"usage: memsnapd [--config FILE] [--OPTION VALUE ...]\n\n"
		"The memsnap node daemon: runs sandboxes, pauses them into layered,\n"
		"deduplicated snapshots and resumes them, behind an HTTP/JSON API on a unix\n"
		"socket (and optionally TCP on 127.0.0.1 with a bearer token).\n\n"
		"Settings come from the config file (%s, or --config FILE /\n"
		"MEMSNAP_CONFIG; lines of `key = value`, # comments), then MEMSNAP_<KEY>\n"
		"environment variables, then flags; each overrides the one before.\n"
		"Durations take ms, s, m or h (no unit: seconds); booleans on|off.\n\n"
		"options (flag / variable, default):\n",
		MS_NODE_CONFIG_DEFAULT_PATH);
	for (size_t i = 0; i < MS_OPT_COUNT; i++) {
		char name[64], flag[72], env[80];
		if (!strncmp(ms_opts[i].key, "test_", 5))
			continue; /* test hooks: docs/daemon.md, "Test hooks" */
		ms_opt_name(&ms_opts[i], name, sizeof(name));
		snprintf(flag, sizeof(flag), "--%s", name);
		snprintf(env, sizeof(env), "MEMSNAP_%s", name);
		for (char *c = flag; *c; c++)
			*c = *c == '_' ? '-' : *c;
		for (char *c = env; *c; c++)
			*c = (char)toupper((unsigned char)*c);
		fprintf(out, "  %-22s %-30s default: %s\n      %s\n", flag, env,
			ms_opts[i].def[0] ? ms_opts[i].def : "(empty)", ms_opts[i].help);
	}
	fprintf(out, "  %-22s %-30s\n      %s\n", "--config", "MEMSNAP_CONFIG",
		"the config file (default " MS_NODE_CONFIG_DEFAULT_PATH "; may be missing)");
	fprintf(out, "  %-22s %-30s\n      %s\n", "", "MEMSNAP_TOKEN",
		"the bearer token for TCP (instead of token_file; never a flag)");
	fprintf(out, "  %-22s %-30s\n      %s\n", "", "MEMSNAP_PEER_TOKEN",
		"the token the nodes share for peer reads (instead of peer_token_file)");
	fprintf(out, "  %-22s %-30s\n      %s\n", "--print-config", "",
		"print the effective configuration and exit");
	fprintf(out,
		"\nThe test hooks (--test-*) are not for production; docs/daemon.md lists them\n"
		"under \"Test hooks\".\n");
}

void ms_node_config_dump(const struct ms_node_config *cfg, FILE *out)
{
	for (size_t i = 0; i < MS_OPT_COUNT; i++) {
		const struct ms_opt *o = &ms_opts[i];
		const void *field = (const char *)cfg + o->offset;
		char name[64];
		ms_opt_name(o, name, sizeof(name));
		switch (o->kind) {
		case OPT_STR:
			fprintf(out, "%s = %s\n", name, (const char *)field);
			break;
		case OPT_BOOL:
			fprintf(out, "%s = %s\n", name, *(const bool *)field ? "on" : "off");
			break;
		case OPT_COUNT:
		case OPT_BYTES:
			fprintf(out, "%s = %llu\n", name,
				(unsigned long long)*(const uint64_t *)field);
			break;
		case OPT_DURATION:
			fprintf(out, "%s = %gs\n", name, (double)*(const int64_t *)field / 1e9);
			break;
		case OPT_COMPRESS: {
			enum ms_compression c = *(const enum ms_compression *)field;
			fprintf(out, "%s = %s\n", name,
				c == MS_COMPRESS_ZSTD  ? "zstd"
				: c == MS_COMPRESS_LZ4 ? "lz4"
						       : "none");
			break;
		}
		case OPT_PREFETCH:
			fprintf(out, "%s = %s\n", name,
				ms_uffd_prefetch_source_name(
				    *(const enum ms_uffd_prefetch_source *)field));
			break;
		}
	}
	fprintf(out, "# token: %s\n", cfg->token[0] ? "set" : "unset");
	fprintf(out, "# peer token: %s\n", cfg->peer_token[0] ? "set" : "unset");
}

static const char *ms_config_getenv(const char *name)
{
	return getenv(name);
}

int ms_node_config_load(struct ms_node_config *cfg, int argc, char **argv)
{
	char why[600];
	bool print = false;
	ms_node_config_defaults(cfg);
	/* the file: --config, else MEMSNAP_CONFIG, else the default (may be missing) */
	const char *path = getenv("MEMSNAP_CONFIG");
	bool explicit_path = path && *path;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			ms_node_config_usage(stdout);
			return 1;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("memsnapd %s\n", MEMSNAP_VERSION);
			return 1;
		}
		if (!strcmp(argv[i], "--config") && i + 1 < argc) {
			path = argv[++i];
			explicit_path = true;
		} else if (!strncmp(argv[i], "--config=", 9)) {
			path = argv[i] + 9;
			explicit_path = true;
		}
	}
	if (!explicit_path)
		path = MS_NODE_CONFIG_DEFAULT_PATH;
	snprintf(cfg->config_path, sizeof(cfg->config_path), "%s", path);
	if (ms_config_read_file(cfg, path, explicit_path, why, sizeof(why)))
		goto bad;
	/* the environment */
	for (size_t i = 0; i < MS_OPT_COUNT; i++) {
		char name[64], env[80], reason[300];
		ms_opt_name(&ms_opts[i], name, sizeof(name));
		snprintf(env, sizeof(env), "MEMSNAP_%s", name);
		for (char *c = env; *c; c++)
			*c = (char)toupper((unsigned char)*c);
		const char *v = getenv(env);
		if (v && ms_node_config_set(cfg, name, v, reason, sizeof(reason))) {
			snprintf(why, sizeof(why), "%s: %s", env, reason);
			goto bad;
		}
	}
	ms_s3_env_read(&cfg->s3_env, ms_config_getenv);
	const char *token = getenv("MEMSNAP_TOKEN");
	if (token && *token) {
		if (strlen(token) >= sizeof(cfg->token)) {
			snprintf(why, sizeof(why), "MEMSNAP_TOKEN: too long");
			goto bad;
		}
		snprintf(cfg->token, sizeof(cfg->token), "%s", token);
	}
	token = getenv("MEMSNAP_PEER_TOKEN");
	if (token && *token) {
		if (strlen(token) >= sizeof(cfg->peer_token)) {
			snprintf(why, sizeof(why), "MEMSNAP_PEER_TOKEN: too long");
			goto bad;
		}
		snprintf(cfg->peer_token, sizeof(cfg->peer_token), "%s", token);
	}
	/* the flags */
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *value = NULL;
		if (!strcmp(arg, "--config")) {
			i++;
			continue;
		}
		if (!strncmp(arg, "--config=", 9))
			continue;
		if (!strcmp(arg, "--print-config")) {
			print = true;
			continue;
		}
		if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
			snprintf(why, sizeof(why), "unexpected argument '%s'", arg);
			goto usage;
		}
		char name[64];
		const char *eq = strchr(arg, '=');
		size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		if (len >= sizeof(name)) {
			snprintf(why, sizeof(why), "unknown option '%s'", arg);
			goto usage;
		}
		memcpy(name, arg + 2, len);
		name[len] = '\0';
		for (char *c = name; *c; c++)
			*c = *c == '-' ? '_' : *c;
		if (eq)
			value = eq + 1;
		else if (i + 1 < argc)
			value = argv[++i];
		else {
			snprintf(why, sizeof(why), "%s needs a value", arg);
			goto usage;
		}
		char reason[300];
		int err = ms_node_config_set(cfg, name, value, reason, sizeof(reason));
		if (err) {
			snprintf(why, sizeof(why), "%s", reason);
			if (err == -ENOENT)
				goto usage;
			goto bad;
		}
	}
	if (ms_config_read_token("token_file", cfg->token_file, cfg->token, sizeof(cfg->token), why,
				 sizeof(why)) ||
	    ms_config_read_token("peer_token_file", cfg->peer_token_file, cfg->peer_token,
				 sizeof(cfg->peer_token), why, sizeof(why)))
		goto bad;
	enum ms_log_level level;
	if (ms_log_parse_level(cfg->log_level, &level)) {
		snprintf(why, sizeof(why), "log_level: '%s' is not error, warn, info or debug",
			 cfg->log_level);
		goto bad;
	}
	enum ms_log_format format;
	if (ms_log_parse_format(cfg->log_format, &format)) {
		snprintf(why, sizeof(why), "log_format: '%s' is not text or json", cfg->log_format);
		goto bad;
	}
	if (print) {
		ms_node_config_dump(cfg, stdout);
		return 1;
	}
	return 0;
usage:
	fprintf(stderr, "memsnapd: %s\n(memsnapd --help lists the options)\n", why);
	return 2;
bad:
	fprintf(stderr, "memsnapd: %s\n", why);
	return 2;
}
