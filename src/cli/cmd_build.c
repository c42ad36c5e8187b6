/*
 * cmd_build.c - "memsnap build show|metadata ID": a build's state, sizes and
 * dedup figures, and its scheduling metadata, from memsnapd.
 */
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUILD_CONNECT_HELP                                                                         \
	"  --socket PATH   the daemon's unix socket (default $MEMSNAP_SOCKET, else\n"              \
	"                  /run/memsnap/memsnapd.sock)\n"                                          \
	"  --url URL       http://127.0.0.1:PORT instead (token from $MEMSNAP_TOKEN)\n"            \
	"  --json          print the daemon's JSON answer\n"                                       \
	"exit: 0 ok, 1 failed, 2 usage, 3 not found, 5 daemon unreachable, 6 unauthorized\n"

static const char *const show_usage =
    "usage: memsnap build show ID [options]\n\n"
    "A build's status (deduping, uploading, published, failed), sizes, dedup figures\n"
    "and pause stage timings.\n" BUILD_CONNECT_HELP;
static const char *const metadata_usage =
    "usage: memsnap build metadata ID [options]\n\n"
    "A build's scheduling metadata: the builds its memory reads from and their bytes\n"
    "(never waits for dedup: 'pending' while the durable header is not "
    "there).\n" BUILD_CONNECT_HELP;

static int ms_build_get(int argc, char **argv, const char *usage, const char *suffix,
			void (*print)(const cJSON *))
{
	struct ms_client c;
	ms_client_init(&c);
	argc = ms_client_options(&c, argc, argv);
	if (ms_cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc != 2 || argv[1][0] == '-') {
		fputs(usage, stderr);
		return 2;
	}
	char path[256];
	snprintf(path, sizeof(path), "/v1/builds/%.64s%s", argv[1], suffix);
	long status = 0;
	cJSON *answer = NULL;
	char *raw = NULL;
	if (ms_client_call(&c, "GET", path, NULL, &status, &answer, &raw))
		return MS_EXIT_UNREACHABLE;
	int rc = MS_EXIT_OK;
	if (status >= 300)
		rc = ms_client_fail(status, answer);
	else if (c.json)
		printf("%s\n", raw);
	else if (!answer) {
		fprintf(stderr, "memsnap: the daemon's answer is not JSON\n");
		rc = MS_EXIT_FAILED;
	} else
		print(answer);
	cJSON_Delete(answer);
	free(raw);
	return rc;
}

/* Prints an object's scalar members as "key: value" lines, nested ones indented. */
static void ms_print_object(const cJSON *o, int indent)
{
	const cJSON *f;
	cJSON_ArrayForEach(f, o)
	{
		printf("%*s%-16s", indent, "", f->string ? f->string : "");
		if (cJSON_IsString(f))
			printf(" %s\n", f->valuestring);
		else if (cJSON_IsNumber(f))
			printf(" %.10g\n", f->valuedouble);
		else if (cJSON_IsBool(f))
			printf(" %s\n", cJSON_IsTrue(f) ? "yes" : "no");
		else if (cJSON_IsNull(f))
			printf(" -\n");
		else if (cJSON_IsObject(f)) {
			printf("\n");
			ms_print_object(f, indent + 2);
		} else {
			char *text = cJSON_PrintUnformatted(f);
			printf(" %s\n", text ? text : "?");
			free(text);
		}
	}
}

static void ms_build_print_show(const cJSON *b)
{
	ms_print_object(b, 0);
}

static void ms_build_print_metadata(const cJSON *m)
{
	const cJSON *mem = cJSON_GetObjectItemCaseSensitive(m, "memfile");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "build_id");
	printf("build %s: %s\n", cJSON_IsString(id) ? id->valuestring : "?",
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "pending"))
		   ? "pending (dedup has not produced the durable header yet)"
		   : "durable");
	if (!cJSON_IsObject(mem))
		return;
	const cJSON *base = cJSON_GetObjectItemCaseSensitive(mem, "base_build_id");
	printf("memfile base %s\n", cJSON_IsString(base) ? base->valuestring : "?");
	printf("%-36s  %14s\n", "BUILD", "BYTES");
	const cJSON *ids = cJSON_GetObjectItemCaseSensitive(mem, "build_ids");
	const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(mem, "build_bytes");
	int n = cJSON_GetArraySize(ids);
	for (int i = 0; i < n; i++) {
		const cJSON *a = cJSON_GetArrayItem(ids, i), *b = cJSON_GetArrayItem(bytes, i);
		printf("%-36s  %14.0f\n", cJSON_IsString(a) ? a->valuestring : "?",
		       cJSON_IsNumber(b) ? b->valuedouble : 0);
	}
	const cJSON *dropped = cJSON_GetObjectItemCaseSensitive(mem, "dropped_builds");
	if (cJSON_IsNumber(dropped) && dropped->valuedouble > 0)
		printf("(%.0f more builds dropped)\n", dropped->valuedouble);
}

int ms_cli_build_show(int argc, char **argv)
{
	return ms_build_get(argc, argv, show_usage, "", ms_build_print_show);
}

int ms_cli_build_metadata(int argc, char **argv)
{
	return ms_build_get(argc, argv, metadata_usage, "/scheduling-metadata",
			    ms_build_print_metadata);
}
