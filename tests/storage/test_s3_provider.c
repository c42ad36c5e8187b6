/*
 * test_s3_provider.c - where the s3 backend's key comes from, without a real AWS:
 * fake_aws.py on 127.0.0.1 plays the instance metadata service v2, STS
 * (AssumeRoleWithWebIdentity) and an S3 that records how each request was signed.
 *  - IMDSv2: a session token first, then the role's credentials; S3 calls carry them
 *    (Credential=IM-1, x-amz-security-token IMTOKEN-1, signed); refreshed before expiry.
 *  - web identity: the token file's token and the role go to STS (the file is read again
 *    on each refresh); refreshed before Expiration minus the margin; a failed refresh keeps
 *    the old key until it expires (then -EKEYEXPIRED), is retried after a pause, and a
 *    later good one replaces it.
 *  - eight requests at once when a refresh is due: fewer fetches than requests (one
 *    at a time), every request gets a key (concurrency suite: TSan runs it).
 *  - static: the config's session token is signed and sent; files: a profile of the
 *    shared credentials file with aws_session_token, and the region of a config file's
 *    [profile NAME] (a fallback to [default] never happens for another profile).
 */
#include "ms_test.h"
#include "storage/s3_int.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t fake_pid;
static char fake_url[64];

static int fake_start(void **state)
{
	(void)state;
	const char *root = getenv("MEMSNAP_SOURCE_ROOT");
	char script[512];
	snprintf(script, sizeof(script), "%s/tests/storage/fake_aws.py", root ? root : ".");
	int fds[2];
	if (pipe(fds))
		return -1;
	fake_pid = fork();
	if (fake_pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execlp("python3", "python3", script, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	char port[16] = "";
	size_t got = 0;
	while (got < sizeof(port) - 1 && !strchr(port, '\n')) { /* the whole line */
		ssize_t n = read(fds[0], port + got, sizeof(port) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		port[got] = '\0';
	}
	close(fds[0]);
	if (fake_pid < 0 || !strchr(port, '\n'))
		return -1; /* the set-up failed: every test fails */
	port[strcspn(port, "\n")] = '\0';
	snprintf(fake_url, sizeof(fake_url), "http://127.0.0.1:%s", port);
	return 0;
}

static int fake_stop(void **state)
{
	(void)state;
	if (fake_pid > 0) {
		kill(fake_pid, SIGTERM);
		waitpid(fake_pid, NULL, 0);
	}
	return 0;
}

/* curl-free control of the fake: a tiny exchange through the provider's own HTTP path is
 * not reachable from here, so use the command-line curl (installed with the test deps). */
static cJSON *fake_state(void)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "curl -s %s/control", fake_url);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, p);
	pclose(p);
	buf[n] = '\0';
	cJSON *o = cJSON_Parse(buf);
	assert_non_null(o);
	return o;
}

static int fake_int(const char *name)
{
	cJSON *o = fake_state();
	int v = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, name));
	cJSON_Delete(o);
	return v;
}

static void fake_set(int fail, int expires)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -X POST '%s/control?fail=%d&expires=%d'",
		 fake_url, fail, expires);
	assert_int_equal(system(cmd), 0);
}

/* The last S3 request the fake saw: its key id, token and signed headers (copied). */
static void fake_last_s3(char *key, char *token, char *signed_headers)
{
	cJSON *o = fake_state();
	cJSON *list = cJSON_GetObjectItem(o, "s3");
	cJSON *last = cJSON_GetArrayItem(list, cJSON_GetArraySize(list) - 1);
	assert_non_null(last);
	const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(last, "token"));
	strcpy(key, cJSON_GetStringValue(cJSON_GetObjectItem(last, "key")));
	strcpy(token, t ? t : "");
	strcpy(signed_headers, cJSON_GetStringValue(cJSON_GetObjectItem(last, "signed")));
	cJSON_Delete(o);
}

static struct ms_s3_config fake_s3_config(void)
{
	return (struct ms_s3_config){.endpoint = fake_url, .bucket = "bucket", .max_attempts = 1};
}

static void expect_s3_signed_with(struct ms_store *store, const char *key, const char *token)
{
	uint64_t size = 0;
	assert_int_equal(ms_store_size(store, "obj", &size), 0);
	assert_int_equal(size, 5);
	char k[128], t[256], signed_headers[512];
	fake_last_s3(k, t, signed_headers);
	assert_string_equal(k, key);
	assert_string_equal(t, token);
	if (*token)
		assert_non_null(strstr(signed_headers, "x-amz-security-token"));
	else
		assert_null(strstr(signed_headers, "x-amz-security-token"));
}

static void test_imds(void **state)
{
	(void)state;
	fake_set(0, 3600);
	struct ms_s3_config config = fake_s3_config();
	config.imds = true;
	config.imds_endpoint = fake_url;
	int err;
	int before = fake_int("imds_creds");
	struct ms_store *store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	assert_true(fake_int("imds_tokens") >= 1);
	assert_int_equal(fake_int("imds_unauthorized"), 0);
	char key[32], token[32];
	snprintf(key, sizeof(key), "IM-%d", before + 1);
	snprintf(token, sizeof(token), "IMTOKEN-%d", before + 1);
	expect_s3_signed_with(store, key, token);
	expect_s3_signed_with(store, key, token); /* valid an hour: no second fetch */
	assert_int_equal(fake_int("imds_creds"), before + 1);
	ms_store_free(store);

	/* credentials that expire within the margin are refreshed on the next request */
	fake_set(0, 2);
	config.refresh_margin_ns = 5LL * 1000000000;
	store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	int n = fake_int("imds_creds");
	fake_set(0, 3600);
	snprintf(key, sizeof(key), "IM-%d", n + 1);
	snprintf(token, sizeof(token), "IMTOKEN-%d", n + 1);
	expect_s3_signed_with(store, key, token);
	ms_store_free(store);

	/* no metadata service there: the store does not open */
	config.imds_endpoint = "http://127.0.0.1:9";
	assert_null(ms_store_s3_new(&config, &err));
	assert_int_not_equal(err, 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_web_identity_refresh(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir();
	assert_non_null(dir);
	char token_file[512], sts[96];
	snprintf(token_file, sizeof(token_file), "%s/token", dir);
	snprintf(sts, sizeof(sts), "%s/sts", fake_url);
	write_file(token_file, "jwt-one\n");
	fake_set(0, 6); /* lifetimes in whole seconds (Expiration has no fraction): 5 to 6 s */
	struct ms_s3_config config = fake_s3_config();
	config.web_identity_token_file = token_file;
	config.role_arn = "arn:aws:iam::123456789012:role/memsnap";
	config.sts_endpoint = sts;
	config.refresh_margin_ns = 3LL * 1000000000; /* due 3 s before expiry */
	struct ms_s3_provider p;
	assert_int_equal(ms_s3_provider_init(&p, &config), 0);
	assert_int_equal(p.source, MS_S3_SOURCE_WEB_IDENTITY);
	int n0 = fake_int("sts");
	cJSON *o = fake_state();
	cJSON *tokens = cJSON_GetObjectItem(o, "web_tokens");
	assert_string_equal(
	    cJSON_GetStringValue(cJSON_GetArrayItem(tokens, cJSON_GetArraySize(tokens) - 1)),
	    "jwt-one");
	cJSON *roles = cJSON_GetObjectItem(o, "role_arns");
	assert_string_equal(
	    cJSON_GetStringValue(cJSON_GetArrayItem(roles, cJSON_GetArraySize(roles) - 1)),
	    config.role_arn);
	cJSON_Delete(o);
	struct ms_s3_key key;
	char want[32];
	assert_int_equal(ms_s3_provider_get(&p, &key), 0);
	snprintf(want, sizeof(want), "WI-%d", n0);
	assert_string_equal(key.access_key, want); /* not due yet: the same key, no fetch */
	assert_int_equal(fake_int("sts"), n0);

	/* due (3 s before expiry): refreshed, with the token file read again */
	write_file(token_file, "jwt-two\n");
	usleep(3500 * 1000);
	assert_int_equal(ms_s3_provider_get(&p, &key), 0);
	snprintf(want, sizeof(want), "WI-%d", n0 + 1);
	assert_string_equal(key.access_key, want);
	snprintf(want, sizeof(want), "WITOKEN-%d", n0 + 1);
	assert_string_equal(key.token, want);
	o = fake_state();
	tokens = cJSON_GetObjectItem(o, "web_tokens");
	assert_string_equal(
	    cJSON_GetStringValue(cJSON_GetArrayItem(tokens, cJSON_GetArraySize(tokens) - 1)),
	    "jwt-two");
	cJSON_Delete(o);

	/* STS fails: the refresh is tried, the old key is kept while it is valid */
	fake_set(1, 6);
	size_t asked = 0;
	usleep(3500 * 1000); /* due again, at least 1.5 s before the expiry */
	o = fake_state();
	asked = (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(o, "web_tokens"));
	cJSON_Delete(o);
	assert_int_equal(ms_s3_provider_get(&p, &key), 0);
	snprintf(want, sizeof(want), "WI-%d", n0 + 1);
	assert_string_equal(key.access_key, want);
	o = fake_state();
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "web_tokens")), asked + 1);
	cJSON_Delete(o);
	pthread_mutex_lock(&p.lock);
	assert_int_equal(p.refresh_failures, 1);
	pthread_mutex_unlock(&p.lock);
	/* right after a failure: no new attempt (the pause), still the old key */
	assert_int_equal(ms_s3_provider_get(&p, &key), 0);
	assert_string_equal(key.access_key, want);
	o = fake_state();
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "web_tokens")), asked + 1);
	cJSON_Delete(o);

	/* past the expiry, STS still down: the key is not handed out */
	sleep(3);
	assert_int_equal(ms_s3_provider_get(&p, &key), -EKEYEXPIRED);

	/* STS back: the next request gets a new key */
	fake_set(0, 3600);
	sleep(1);
	assert_int_equal(ms_s3_provider_get(&p, &key), 0);
	snprintf(want, sizeof(want), "WI-%d", n0 + 2);
	assert_string_equal(key.access_key, want);
	ms_s3_provider_fini(&p);

	/* S3 calls signed with the STS key and token */
	struct ms_store *store;
	int err;
	store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	int n = fake_int("sts");
	snprintf(want, sizeof(want), "WI-%d", n);
	char want_token[32];
	snprintf(want_token, sizeof(want_token), "WITOKEN-%d", n);
	expect_s3_signed_with(store, want, want_token);
	ms_store_free(store);

	/* a missing token file: no credentials */
	config.web_identity_token_file = "/nonexistent/token";
	assert_null(ms_store_s3_new(&config, &err));
	free(dir);
}

struct getter {
	struct ms_s3_provider *p;
	pthread_barrier_t *start;
	int err;
	char key[128];
};

static void *getter_run(void *arg)
{
	struct getter *g = arg;
	struct ms_s3_key key;
	pthread_barrier_wait(g->start);
	g->err = ms_s3_provider_get(g->p, &key);
	snprintf(g->key, sizeof(g->key), "%s", key.access_key);
	return NULL;
}

/* Many requests at the moment a refresh is due: one fetch, and every request gets a key. */
static void test_refresh_once_under_load(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir();
	assert_non_null(dir);
	char token_file[512], sts[96];
	snprintf(token_file, sizeof(token_file), "%s/token", dir);
	snprintf(sts, sizeof(sts), "%s/sts", fake_url);
	write_file(token_file, "jwt\n");
	fake_set(0, 10);
	struct ms_s3_config config = fake_s3_config();
	config.web_identity_token_file = token_file;
	config.role_arn = "arn:aws:iam::123456789012:role/memsnap";
	config.sts_endpoint = sts;
	config.refresh_margin_ns = 60LL * 1000000000; /* due at once: 10 s left < 60 s */
	struct ms_s3_provider p;
	assert_int_equal(ms_s3_provider_init(&p, &config), 0);
	int before = fake_int("sts");
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -X POST '%s/control?delay=0.5'", fake_url);
	assert_int_equal(system(cmd), 0); /* a slow STS: the others come while one fetch runs */
	enum { N = 8 };
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, N);
	struct getter g[N];
	pthread_t t[N];
	for (int i = 0; i < N; i++) {
		g[i] = (struct getter){.p = &p, .start = &start};
		assert_int_equal(pthread_create(&t[i], NULL, getter_run, &g[i]), 0);
	}
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&start);
	snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -X POST '%s/control?delay=0'", fake_url);
	assert_int_equal(system(cmd), 0);
	/* one fetch for the eight (each fetched key is good for 10 s, due again at once, but
	 * the others went on with the key they found while the one fetch ran) */
	pthread_mutex_lock(&p.lock);
	uint64_t refreshes = p.refreshes;
	pthread_mutex_unlock(&p.lock);
	assert_true(refreshes >= 1);
	assert_int_equal(fake_int("sts"), before + (int)refreshes);
	assert_true(refreshes < N); /* not one fetch per request */
	for (int i = 0; i < N; i++) {
		assert_int_equal(g[i].err, 0);
		assert_int_equal(strncmp(g[i].key, "WI-", 3), 0);
	}
	ms_s3_provider_fini(&p);
	free(dir);
}

static void test_static_and_files(void **state)
{
	(void)state;
	/* nothing from the environment here */
	static const char *const names[] = {"AWS_ACCESS_KEY_ID",
					    "AWS_SECRET_ACCESS_KEY",
					    "AWS_SESSION_TOKEN",
					    "MEMSNAP_S3_ACCESS_KEY",
					    "MEMSNAP_S3_SECRET_KEY",
					    "AWS_SHARED_CREDENTIALS_FILE",
					    "AWS_PROFILE"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unsetenv(names[i]);
	struct ms_s3_config config = fake_s3_config();
	config.access_key = "AKSTATIC";
	config.secret_key = "secret";
	config.session_token = "STATIC-TOKEN";
	int err;
	struct ms_store *store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	expect_s3_signed_with(store, "AKSTATIC", "STATIC-TOKEN");
	ms_store_free(store);
	config.session_token = NULL;
	store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	expect_s3_signed_with(store, "AKSTATIC", "");
	ms_store_free(store);

	char *dir = ms_test_tmpdir();
	assert_non_null(dir);
	char creds[512], cfg[512];
	snprintf(creds, sizeof(creds), "%s/credentials", dir);
	snprintf(cfg, sizeof(cfg), "%s/config", dir);
	write_file(creds, "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s\n"
			  "[ci]\naws_access_key_id = AKCI\naws_secret_access_key = s\n"
			  "aws_session_token = CI-TOKEN\n");
	write_file(cfg, "[default]\nregion = eu-west-1\n[profile ci]\nregion = ap-south-2\n"
			"[profile keys]\naws_access_key_id = AKCONF\naws_secret_access_key = s\n");
	config = fake_s3_config();
	config.credentials_file = creds;
	config.config_file = cfg;
	config.profile = "ci";
	char *ak, *sk, *token;
	assert_int_equal(ms_s3_credentials(&config, &ak, &sk, &token), 0);
	assert_string_equal(ak, "AKCI");
	assert_string_equal(token, "CI-TOKEN");
	free(ak);
	free(sk);
	free(token);
	char *region = ms_s3_config_region(&config);
	assert_string_equal(region, "ap-south-2");
	free(region);
	store = ms_store_s3_new(&config, &err);
	assert_non_null(store);
	expect_s3_signed_with(store, "AKCI", "CI-TOKEN");
	ms_store_free(store);
	config.profile = NULL;
	region = ms_s3_config_region(&config);
	assert_string_equal(region, "eu-west-1");
	free(region);
	assert_int_equal(ms_s3_credentials(&config, &ak, &sk, &token), 0);
	assert_string_equal(ak, "AKDEFAULT");
	assert_null(token);
	free(ak);
	free(sk);
	/* keys only in the config file's profile */
	config.profile = "keys";
	assert_int_equal(ms_s3_credentials(&config, &ak, &sk, &token), 0);
	assert_string_equal(ak, "AKCONF");
	free(ak);
	free(sk);
	free(token);
	assert_null(ms_s3_config_region(&config)); /* no region there, and no [default] fallback */
	/* a profile nobody has: no static key */
	config.profile = "missing";
	assert_int_equal(ms_s3_credentials(&config, &ak, &sk, &token), -EINVAL);
	assert_null(ms_store_s3_new(&config, &err));
	assert_int_equal(err, -EINVAL);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_static_and_files),
	    cmocka_unit_test(test_imds),
	    cmocka_unit_test(test_web_identity_refresh),
	    cmocka_unit_test(test_refresh_once_under_load),
	};
	return cmocka_run_group_tests(tests, fake_start, fake_stop);
}
