/*
 * cmd_build.c - "memsnap build show|metadata ID": a build's state, sizes and
 * dedup figures, and its scheduling metadata, from memsnapd; "memsnap build
 * verify ID --store URI": every object of a build and its ancestors checked
 * against their checksum tables, straight from the store.
 */
#include "build/storage.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "util/err.h"

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

static void ms_build_print_show(const cJSON *b, const void *id)
{
	(void)id;
	ms_print_object(b, 0);
}

static void ms_build_print_metadata(const cJSON *m, const void *id_arg)
{
	(void)id_arg;
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
	return ms_client_build_command(argc, argv, show_usage, "GET", true, "",
				       ms_build_print_show);
}

int ms_cli_build_metadata(int argc, char **argv)
{
	return ms_client_build_command(argc, argv, metadata_usage, "GET", true,
				       "/scheduling-metadata", ms_build_print_metadata);
}

static const char *const verify_usage =
    "usage: memsnap build verify ID --store URI [--endpoint URL]\n\n"
    "Reads every object of build ID and of every build its header maps (its ancestors)\n"
    "from the store and checks each block against the build's checksum table.\n"
    "Prints one row per object: build, object, bytes, checksum ok|bad|none|missing\n"
    "(none: the object is not in a table, e.g. a build written before checksums).\n\n"
    "  --store URI      file:///path or s3://bucket/prefix\n"
    "  --endpoint URL   S3 endpoint (default: $MEMSNAP_S3_ENDPOINT, $AWS_ENDPOINT_URL)\n"
    "exit: 0 every object ok or none, 1 an object bad or missing (or the store failed),\n"
    "      2 usage, 3 no such build\n";

struct ms_verify_print {
	unsigned rows, bad;
};

static void ms_verify_print_row(const struct ms_verify_row *row, void *ctx)
{
	struct ms_verify_print *p = ctx;
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&row->build_id, id);
	if (p->rows++ == 0)
		printf("%-36s  %-20s %14s  %s\n", "BUILD", "OBJECT", "BYTES", "CHECKSUM");
	printf("%-36s  %-20s %14llu  %s", id, row->name, (unsigned long long)row->bytes,
	       ms_verify_status_name(row->status));
	if (row->status == MS_VERIFY_BAD && row->err)
		printf(" (%s)", ms_strerror(row->err));
	else if (row->status == MS_VERIFY_BAD)
		printf(" (at byte %llu)", (unsigned long long)row->bad_offset);
	printf("\n");
	p->bad += row->status == MS_VERIFY_BAD || row->status == MS_VERIFY_MISSING;
}

int ms_cli_build_verify(int argc, char **argv)
{
	if (ms_cli_wants_help(argc, argv)) {
		fputs(verify_usage, stdout);
		return 0;
	}
	/* ID and two "--name value" (or "--name=value") options, in any order */
	const char *store_uri = NULL, *endpoint = NULL, *build = NULL;
	for (int i = 1; i < argc; i++) {
		const char **slot = strcmp(argv[i], "--store") == 0	 ? &store_uri
				    : strcmp(argv[i], "--endpoint") == 0 ? &endpoint
									 : NULL;
		if (!strncmp(argv[i], "--store=", 8))
			store_uri = argv[i] + 8;
		else if (!strncmp(argv[i], "--endpoint=", 11))
			endpoint = argv[i] + 11;
		else if (slot && i + 1 < argc)
			*slot = argv[++i];
		else if (!slot && argv[i][0] != '-' && !build)
			build = argv[i];
		else {
			fputs(verify_usage, stderr);
			return MS_EXIT_USAGE;
		}
	}
	ms_uuid id;
	if (!build || !store_uri || ms_uuid_parse(build, &id)) {
		fputs(verify_usage, stderr);
		return MS_EXIT_USAGE;
	}
	int err;
	struct ms_store *store = ms_cli_store_open(store_uri, endpoint, &err);
	if (!store)
		return ms_cli_fail(store_uri, err);
	struct ms_verify_print p = {0};
	err = ms_build_storage_verify(store, &id, ms_verify_print_row, &p);
	ms_store_free(store);
	if (err == MS_ENOTFOUND && p.rows == 0) {
		fprintf(stderr, "memsnap: build %s: not in the store\n", build);
		return MS_EXIT_NOT_FOUND;
	}
	if (err == MS_ECHECKSUM || p.bad) {
		fprintf(stderr, "memsnap: build %s: %u object%s bad or missing\n", build, p.bad,
			p.bad == 1 ? "" : "s");
		return MS_EXIT_FAILED;
	}
	if (err)
		return ms_cli_fail("build verify", err);
	return MS_EXIT_OK;
}
