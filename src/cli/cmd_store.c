/*
 * cmd_store.c - "memsnap store gc": removes what no build needs from a store.
 *
 * The catalog (build/catalog.h) decides: objects of builds that no header
 * reaches, that no live uploads/ or peers/ lease names, and that are older
 * than --older-than; and leases that expired or do not parse. A published
 * build, any build a header maps pages to (every ancestor of a live build),
 * an upload under way and a build whose header does not parse are never
 * touched. Headers go before data (catalog.h, invariant 2). --dry-run prints
 * the same table and removes nothing.
 */
#include "build/catalog.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "storage/lease.h"
#include "util/clock.h"
#include "util/err.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char *const gc_usage =
    "usage: memsnap store gc --store URI [--dry-run] [--older-than D] [--endpoint URL]\n"
    "\n"
    "Removes the objects no build needs: data and snapfiles of builds that no header\n"
    "reaches (a pause that failed, a node that died before its header), older than D,\n"
    "and leases (uploads/, peers/) that expired or do not parse, and the leftovers of puts\n"
    "a writer died in (file store temporary files, S3 incomplete multipart uploads) older\n"
    "than D. Never a published build,\n"
    "an ancestor any header maps to, an upload under a live lease, or a build whose header\n"
    "does not parse. Prints a table of what it removed (or would, with --dry-run).\n"
    "\n"
    "options:\n"
    "  --store URI       file:///dir or s3://bucket/prefix (required)\n"
    "  --endpoint URL    S3 endpoint (default $MEMSNAP_S3_ENDPOINT)\n"
    "  --older-than D    keep leftovers younger than D (default 24h; 30m, 6h, 7d ...)\n"
    "  --dry-run         print what would go, remove nothing\n"
    "  -h, --help        this help\n";

static void ms_gc_print(const struct ms_gc_plan *plan, bool dry_run)
{
	printf("%-64s %12s  %s\n", dry_run ? "would remove" : "removed", "bytes", "why");
	for (size_t i = 0; i < plan->count; i++)
		printf("%-64s %12llu  %s\n", plan->items[i].key,
		       (unsigned long long)plan->items[i].bytes, plan->items[i].why);
	printf("%-64s %12llu  %zu objects\n", "total", (unsigned long long)plan->bytes,
	       plan->count);
}

int ms_cli_store_gc(int argc, char **argv)
{
	if (ms_cli_wants_help(argc, argv)) {
		fputs(gc_usage, stdout);
		return 0;
	}
	const char *uri = NULL, *endpoint = NULL;
	bool dry_run = false;
	int64_t older_than_ns = 24 * 3600 * MS_NSEC_PER_SEC;
	static const struct option opts[] = {MS_CLI_STORE_OPTIONS,
					     {"older-than", required_argument, NULL, 'o'},
					     {"dry-run", no_argument, NULL, 'n'},
					     {NULL, 0, NULL, 0}};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'o':
			if (ms_duration_parse(optarg, &older_than_ns)) {
				fprintf(stderr,
					"memsnap: --older-than '%s' is not a duration (like "
					"30m, 6h, 7d)\n",
					optarg);
				return 2;
			}
			break;
		case 'n':
			dry_run = true;
			break;
		default:
			if (ms_cli_store_option(ch, optarg, &uri, &endpoint))
				break;
			fputs(gc_usage, stderr);
			return 2;
		}
	}
	if (optind != argc || !uri) {
		fputs(gc_usage, stderr);
		return 2;
	}
	int err;
	struct ms_store *store = ms_cli_store_open(uri, endpoint, &err);
	if (!store)
		return ms_cli_fail(uri, err);
	int64_t now_ms = ms_lease_now_ms();
	struct ms_catalog *catalog = NULL;
	struct ms_gc_plan plan = {0};
	size_t removed = 0;
	fprintf(stderr, "gc: reading %s ...\n", uri);
	if ((err = ms_catalog_load(store, now_ms, &catalog)) ||
	    (err = ms_catalog_gc_plan(catalog, now_ms, older_than_ns / MS_NSEC_PER_MSEC, &plan)))
		goto out;
	fprintf(stderr,
		"gc: %zu builds (%llu bytes), %zu leases; kept: %u leftovers younger than the "
		"limit, %u under a live lease, %u with a header that does not parse\n",
		catalog->count, (unsigned long long)catalog->total_bytes, catalog->nleases,
		plan.kept_young, plan.kept_leased, plan.kept_broken);
	if (!dry_run && (err = ms_gc_plan_run(store, &plan, &removed)))
		goto out;
	ms_gc_print(&plan, dry_run);
	size_t incomplete = 0;
	if ((err = ms_store_remove_incomplete(store, "", older_than_ns / MS_NSEC_PER_MSEC, dry_run,
					      &incomplete)))
		goto out;
	printf("%-64s %12s  %zu unfinished puts older than the limit\n",
	       dry_run ? "would remove" : "removed", "", incomplete);
out:
	if (err && removed)
		fprintf(stderr, "gc: stopped after removing %zu objects\n", removed);
	ms_gc_plan_fini(&plan);
	ms_catalog_free(catalog);
	ms_store_free(store);
	return err ? ms_cli_fail("store gc", err) : 0;
}
