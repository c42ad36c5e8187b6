/*
 * gen_seeds.c - writes the fuzzers' seed corpus into a directory: valid V3/V4/V5
 * headers, handshakes, snapfiles of both backends, and checksum tables.
 */
#include "header/serialize.h"
#include "sandbox/snapfile.h"
#include "storage/checksums.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_seeds DIR\n");
		return 2;
	}
	ms_uuid a, b;
	ms_uuid_generate(&a);
	ms_uuid_generate(&b);
	struct ms_header *base = ms_header_new_base(&a, MS_HEADER_V4, 4096, 64 * 4096, true);
	struct ms_build_data bd = {.build_id = a, .size = 64 * 4096};
	bd.frames = ms_frame_table_new(MS_COMPRESS_ZSTD);
	for (int i = 0; i < 4; i++)
		ms_frame_table_append(bd.frames, 16 * 4096, 500 + i);
	ms_header_set_build(base, &bd);
	ms_frame_table_free(bd.frames);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	for (uint32_t p = 0; p < 64; p += 5)
		ms_pageset_add(dirty, p);
	ms_pageset_add_range(empty, 30, 34);
	struct ms_header *diff;
	if (ms_header_new_diff(base, &b, dirty, empty, 4096, false, &diff))
		return 1;
	diff->incomplete = false;
	const struct ms_header *hs[] = {base, diff};
	int n = 0;
	for (int i = 0; i < 2; i++)
		for (uint64_t v = 3; v <= 5; v++) {
			uint8_t *buf;
			size_t len;
			if (ms_header_serialize(hs[i], v, false, &buf, &len))
				return 1;
			char path[4096];
			snprintf(path, sizeof(path), "%s/fuzz_header/seed-%d", argv[1], n++);
			FILE *f = fopen(path, "wb");
			if (!f || fwrite(buf, 1, len, f) != len || fclose(f))
				return 1;
			free(buf);
		}
	static const char *const handshakes[] = {
	    "[{\"base_host_virt_addr\":140000000000000,\"size\":1048576,\"offset\":0,"
	    "\"page_size\":4096,\"page_size_kib\":4096}]",
	    "[{\"base_host_virt_addr\":1073741824,\"size\":2097152,\"offset\":0,"
	    "\"page_size_kib\":2097152},{\"base_host_virt_addr\":4294967296,"
	    "\"size\":2097152,\"offset\":2097152,\"page_size_kib\":2097152}]",
	};
	for (int i = 0; i < 2; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/fuzz_handshake/seed-%d", argv[1], i);
		FILE *f = fopen(path, "wb");
		if (!f || fputs(handshakes[i], f) < 0 || fclose(f))
			return 1;
	}
	/* snapfiles: a proc one (registers, xstate, guest) and a kvm one (per-vCPU sections) */
	uint8_t regs[216] = {1, 2, 3}, xstate[576] = {7}, vcpu[40] = {9};
	uint32_t guest = 1;
	const struct ms_snap_part proc_parts[] = {
	    {MS_SNAP_REGS, sizeof(regs), regs},
	    {MS_SNAP_XSTATE, sizeof(xstate), xstate},
	    {MS_SNAP_GUEST, sizeof(guest), &guest},
	};
	const struct ms_snap_part kvm_parts[] = {
	    {MS_SNAP_GUEST, sizeof(guest), &guest},
	    {0x10, sizeof(vcpu), vcpu},
	    {0x10 | (1u << 16), 3, vcpu},
	};
	for (int i = 0; i < 2; i++) {
		uint8_t *buf;
		size_t len;
		if (ms_snapfile_build(i ? MS_BACKEND_KVM : MS_BACKEND_PROC, 4u << 20,
				      i ? kvm_parts : proc_parts, 3, &buf, &len))
			return 1;
		char path[4096];
		snprintf(path, sizeof(path), "%s/fuzz_snapfile/seed-%d", argv[1], i);
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(buf, 1, len, f) != len || fclose(f))
			return 1;
		free(buf);
	}
	/* checksum tables: fixed blocks (two sizes, an empty object) and per-frame blocks */
	static uint8_t data[3 * 4096 + 100];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 31);
	FILE *tmp = tmpfile();
	if (!tmp || fwrite(data, 1, sizeof(data), tmp) != sizeof(data) || fflush(tmp))
		return 1;
	struct ms_frame_table *frames = ms_frame_table_new(MS_COMPRESS_ZSTD);
	ms_frame_table_append(frames, 8192, 4096);
	ms_frame_table_append(frames, 8192, 100);
	ms_frame_table_append(frames, 4096, 4096 * 2);
	for (int i = 0; i < 2; i++) {
		struct ms_sums *sums = ms_sums_new();
		if (!sums || ms_sums_add_buf(sums, "memfile", data, sizeof(data), 4096) ||
		    ms_sums_add_buf(sums, "snapfile", data, 40, 0) ||
		    (i && (ms_sums_add_buf(sums, "metadata.json", NULL, 0, 0) ||
			   ms_sums_add_frames(sums, "memfile.zstd", fileno(tmp), frames))))
			return 1;
		uint8_t *buf;
		size_t len;
		if (ms_sums_serialize(sums, &buf, &len))
			return 1;
		char path[4096];
		snprintf(path, sizeof(path), "%s/fuzz_checksums/seed-%d", argv[1], i);
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(buf, 1, len, f) != len || fclose(f))
			return 1;
		free(buf);
		ms_sums_unref(sums);
	}
	ms_frame_table_free(frames);
	fclose(tmp);
	ms_header_free(diff);
	ms_header_free(base);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	return 0;
}
