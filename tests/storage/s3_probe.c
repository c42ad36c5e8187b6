/*
 * s3_probe.c - one round of S3 calls with the credentials the environment hands in, for
 * test_s3_sts.sh: the bucket (made or found), put, size, read back, remove one object. Exit 0 when
 * all worked, 1 (with the error) when one failed, 2 for a usage error. s3_probe config ENDPOINT
 * BUCKET   keys from PROBE_ACCESS_KEY, PROBE_SECRET_KEY and PROBE_SESSION_TOKEN, through struct
 * ms_s3_config s3_probe uri ENDPOINT BUCKET      ms_store_open("s3://BUCKET/probe"): the AWS_*
 * variables
 */
#include "storage/s3.h"
#include "storage/store.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *ms_probe_getenv(const char *name)
{
	return getenv(name);
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "config") && strcmp(argv[1], "uri"))) {
		fprintf(stderr, "usage: s3_probe config|uri ENDPOINT BUCKET\n");
		return 2;
	}
	int err;
	struct ms_store *store;
	if (!strcmp(argv[1], "config")) {
		struct ms_s3_config config = {
		    .endpoint = argv[2],
		    .bucket = argv[3],
		    .prefix = "probe",
		    .access_key = getenv("PROBE_ACCESS_KEY"),
		    .secret_key = getenv("PROBE_SECRET_KEY"),
		    .session_token = getenv("PROBE_SESSION_TOKEN"),
		    .max_attempts = 1,
		};
		store = ms_store_s3_new(&config, &err);
	} else {
		char uri[256];
		snprintf(uri, sizeof(uri), "s3://%s/probe", argv[3]);
		struct ms_s3_env env; /* what the CLI and memsnapd do (ms_s3_env_read) */
		struct ms_s3_config config = {.endpoint = argv[2], .max_attempts = 1};
		ms_s3_env_read(&env, ms_probe_getenv);
		ms_s3_env_apply(&env, &config);
		store = ms_store_open(uri, &config, &err);
	}
	if (!store) {
		fprintf(stderr, "s3_probe: open: %s\n", ms_strerror(err));
		return 1;
	}
	/* the bucket: made (or found ours) with the same credentials */
	if ((err = ms_store_s3_create_bucket(store))) {
		fprintf(stderr, "s3_probe: bucket: %s\n", ms_strerror(err));
		ms_store_free(store);
		return 1;
	}
	char key[64], data[1024], back[1024];
	snprintf(key, sizeof(key), "obj-%d", (int)getpid());
	memset(data, 0x5a, sizeof(data));
	uint64_t size = 0;
	size_t got = 0;
	const char *step = "put";
	if (!(err = ms_store_put_buf(store, key, data, sizeof(data), NULL))) {
		step = "size";
		if (!(err = ms_store_size(store, key, &size)) && size != sizeof(data))
			err = MS_ECORRUPT;
	}
	if (!err) {
		step = "read";
		if (!(err = ms_store_read_range(store, key, 0, back, sizeof(back), &got)) &&
		    (got != sizeof(back) || memcmp(back, data, sizeof(data))))
			err = MS_ECORRUPT;
	}
	if (!err) {
		step = "remove";
		err = ms_store_remove(store, key);
	}
	ms_store_free(store);
	if (err) {
		fprintf(stderr, "s3_probe: %s: %s\n", step, ms_strerror(err));
		return 1;
	}
	printf("s3_probe: put, size, read, remove: ok\n");
	return 0;
}
