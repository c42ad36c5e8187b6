/*
 * cli.h - the memsnap command line: one table of subcommands.
 *
 * Each subcommand is "memsnap GROUP VERB [options]" with its own --help. A
 * command returns the process exit status: 0 ok, 1 failure (the reason printed
 * on stderr), 2 usage error.
 */
#ifndef MS_CLI_H
#define MS_CLI_H

#include <stdbool.h>

struct ms_cli_command {
	const char *group;
	const char *verb;
	const char *summary;
	int (*run)(int argc, char **argv); /* argv[0] is "GROUP VERB" */
};

/* The command table, terminated by an entry with group == NULL. */
extern const struct ms_cli_command ms_cli_commands[];

/* True when argv holds -h or --help (checked before option parsing). */
bool ms_cli_wants_help(int argc, char **argv);
/* Prints "memsnap: <what>: <ms_strerror(err)>" to stderr; returns 1. */
int ms_cli_fail(const char *what, int err);
/*
 * The store options most commands share: --store URI and --endpoint URL (long options only:
 * their codes are no short option's, so a command keeps every letter).
 */
enum { MS_CLI_OPT_STORE = 0x100, MS_CLI_OPT_ENDPOINT };
#define MS_CLI_STORE_OPTIONS                                                                       \
	{"store", required_argument, NULL, MS_CLI_OPT_STORE},                                      \
	{                                                                                          \
		"endpoint", required_argument, NULL, MS_CLI_OPT_ENDPOINT                           \
	}
/* getopt_long's ch for MS_CLI_STORE_OPTIONS: true when it was one of them (stored). */
bool ms_cli_store_option(int ch, const char *arg, const char **uri, const char **endpoint);
/* "memsnap pid N on HOST": what the CLI's pauses name as their uploads/ lease holder. */
const char *ms_cli_upload_holder(void);

struct ms_store;
/*
 * Opens the store at uri (file:// or s3://) for a command: an s3:// store takes endpoint
 * (NULL: the environment's) and the rest of its settings from the environment, as AWS tools
 * do (ms_s3_env_read). NULL on error with *err set.
 */
struct ms_store *ms_cli_store_open(const char *uri, const char *endpoint, int *err);

struct ms_pause;
struct ms_future;
/*
 * Frees a pause whose compare may be held by gate (both may be NULL): opens the gate first,
 * so the pipeline is never left stalled, then drops the caller's reference to it.
 */
void ms_cli_pause_free(struct ms_pause *pause, struct ms_future *gate);

#endif
