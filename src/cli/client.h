/*
 * client.h - the command line's side of memsnapd's API: one HTTP request
 * over the daemon's unix socket (libcurl, CURLOPT_UNIX_SOCKET_PATH) or over
 * TCP with a bearer token, and the exit codes scripts can rely on.
 *
 * Where the daemon is: --socket PATH, else MEMSNAP_SOCKET, else
 * /run/memsnap/memsnapd.sock; or --url http://127.0.0.1:PORT (TCP) with the
 * token from MEMSNAP_TOKEN.
 */
#ifndef MS_CLI_CLIENT_H
#define MS_CLI_CLIENT_H

#include <cjson/cJSON.h>
#include <stdbool.h>

/* Exit codes of the daemon's client commands. */
enum ms_client_exit {
	MS_EXIT_OK = 0,
	MS_EXIT_FAILED = 1,	 /* the daemon failed the request (5xx), or a guest check failed */
	MS_EXIT_USAGE = 2,	 /* bad options, or the daemon called the request malformed (400) */
	MS_EXIT_NOT_FOUND = 3,	 /* no such sandbox or build (404) */
	MS_EXIT_CONFLICT = 4,	 /* the sandbox is in another state (409), or too many (429) */
	MS_EXIT_UNREACHABLE = 5, /* no daemon answers, or it is shutting down (503) */
	MS_EXIT_UNAUTHORIZED = 6, /* TCP without a valid token (401) */
};

struct ms_client {
	const char *socket; /* unix socket path, or NULL with url */
	const char *url;    /* "http://127.0.0.1:PORT", or NULL */
	const char *token;  /* bearer token for TCP (MEMSNAP_TOKEN) */
	bool json;	    /* --json: print the daemon's JSON as it is */
};

/* Fills the defaults from the environment. */
void ms_client_init(struct ms_client *c);
/*
 * Sends one request (body may be NULL). On an answer: 0, *status, and *out
 * (the parsed JSON, or NULL when the body is not JSON; *raw gets the text when
 * raw is not NULL). -1 when the daemon could not be reached (printed).
 */
int ms_client_call(const struct ms_client *c, const char *method, const char *path,
		   const char *body, long *status, cJSON **out, char **raw);
/* An error answer: prints "memsnap: <message>" and returns its exit code. */
int ms_client_fail(long status, const cJSON *answer);
/* Parses the shared options (--socket, --url, --json) out of argv in place;
 * returns the remaining argc. */
int ms_client_options(struct ms_client *c, int argc, char **argv);
/*
 * One request whose answer a command prints: an error answer is printed with
 * its exit code (ms_client_fail), --json prints the body as it came, else
 * print(answer, ctx). Returns the command's exit code.
 */
int ms_client_run(const struct ms_client *c, const char *method, const char *path,
		  void (*print)(const cJSON *answer, const void *ctx), const void *ctx);
/*
 * A "memsnap build ..." command over the daemon: parses the shared options, prints usage
 * for --help (exit 0) or a usage error (2), takes exactly one argument ID (with_id) or none,
 * and requests METHOD /v1/builds[/ID]SUFFIX, its answer printed by print(answer, ID or
 * NULL) (ms_client_run). Returns the command's exit code.
 */
int ms_client_build_command(int argc, char **argv, const char *usage, const char *method,
			    bool with_id, const char *suffix,
			    void (*print)(const cJSON *answer, const void *id));

#endif
