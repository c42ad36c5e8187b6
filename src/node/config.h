/*
 * config.h - memsnapd's configuration: one table of options, read from a
 * file, then the environment, then the command line (each overrides the one
 * before).
 *
 * File format (/etc/memsnap/memsnapd.conf by default): one `key = value` per
 * line; `#` starts a comment (whole line, or after whitespace); blank lines
 * are ignored; a key may appear once per source (the last one wins); unknown
 * keys and bad values are errors that name the file and the line.
 * Environment: MEMSNAP_<KEY> in upper case (MEMSNAP_CACHE_DIR). Flags:
 * --<key> VALUE or --<key>=VALUE with '-' for '_' (--cache-dir).
 *
 * Values: strings as written (no quoting); booleans on|off|true|false|1|0;
 * durations N with an optional unit ms|s|m|h (no unit: seconds); counts as
 * decimal integers.
 *
 * Nothing below node/ reads this: the daemon passes each setting down as an
 * argument (docs/design.md §2).
 */
#ifndef MS_NODE_CONFIG_H
#define MS_NODE_CONFIG_H

#include "storage/frametable.h"
#include "storage/s3.h"
#include "uffd/prefetch.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define MS_NODE_CONFIG_DEFAULT_PATH "/etc/memsnap/memsnapd.conf"
#define MS_NODE_PATH_MAX	    512

struct ms_node_config {
	char config_path[MS_NODE_PATH_MAX];
	/* where the daemon lives */
	char socket[MS_NODE_PATH_MAX];	    /* the API's unix socket */
	char run_dir[MS_NODE_PATH_MAX];	    /* page-server sockets */
	char cache_dir[MS_NODE_PATH_MAX];   /* diff files and chunk caches (wiped at start) */
	char store[MS_NODE_PATH_MAX];	    /* file:///dir or s3://bucket/prefix */
	char s3_endpoint[MS_NODE_PATH_MAX]; /* for s3:// stores */
	bool s3_create_bucket;		    /* create the bucket at start if missing */
	char tcp_listen[64];		    /* "127.0.0.1:PORT" or empty: no TCP */
	char token_file[MS_NODE_PATH_MAX];  /* the bearer token TCP requires */
	char token[256];		    /* MEMSNAP_TOKEN only (never a flag: ps shows flags) */
	char backend[16];		    /* auto|kvm|proc */
	char tracker[8];		    /* written-page tracker: auto|async|sync */
	char log_level[16];		    /* error|warn|info|debug */
	char log_format[8];		    /* text|json */
	uint64_t max_sandboxes;
	uint64_t pageserver_workers;
	/* prefetch at resume (uffd/prefetch.h) */
	enum ms_uffd_prefetch_source prefetch_source;
	uint64_t prefetch_workers;
	uint64_t prefetch_last_cycle_max_mib;
	uint64_t store_quota_bytes; /* 0: no quota; else pauses that would pass it are refused */
	/* the pause pipeline's feature flags */
	bool inflight_serve;
	bool dedup;
	bool dedup_best_effort;
	enum ms_compression compress;
	int64_t grace_ns;	/* memfd swap grace */
	int64_t failed_hold_ns; /* a failed pause's memory, held for the sandboxes reading it */
	/* timeouts */
	int64_t template_ttl_ns;
	int64_t cache_ttl_ns;	       /* the diff store's entries */
	int64_t cache_delete_delay_ns; /* an expired entry is freed after this */
	int64_t guest_timeout_ns;
	int64_t fetch_timeout_ns;
	int64_t shutdown_timeout_ns;
	/* peers: other nodes read this node's builds before they are uploaded */
	char peer_listen[64];			/* "ADDR:PORT" of the peer server; empty: off */
	char peer_token_file[MS_NODE_PATH_MAX]; /* the token every node of the fleet shares */
	char peer_token[256];			/* MEMSNAP_PEER_TOKEN or peer_token_file */
	struct ms_s3_env s3_env;      /* an s3:// store's other settings, from the environment */
	char peers[MS_NODE_PATH_MAX]; /* static peers "ADDR:PORT,ADDR:PORT" */
	int64_t peer_ttl_ns;	      /* registry records expire after this */
	bool peer_tls;		      /* the peer link over TLS (node/peer/tls.h) */
	char peer_tls_ca[MS_NODE_PATH_MAX];   /* the fleet CA (PEM) */
	char peer_tls_cert[MS_NODE_PATH_MAX]; /* this node's certificate, signed by it */
	char peer_tls_key[MS_NODE_PATH_MAX];  /* that certificate's key */
	/* test hooks */
	int64_t test_stall_compare_ns;
	int64_t test_stall_drain_ns;
	int64_t test_store_delay_ns;
	char test_hold_store[MS_NODE_PATH_MAX];	 /* "put:SUBSTRING" / "remove:SUBSTRING" */
	char test_hold_upload[MS_NODE_PATH_MAX]; /* uploads wait until this file exists */
	char
	    test_store_faults[MS_NODE_PATH_MAX]; /* "put_timeout:N,put_refused:N,read_truncate:N" */
	uint64_t test_peer_die_after;		 /* SIGKILL on the Nth peer data request */
	bool test_tracker_probe_none;		 /* the tracker probe reports no feature */

	/* where an s3:// store's temporary credentials come from (over the environment's) */
	char s3_sts_endpoint[MS_NODE_PATH_MAX];	 /* web identity's STS; "": env, else AWS's */
	bool s3_imds;				 /* credentials from IMDSv2 (opt-in) */
	char s3_imds_endpoint[MS_NODE_PATH_MAX]; /* "": env, else AWS's address */
};

/* Fills every field with its default. */
void ms_node_config_defaults(struct ms_node_config *cfg);
/*
 * Sets one option by key ("cache_dir"). 0; -ENOENT for an unknown key;
 * -EINVAL for a bad value (why, when not NULL, gets a reason).
 */
int ms_node_config_set(struct ms_node_config *cfg, const char *key, const char *value, char *why,
		       size_t why_len);
/*
 * Parses a config file's text (source names it in messages). 0, or -EINVAL
 * with why = "FILE:LINE: reason". Pure: no I/O.
 */
int ms_node_config_parse_text(struct ms_node_config *cfg, const char *text, const char *source,
			      char *why, size_t why_len);
/*
 * The whole load: defaults, then the file (--config/MEMSNAP_CONFIG, else the
 * default path, which may be missing), then MEMSNAP_* variables, then argv.
 * Returns 0; 1 when --help or --version was handled (printed); 2 on a usage or
 * configuration error (printed on stderr).
 */
int ms_node_config_load(struct ms_node_config *cfg, int argc, char **argv);
/* --help: every option with its default, its variable and its meaning. */
void ms_node_config_usage(FILE *out);
/* The effective configuration as `key = value` lines (the token is masked). */
void ms_node_config_dump(const struct ms_node_config *cfg, FILE *out);

#endif
