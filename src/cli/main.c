/* main.c - memsnap's entry point: dispatches "memsnap GROUP VERB ..." to the command table. */
#include "cli/cli.h"
#include "memsnap/memsnap.h"
#include "snapshot/pause.h"
#include "storage/s3.h"
#include "storage/store.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

bool ms_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

int ms_cli_fail(const char *what, int err)
{
	fprintf(stderr, "memsnap: %s: %s\n", what, ms_strerror(err));
	return 1;
}

static const char *ms_cli_getenv(const char *name)
{
	return getenv(name);
}

struct ms_store *ms_cli_store_open(const char *uri, const char *endpoint, int *err)
{
	struct ms_s3_env env;
	struct ms_s3_config s3 = {.endpoint = endpoint};
	ms_s3_env_read(&env, ms_cli_getenv);
	ms_s3_env_apply(&env, &s3);
	struct ms_store *store = ms_store_open(uri, &s3, err);
	memset(&env, 0, sizeof(env)); /* the secret key */
	return store;
}

bool ms_cli_store_option(int ch, const char *arg, const char **uri, const char **endpoint)
{
	if (ch == MS_CLI_OPT_STORE)
		*uri = arg;
	else if (ch == MS_CLI_OPT_ENDPOINT)
		*endpoint = arg;
	return ch == MS_CLI_OPT_STORE || ch == MS_CLI_OPT_ENDPOINT;
}

const char *ms_cli_upload_holder(void)
{
	static char holder[64];
	if (!holder[0]) {
		char host[32] = "?";
		gethostname(host, sizeof(host) - 1);
		snprintf(holder, sizeof(holder), "memsnap pid %ld on %s", (long)getpid(), host);
	}
	return holder;
}

void ms_cli_pause_free(struct ms_pause *pause, struct ms_future *gate)
{
	if (pause && gate)
		ms_future_set(gate, NULL);
	ms_pause_free(pause);
	if (gate)
		ms_future_unref(gate);
}

static void ms_cli_usage(FILE *out)
{
	fprintf(out, "usage: memsnap COMMAND [options]   (memsnap COMMAND --help for details)\n\n"
		     "commands:\n");
	for (const struct ms_cli_command *c = ms_cli_commands; c->group; c++) {
		char name[64];
		snprintf(name, sizeof(name), "%s%s%s", c->group, c->verb ? " " : "",
			 c->verb ? c->verb : "");
		fprintf(out, "  %-22s %s\n", name, c->summary);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		ms_cli_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("memsnap %s\n", MEMSNAP_VERSION);
		return 0;
	}
	enum ms_log_level level; /* the library reads no environment: MEMSNAP_LOG is ours */
	const char *log_env = getenv("MEMSNAP_LOG");
	if (log_env && !ms_log_parse_level(log_env, &level))
		ms_log_set_level(level);
	bool group_known = false;
	for (const struct ms_cli_command *c = ms_cli_commands; c->group; c++) {
		if (strcmp(c->group, argv[1]) != 0)
			continue;
		group_known = true;
		if (!c->verb) {
			char name[64];
			snprintf(name, sizeof(name), "%s", c->group);
			argv[1] = name;
			return c->run(argc - 1, argv + 1);
		}
		if (argc >= 3 && strcmp(c->verb, argv[2]) == 0) {
			char name[64];
			snprintf(name, sizeof(name), "%s %s", c->group, c->verb);
			argv[2] = name;
			return c->run(argc - 2, argv + 2);
		}
	}
	if (group_known && argc >= 3 && strcmp(argv[2], "--help") != 0 &&
	    strcmp(argv[2], "-h") != 0)
		fprintf(stderr, "memsnap: unknown command '%s %s'\n\n", argv[1], argv[2]);
	else if (!group_known)
		fprintf(stderr, "memsnap: unknown command '%s'\n\n", argv[1]);
	ms_cli_usage(group_known && argc >= 3 &&
			     (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)
			 ? stdout
			 : stderr);
	return 2;
}
