/*
 * cmd_sandbox.c - "memsnap sandbox start|pause|resume|ls|rm": memsnapd's
 * sandbox API from the command line. Human output by default, the daemon's
 * JSON with --json, only the id with --quiet; exit codes in client.h.
 */
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/commands.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_HELP                                                                               \
	"  --socket PATH   the daemon's unix socket (default $MEMSNAP_SOCKET, else\n"              \
	"                  /run/memsnap/memsnapd.sock)\n"                                          \
	"  --url URL       http://127.0.0.1:PORT instead (token from $MEMSNAP_TOKEN)\n"            \
	"  --json          print the daemon's JSON answer\n"                                       \
	"  -q, --quiet     print only the id\n"                                                    \
	"exit: 0 ok, 1 failed (or the guest found mismatches), 2 usage, 3 not found,\n"            \
	"      4 wrong state/too many, 5 daemon unreachable or stopping, 6 unauthorized\n"

#define EXEC_HELP                                                                                  \
	"  --exec CMD      then run the guest: fill, verify, zero or a number (the\n"              \
	"                  mailbox command); --arg0 N --arg1 N (pattern: seed, epoch)\n"

struct ms_sb_opts {
	const char *guest, *build, *exec;
	const char *build_id; /* pause: the new build's id, the caller's choice */
	unsigned long long mem, arg0, arg1;
	bool quiet;
	int rest; /* index of the first positional argument */
};

static int ms_sb_parse(int argc, char **argv, struct ms_sb_opts *o, bool create, bool exec,
		       const char *usage)
{
	static const struct option opts[] = {
	    {"guest", required_argument, NULL, 'g'},	{"mem", required_argument, NULL, 'm'},
	    {"build", required_argument, NULL, 'B'},	{"exec", required_argument, NULL, 'x'},
	    {"arg0", required_argument, NULL, '0'},	{"arg1", required_argument, NULL, '1'},
	    {"seed", required_argument, NULL, '0'},	{"epoch", required_argument, NULL, '1'},
	    {"build-id", required_argument, NULL, 'I'}, {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof(*o));
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 'g':
		case 'm':
		case 'B':
			if (!create)
				goto bad;
			if (c == 'g')
				o->guest = optarg;
			else if (c == 'B')
				o->build = optarg;
			else if (!*optarg || (o->mem = strtoull(optarg, &end, 10), *end))
				goto bad;
			break;
		case 'x':
			if (!exec)
				goto bad;
			o->exec = optarg;
			break;
		case '0':
		case '1':
			if (!exec || !*optarg)
				goto bad;
			*(c == '0' ? &o->arg0 : &o->arg1) = strtoull(optarg, &end, 0);
			if (*end)
				goto bad;
			break;
		case 'I':
			if (create || exec) /* pause only: neither create nor resume */
				goto bad;
			o->build_id = optarg;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		default:
			goto bad;
		}
	}
	o->rest = optind;
	return 0;
bad:
	fputs(usage, stderr);
	return 2;
}

/* {"exec": {...}} member, or nothing */
static int ms_sb_add_exec(cJSON *body, const struct ms_sb_opts *o)
{
	if (!o->exec)
		return 0;
	cJSON *x = cJSON_AddObjectToObject(body, "exec");
	if (!x)
		return -1;
	char *end;
	unsigned long long n = strtoull(o->exec, &end, 0);
	if (*o->exec && !*end)
		cJSON_AddNumberToObject(x, "command", (double)n);
	else
		cJSON_AddStringToObject(x, "command", o->exec);
	cJSON_AddNumberToObject(x, "arg0", (double)o->arg0);
	cJSON_AddNumberToObject(x, "arg1", (double)o->arg1);
	return 0;
}

static const char *ms_str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsString(v) ? v->valuestring : "-";
}

static double ms_num(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* The guest's report as the daemon printed it (exact 64-bit integers). */
static unsigned long long ms_report(const cJSON *sb, const char *field, const char *raw)
{
	(void)sb;
	/* cJSON keeps numbers as doubles: read the digits from the raw text instead */
	char key[40];
	snprintf(key, sizeof(key), "\"%s\":", field);
	const char *at = raw ? strstr(raw, "\"report\":") : NULL;
	at = at ? strstr(at, key) : NULL;
	return at ? strtoull(at + strlen(key), NULL, 10) : 0;
}

/* Prints a sandbox answer; returns the exit code (verify mismatches: 1). */
static int ms_sb_print(const struct ms_client *c, const struct ms_sb_opts *o, const cJSON *sb,
		       const char *raw, const char *verb)
{
	bool verify = o && o->exec && !strcmp(o->exec, "verify");
	unsigned long long mismatches = verify ? ms_report(sb, "result0", raw) : 0;
	if (c->json)
		printf("%s\n", raw);
	else if (o && o->quiet)
		printf("%s\n", !strcmp(verb, "paused") ? ms_str(sb, "build_id") : ms_str(sb, "id"));
	else {
		printf("%s sandbox %s: %s, %s guest, %.0f MiB, %s", verb, ms_str(sb, "id"),
		       ms_str(sb, "state"), ms_str(sb, "guest"), ms_num(sb, "mem_mib"),
		       ms_str(sb, "start_type"));
		if (!strcmp(verb, "paused"))
			printf(", build %s in %.2f ms\n", ms_str(sb, "build_id"),
			       ms_num(sb, "pause_ms"));
		else if (strcmp(ms_str(sb, "build_id"), "-"))
			printf(" from build %s in %.1f ms\n", ms_str(sb, "build_id"),
			       ms_num(sb, "create_ms"));
		else
			printf(" in %.1f ms\n", ms_num(sb, "create_ms"));
		if (o && o->exec)
			printf("guest report: result0 %llu, result1 %llu%s\n",
			       ms_report(sb, "result0", raw), ms_report(sb, "result1", raw),
			       verify ? (mismatches ? "  (mismatched pages!)"
						    : "  (verified: no mismatched page)")
				      : "");
	}
	if (verify && mismatches) {
		fprintf(stderr, "memsnap: the guest found %llu mismatched pages\n", mismatches);
		return MS_EXIT_FAILED;
	}
	return MS_EXIT_OK;
}

/* One call; prints the answer through print (or the error); returns the exit code. */
static int ms_sb_call(const struct ms_client *c, const char *method, const char *path, cJSON *body,
		      const struct ms_sb_opts *o, const char *verb)
{
	char *text = body ? cJSON_PrintUnformatted(body) : NULL;
	cJSON_Delete(body);
	long status = 0;
	cJSON *answer = NULL;
	char *raw = NULL;
	if (isatty(STDERR_FILENO) && !c->json && strcmp(method, "GET"))
		fprintf(stderr, "memsnap: %s ...\r", verb);
	int rc = ms_client_call(c, method, path, text, &status, &answer, &raw);
	free(text);
	if (rc) {
		rc = MS_EXIT_UNREACHABLE;
	} else if (status >= 300) {
		if (c->json && raw)
			printf("%s\n", raw);
		rc = ms_client_fail(status, answer);
	} else if (!answer) {
		fprintf(stderr, "memsnap: the daemon's answer is not JSON\n");
		rc = MS_EXIT_FAILED;
	} else {
		rc = ms_sb_print(c, o, answer, raw, verb);
	}
	cJSON_Delete(answer);
	free(raw);
	return rc;
}

static const char *const start_usage =
    "usage: memsnap sandbox start (--guest pattern|counter|mutator [--mem MIB] | --build ID)\n"
    "                             [--exec CMD [--arg0 N] [--arg1 N]] [options]\n\n"
    "Starts a sandbox on the node: a fresh guest (default 64 MiB), or resumed from a\n"
    "build (warm from the node's template cache, else cold from the object store).\n" EXEC_HELP
	CONNECT_HELP;

int ms_cli_sandbox_start(int argc, char **argv)
{
	struct ms_client c;
	ms_client_init(&c);
	argc = ms_client_options(&c, argc, argv);
	struct ms_sb_opts o;
	int rc = ms_sb_parse(argc, argv, &o, true, true, start_usage);
	if (rc)
		return rc == 1 ? 0 : 2;
	if (o.rest != argc || !o.guest == !o.build || (o.build && o.mem)) {
		fputs(start_usage, stderr);
		return 2;
	}
	cJSON *body = cJSON_CreateObject();
	if (!body)
		return 1;
	if (o.guest) {
		cJSON_AddStringToObject(body, "guest", o.guest);
		if (o.mem)
			cJSON_AddNumberToObject(body, "mem_mib", (double)o.mem);
	} else {
		cJSON_AddStringToObject(body, "build_id", o.build);
	}
	ms_sb_add_exec(body, &o);
	return ms_sb_call(&c, "POST", "/v1/sandboxes", body, &o, "started");
}

static const char *const pause_usage =
    "usage: memsnap sandbox pause ID [--build-id UUID] [options]\n\n"
    "Pauses a running sandbox: its memory becomes a new build (printed) as soon as\n"
    "the VM is stopped; dedup and upload go on in the daemon (memsnap build show).\n"
    "  --build-id UUID the new build's id (default: the daemon picks one); refused\n"
    "                  when a build of that id exists\n" CONNECT_HELP;
static const char *const resume_usage =
    "usage: memsnap sandbox resume ID [--exec CMD [--arg0 N] [--arg1 N]] [options]\n\n"
    "Resumes a paused sandbox from its build: warm from the node's template cache,\n"
    "else cold from the object store.\n" EXEC_HELP CONNECT_HELP;
static const char *const rm_usage = "usage: memsnap sandbox rm ID [options]\n\n"
				    "Deletes a sandbox (a running one is stopped). Its builds "
				    "stay.\n" CONNECT_HELP;

/* pause, resume, rm: one id */
static int ms_sb_one(int argc, char **argv, const char *usage, const char *method,
		     const char *suffix, bool exec, const char *verb)
{
	struct ms_client c;
	ms_client_init(&c);
	argc = ms_client_options(&c, argc, argv);
	struct ms_sb_opts o;
	int rc = ms_sb_parse(argc, argv, &o, false, exec, usage);
	if (rc)
		return rc == 1 ? 0 : 2;
	if (o.rest != argc - 1) {
		fputs(usage, stderr);
		return 2;
	}
	char path[256];
	snprintf(path, sizeof(path), "/v1/sandboxes/%.64s%s", argv[o.rest], suffix);
	cJSON *body = NULL;
	if (exec && o.exec) {
		if (!(body = cJSON_CreateObject()))
			return 1;
		ms_sb_add_exec(body, &o);
	}
	if (o.build_id) {
		if (strcmp(verb, "paused")) { /* only pause names its new build */
			fputs(usage, stderr);
			return 2;
		}
		if (!(body = cJSON_CreateObject()))
			return 1;
		cJSON_AddStringToObject(body, "build_id", o.build_id);
	}
	if (!strcmp(method, "DELETE")) {
		long status = 0;
		cJSON *answer = NULL;
		char *raw = NULL;
		if (ms_client_call(&c, method, path, NULL, &status, &answer, &raw))
			return MS_EXIT_UNREACHABLE;
		rc = MS_EXIT_OK;
		if (status >= 300)
			rc = ms_client_fail(status, answer);
		else if (c.json)
			printf("%s\n", raw);
		else if (!o.quiet)
			printf("deleted sandbox %s\n", argv[o.rest]);
		cJSON_Delete(answer);
		free(raw);
		return rc;
	}
	return ms_sb_call(&c, method, path, body, &o, verb);
}

int ms_cli_sandbox_pause(int argc, char **argv)
{
	return ms_sb_one(argc, argv, pause_usage, "POST", "/pause", false, "paused");
}

int ms_cli_sandbox_resume(int argc, char **argv)
{
	return ms_sb_one(argc, argv, resume_usage, "POST", "/resume", true, "resumed");
}

int ms_cli_sandbox_rm(int argc, char **argv)
{
	return ms_sb_one(argc, argv, rm_usage, "DELETE", "", false, "deleted");
}

static const char *const ls_usage =
    "usage: memsnap sandbox ls [ID] [options]\n\n"
    "Lists the node's sandboxes (or one) as a table.\n" CONNECT_HELP;

static void ms_sb_row(const cJSON *sb)
{
	printf("%-36s  %-7s  %-7s  %6.0f  %-5s  %-36s  %9.1f\n", ms_str(sb, "id"),
	       ms_str(sb, "state"), ms_str(sb, "guest"), ms_num(sb, "mem_mib"),
	       ms_str(sb, "start_type"), ms_str(sb, "build_id"), ms_num(sb, "create_ms"));
}

int ms_cli_sandbox_ls(int argc, char **argv)
{
	struct ms_client c;
	ms_client_init(&c);
	argc = ms_client_options(&c, argc, argv);
	struct ms_sb_opts o;
	int rc = ms_sb_parse(argc, argv, &o, false, false, ls_usage);
	if (rc)
		return rc == 1 ? 0 : 2;
	if (o.rest < argc - 1) {
		fputs(ls_usage, stderr);
		return 2;
	}
	char path[256] = "/v1/sandboxes";
	if (o.rest == argc - 1)
		snprintf(path, sizeof(path), "/v1/sandboxes/%.64s", argv[o.rest]);
	long status = 0;
	cJSON *answer = NULL;
	char *raw = NULL;
	if (ms_client_call(&c, "GET", path, NULL, &status, &answer, &raw))
		return MS_EXIT_UNREACHABLE;
	rc = MS_EXIT_OK;
	if (status >= 300) {
		rc = ms_client_fail(status, answer);
	} else if (c.json) {
		printf("%s\n", raw);
	} else if (!answer) {
		fprintf(stderr, "memsnap: the daemon's answer is not JSON\n");
		rc = MS_EXIT_FAILED;
	} else {
		const cJSON *list = cJSON_GetObjectItemCaseSensitive(answer, "sandboxes");
		if (o.quiet) {
			const cJSON *sb;
			if (list)
				cJSON_ArrayForEach(sb, list) printf("%s\n", ms_str(sb, "id"));
			else
				printf("%s\n", ms_str(answer, "id"));
		} else {
			printf("%-36s  %-7s  %-7s  %6s  %-5s  %-36s  %9s\n", "ID", "STATE", "GUEST",
			       "MiB", "START", "BUILD", "CREATE_MS");
			const cJSON *sb;
			if (list)
				cJSON_ArrayForEach(sb, list) ms_sb_row(sb);
			else
				ms_sb_row(answer);
		}
	}
	cJSON_Delete(answer);
	free(raw);
	return rc;
}
