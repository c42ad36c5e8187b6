/*
 * client.c - one HTTP request to memsnapd with libcurl (client.h).
 */
#include "cli/client.h"
#include "cli/cli.h"
#include "util/growbuf.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_CLIENT_MAX_ANSWER (16u << 20)

void ms_client_init(struct ms_client *c)
{
	memset(c, 0, sizeof(*c));
	const char *s = getenv("MEMSNAP_SOCKET");
	c->socket = s && *s ? s : "/run/memsnap/memsnapd.sock";
	const char *t = getenv("MEMSNAP_TOKEN");
	c->token = t && *t ? t : NULL;
}

int ms_client_options(struct ms_client *c, int argc, char **argv)
{
	int out = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			c->json = true;
		} else if ((!strcmp(argv[i], "--socket") || !strcmp(argv[i], "--url")) &&
			   i + 1 < argc) {
			if (argv[i][2] == 's') {
				c->socket = argv[++i];
				c->url = NULL;
			} else {
				c->url = argv[++i];
			}
		} else if (!strncmp(argv[i], "--socket=", 9)) {
			c->socket = argv[i] + 9;
			c->url = NULL;
		} else if (!strncmp(argv[i], "--url=", 6)) {
			c->url = argv[i] + 6;
		} else {
			argv[out++] = argv[i];
		}
	}
	argv[out] = NULL;
	return out;
}

int ms_client_call(const struct ms_client *c, const char *method, const char *path,
		   const char *body, long *status, cJSON **out, char **raw)
{
	static bool inited;
	if (!inited) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		inited = true;
	}
	CURL *curl = curl_easy_init();
	if (!curl) {
		fprintf(stderr, "memsnap: out of memory\n");
		return -1;
	}
	char url[1024], auth[400];
	snprintf(url, sizeof(url), "%s%s", c->url ? c->url : "http://memsnapd", path);
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (c->url && c->token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
		headers = curl_slist_append(headers, auth);
	}
	struct ms_growbuf b = {.cap = MS_CLIENT_MAX_ANSWER};
	curl_easy_setopt(curl, CURLOPT_URL, url);
	if (!c->url)
		curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, c->socket);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, ms_growbuf_curl_write);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	if (body) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
	}
	CURLcode rc = curl_easy_perform(curl);
	int ret = 0;
	if (rc != CURLE_OK) {
		fprintf(stderr, "memsnap: cannot reach memsnapd at %s: %s\n",
			c->url ? c->url : c->socket,
			b.too_big ? "answer too large" : curl_easy_strerror(rc));
		ret = -1;
	} else {
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
		*out = b.data ? cJSON_Parse(b.data) : NULL;
		if (raw) {
			*raw = b.data;
			b.data = NULL;
		}
	}
	free(b.data);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	return ret;
}

int ms_client_fail(long status, const cJSON *answer)
{
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(answer, "message");
	fprintf(stderr, "memsnap: %s (HTTP %ld)\n",
		cJSON_IsString(msg) ? msg->valuestring : "the daemon gave no reason", status);
	switch (status) {
	case 400:
	case 405:
	case 413:
		return MS_EXIT_USAGE;
	case 401:
		return MS_EXIT_UNAUTHORIZED;
	case 404:
		return MS_EXIT_NOT_FOUND;
	case 409:
	case 429:
		return MS_EXIT_CONFLICT;
	case 503:
		return MS_EXIT_UNREACHABLE;
	default:
		return MS_EXIT_FAILED;
	}
}

int ms_client_run(const struct ms_client *c, const char *method, const char *path,
		  void (*print)(const cJSON *answer, const void *ctx), const void *ctx)
{
	long status = 0;
	cJSON *answer = NULL;
	char *raw = NULL;
	if (ms_client_call(c, method, path, NULL, &status, &answer, &raw))
		return MS_EXIT_UNREACHABLE;
	int rc = MS_EXIT_OK;
	if (status >= 300)
		rc = ms_client_fail(status, answer);
	else if (c->json)
		printf("%s\n", raw);
	else if (!answer) {
		fprintf(stderr, "memsnap: the daemon's answer is not JSON\n");
		rc = MS_EXIT_FAILED;
	} else
		print(answer, ctx);
	cJSON_Delete(answer);
	free(raw);
	return rc;
}

int ms_client_build_command(int argc, char **argv, const char *usage, const char *method,
			    bool with_id, const char *suffix,
			    void (*print)(const cJSON *answer, const void *id))
{
	struct ms_client c;
	ms_client_init(&c);
	argc = ms_client_options(&c, argc, argv);
	if (ms_cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return MS_EXIT_OK;
	}
	if (argc != (with_id ? 2 : 1) || (with_id && argv[1][0] == '-')) {
		fputs(usage, stderr);
		return MS_EXIT_USAGE;
	}
	const char *id = with_id ? argv[1] : NULL;
	char path[256];
	snprintf(path, sizeof(path), "/v1/builds%s%.64s%s", id ? "/" : "", id ? id : "", suffix);
	return ms_client_run(&c, method, path, print, id);
}
