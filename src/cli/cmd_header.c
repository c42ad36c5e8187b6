/*
 * cmd_header.c - "memsnap header inspect|validate": read a header from a file or
 * an object store and print it as a table or JSON, or check it.
 */
#include "cli/cli.h"
#include "cli/commands.h"
#include "header/serialize.h"
#include "storage/store.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_CLI_HEADER_MAX (512u << 20)

static const char *const header_usage =
    "usage: memsnap header %s [options] SOURCE\n"
    "\n"
    "SOURCE is a header file, or an object in a store:\n"
    "  /path/memfile.header | file:///path/memfile.header\n"
    "  file:///store/root --build ID | s3://bucket/prefix --build ID [--endpoint URL]\n"
    "  s3://bucket/prefix/BUILD_ID/memfile.header [--endpoint URL]\n"
    "\n"
    "options:\n"
    "  --build ID        read BUILD_ID/<file>.header from the store SOURCE\n"
    "  --file NAME       memfile (default) or rootfs.ext4\n"
    "  --endpoint URL    S3 endpoint (default: $MEMSNAP_S3_ENDPOINT, $AWS_ENDPOINT_URL)\n"
    "%s"
    "  -h, --help        this help\n";

/* Reads the header bytes named by source (+ --build/--file/--endpoint). */
static int ms_cli_load_header(const char *source, const char *build, const char *file,
			      const char *endpoint, struct ms_header **out)
{
	void *buf = NULL;
	size_t len = 0;
	int err;
	char key[MS_STORE_KEY_MAX + 1];
	char root[4096];
	bool is_uri = strstr(source, "://") != NULL;
	if (!build && !is_uri) {
		FILE *f = fopen(source, "rb");
		if (!f)
			return -errno;
		buf = malloc(MS_CLI_HEADER_MAX);
		if (!buf) {
			fclose(f);
			return -ENOMEM;
		}
		len = fread(buf, 1, MS_CLI_HEADER_MAX, f);
		err = ferror(f) ? -EIO : (len == MS_CLI_HEADER_MAX ? MS_ETOOBIG : 0);
		fclose(f);
	} else {
		if (strlen(source) >= sizeof(root))
			return -ENAMETOOLONG;
		strcpy(root, source);
		if (build) {
			ms_uuid id;
			if (ms_uuid_parse(build, &id))
				return -EINVAL;
			snprintf(key, sizeof(key), "%s/%s.header", build, file);
		} else {
			/* ".../BUILD_ID/NAME.header": the last two components are the key */
			char *last = strrchr(root, '/');
			char *prev = NULL;
			if (last && last > root) {
				*last = '\0';
				prev = strrchr(root, '/');
				*last = '/';
			}
			if (!prev || !strstr(last, ".header") || prev[-1] == '/')
				return -EINVAL;
			snprintf(key, sizeof(key), "%s", prev + 1);
			*prev = '\0';
		}
		struct ms_store *store = ms_cli_store_open(root, endpoint, &err);
		if (!store)
			return err;
		err = ms_store_read_all(store, key, MS_CLI_HEADER_MAX, &buf, &len);
		ms_store_free(store);
	}
	if (!err)
		err = ms_header_deserialize(buf, len, out);
	free(buf);
	return err;
}

static void ms_cli_print_table(const struct ms_header *h)
{
	char id[MS_UUID_STR_LEN], base[MS_UUID_STR_LEN];
	ms_uuid_format(&h->meta.build_id, id);
	ms_uuid_format(&h->meta.base_build_id, base);
	printf("version      %llu\nblock_size   %llu\nsize         %llu\ngeneration   %llu\n"
	       "build_id     %s\nbase_build   %s\nincomplete   %s\n\n",
	       (unsigned long long)h->meta.version, (unsigned long long)h->meta.block_size,
	       (unsigned long long)h->meta.size, (unsigned long long)h->meta.generation, id, base,
	       h->incomplete ? "yes" : "no");
	printf("%-16s %-14s %-36s %s\n", "OFFSET", "LENGTH", "BUILD", "STORAGE_OFFSET");
	for (size_t i = 0; i < h->mappings.count; i++) {
		const struct ms_mapping *e = &h->mappings.entries[i];
		ms_uuid_format(&e->build_id, id);
		printf("%-16llu %-14llu %-36s %llu\n", (unsigned long long)e->offset,
		       (unsigned long long)e->length, ms_uuid_is_nil(&e->build_id) ? "nil" : id,
		       (unsigned long long)e->storage_offset);
	}
	printf("\n%-36s %-14s %-12s %-6s %s\n", "BUILD", "SIZE", "COMPRESSION", "FRAMES",
	       "MAPPED_BYTES");
	for (size_t i = 0; i < h->build_count; i++) {
		const struct ms_build_data *b = &h->builds[i];
		ms_uuid_format(&b->build_id, id);
		printf("%-36s %-14lld %-12s %-6u %llu\n", id, (long long)b->size,
		       ms_compression_name(b->frames ? b->frames->type : MS_COMPRESS_NONE),
		       b->frames ? b->frames->count : 0,
		       (unsigned long long)ms_mappings_bytes_of(&h->mappings, &b->build_id));
	}
}

static void ms_cli_print_json(const struct ms_header *h)
{
	char id[MS_UUID_STR_LEN], hex[65];
	cJSON *root = cJSON_CreateObject();
	cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
	cJSON_AddNumberToObject(meta, "version", (double)h->meta.version);
	cJSON_AddNumberToObject(meta, "block_size", (double)h->meta.block_size);
	cJSON_AddNumberToObject(meta, "size", (double)h->meta.size);
	cJSON_AddNumberToObject(meta, "generation", (double)h->meta.generation);
	ms_uuid_format(&h->meta.build_id, id);
	cJSON_AddStringToObject(meta, "build_id", id);
	ms_uuid_format(&h->meta.base_build_id, id);
	cJSON_AddStringToObject(meta, "base_build_id", id);
	cJSON_AddBoolToObject(root, "incomplete", h->incomplete);
	cJSON *maps = cJSON_AddArrayToObject(root, "mappings");
	for (size_t i = 0; i < h->mappings.count; i++) {
		const struct ms_mapping *e = &h->mappings.entries[i];
		cJSON *m = cJSON_CreateObject();
		cJSON_AddNumberToObject(m, "offset", (double)e->offset);
		cJSON_AddNumberToObject(m, "length", (double)e->length);
		ms_uuid_format(&e->build_id, id);
		cJSON_AddStringToObject(m, "build_id", id);
		cJSON_AddNumberToObject(m, "storage_offset", (double)e->storage_offset);
		cJSON_AddItemToArray(maps, m);
	}
	cJSON *builds = cJSON_AddArrayToObject(root, "builds");
	for (size_t i = 0; i < h->build_count; i++) {
		const struct ms_build_data *b = &h->builds[i];
		cJSON *o = cJSON_CreateObject();
		ms_uuid_format(&b->build_id, id);
		cJSON_AddStringToObject(o, "build_id", id);
		cJSON_AddNumberToObject(o, "size", (double)b->size);
		for (int k = 0; k < 32; k++)
			snprintf(hex + 2 * k, 3, "%02x", b->checksum[k]);
		cJSON_AddStringToObject(o, "checksum", hex);
		cJSON_AddStringToObject(
		    o, "compression",
		    ms_compression_name(b->frames ? b->frames->type : MS_COMPRESS_NONE));
		cJSON *frames = cJSON_AddArrayToObject(o, "frames");
		for (uint32_t f = 0; b->frames && f < b->frames->count; f++) {
			const struct ms_frame *fr = &b->frames->frames[f];
			cJSON *x = cJSON_CreateObject();
			cJSON_AddNumberToObject(x, "start_u", (double)fr->start_u);
			cJSON_AddNumberToObject(x, "start_c", (double)fr->start_c);
			cJSON_AddNumberToObject(x, "size_u", fr->size_u);
			cJSON_AddNumberToObject(x, "size_c", fr->size_c);
			cJSON_AddItemToArray(frames, x);
		}
		cJSON_AddItemToArray(builds, o);
	}
	char *text = cJSON_Print(root);
	if (text)
		puts(text);
	free(text);
	cJSON_Delete(root);
}

static int ms_cli_header(int argc, char **argv, bool inspect)
{
	const char *verb = inspect ? "inspect" : "validate";
	const char *extra =
	    inspect ? "  --json            one JSON object instead of tables\n" : "";
	static const struct option opts[] = {
	    {"build", required_argument, NULL, 'b'},	{"file", required_argument, NULL, 'f'},
	    {"endpoint", required_argument, NULL, 'e'}, {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},		{NULL, 0, NULL, 0},
	};
	const char *build = NULL, *file = "memfile", *endpoint = NULL;
	bool json = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			build = optarg;
			break;
		case 'f':
			file = optarg;
			break;
		case 'e':
			endpoint = optarg;
			break;
		case 'j':
			if (!inspect)
				goto usage;
			json = true;
			break;
		case 'h':
			printf(header_usage, verb, extra);
			return 0;
		default:
			goto usage;
		}
	}
	if (optind != argc - 1)
		goto usage;
	if (strcmp(file, "memfile") != 0 && strcmp(file, "rootfs.ext4") != 0) {
		fprintf(stderr, "memsnap: --file must be memfile or rootfs.ext4\n");
		return 2;
	}
	struct ms_header *h = NULL;
	int err = ms_cli_load_header(argv[optind], build, file, endpoint, &h);
	if (err) {
		char what[4200];
		snprintf(what, sizeof(what), "%s %s",
			 inspect ? "cannot read header" : "invalid header", argv[optind]);
		return ms_cli_fail(what, err);
	}
	if (!inspect)
		printf("valid: version %llu, %zu mappings, %zu builds, size %llu\n",
		       (unsigned long long)h->meta.version, h->mappings.count, h->build_count,
		       (unsigned long long)h->meta.size);
	else if (json)
		ms_cli_print_json(h);
	else
		ms_cli_print_table(h);
	ms_header_free(h);
	return 0;
usage:
	fprintf(stderr, header_usage, verb, extra);
	return 2;
}

int ms_cli_header_inspect(int argc, char **argv)
{
	return ms_cli_header(argc, argv, true);
}

int ms_cli_header_validate(int argc, char **argv)
{
	return ms_cli_header(argc, argv, false);
}
