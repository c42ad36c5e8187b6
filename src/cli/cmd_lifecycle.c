/*
 * cmd_lifecycle.c - "memsnap build ls|rm": the builds a node and its store
 * know of, and deleting one (memsnapd refuses while anything needs it).
 */
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIFECYCLE_HELP                                                                             \
	"  --socket PATH   the daemon's unix socket (default $MEMSNAP_SOCKET, else\n"              \
	"                  /run/memsnap/memsnapd.sock)\n"                                          \
	"  --url URL       http://127.0.0.1:PORT instead (token from $MEMSNAP_TOKEN)\n"            \
	"  --json          print the daemon's JSON answer\n"                                       \
	"exit: 0 ok, 1 failed, 2 usage, 3 not found, 4 still needed, 5 daemon unreachable,\n"      \
	"      6 unauthorized\n"

static const char *const ls_usage =
    "usage: memsnap build ls [options]\n\n"
    "The builds in the store and in this node's cache: id, parent, status, bytes in the\n"
    "store, age.\n" LIFECYCLE_HELP;
static const char *const rm_usage =
    "usage: memsnap build rm ID [options]\n\n"
    "Deletes a build from this node and the store: its header first, then its data,\n"
    "snapfile and metadata. Refused while a sandbox, a cached build or a build in the\n"
    "store still needs it.\n" LIFECYCLE_HELP;

static const char *ms_lc_str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsString(v) ? v->valuestring : "-";
}

static void ms_print_builds(const cJSON *answer, const void *id)
{
	(void)id;
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(answer, "builds");
	printf("%-36s  %-36s  %-14s %12s %9s  %s\n", "build", "parent", "status", "bytes", "age",
	       "cached");
	const cJSON *b;
	unsigned n = 0;
	cJSON_ArrayForEach(b, list)
	{
		const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(b, "bytes");
		const cJSON *age = cJSON_GetObjectItemCaseSensitive(b, "age_s");
		char age_text[24] = "-";
		if (cJSON_IsNumber(age)) {
			double s = age->valuedouble;
			if (s < 120)
				snprintf(age_text, sizeof(age_text), "%.0fs", s);
			else if (s < 7200)
				snprintf(age_text, sizeof(age_text), "%.0fm", s / 60);
			else if (s < 172800)
				snprintf(age_text, sizeof(age_text), "%.1fh", s / 3600);
			else
				snprintf(age_text, sizeof(age_text), "%.1fd", s / 86400);
		}
		printf("%-36s  %-36s  %-14s %12.0f %9s  %s\n", ms_lc_str(b, "build_id"),
		       ms_lc_str(b, "parent_build_id"), ms_lc_str(b, "status"),
		       cJSON_IsNumber(bytes) ? bytes->valuedouble : 0, age_text,
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "cached")) ? "yes" : "no");
		n++;
	}
	const cJSON *total = cJSON_GetObjectItemCaseSensitive(answer, "store_bytes");
	printf("%u builds; the store holds %.0f bytes\n", n,
	       cJSON_IsNumber(total) ? total->valuedouble : 0);
}

static void ms_print_deleted(const cJSON *answer, const void *id)
{
	const cJSON *objects = cJSON_GetObjectItemCaseSensitive(answer, "objects");
	const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(answer, "bytes");
	printf("deleted build %s (%.0f objects, %.0f bytes)\n", (const char *)id,
	       cJSON_IsNumber(objects) ? objects->valuedouble : 0,
	       cJSON_IsNumber(bytes) ? bytes->valuedouble : 0);
}

int ms_cli_build_ls(int argc, char **argv)
{
	return ms_client_build_command(argc, argv, ls_usage, "GET", false, "", ms_print_builds);
}

int ms_cli_build_rm(int argc, char **argv)
{
	return ms_client_build_command(argc, argv, rm_usage, "DELETE", true, "", ms_print_deleted);
}
