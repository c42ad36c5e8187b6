#!/bin/sh
# Runs every libFuzzer target of a fuzz build for a bounded time (FUZZ_SECONDS, default 60,
# for each target) from a generated seed corpus. Exits non-zero on a crash.
#   scripts/run-fuzz.sh BUILD_DIR
set -eu
build=${1:?usage: run-fuzz.sh BUILD_DIR}
seconds=${FUZZ_SECONDS:-60}
corpus="$build/fuzz/corpus"
mkdir -p "$corpus/fuzz_header" "$corpus/fuzz_handshake" "$corpus/fuzz_snapfile" \
	"$corpus/fuzz_checksums"
"$build/fuzz/gen_seeds" "$corpus"
# fuzz_api: one seed per route ("METHOD\nPATH\nBODY")
mkdir -p "$corpus/fuzz_api"
id=6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162
printf 'POST\n/v1/sandboxes\n{"guest":"pattern","mem_mib":8,"exec":{"command":"fill","arg0":1,"arg1":2}}' >"$corpus/fuzz_api/create"
printf 'POST\n/v1/sandboxes\n{"build_id":"%s"}' $id >"$corpus/fuzz_api/create-build"
printf 'POST\n/v1/sandboxes/%s/resume\n{"exec":{"command":"verify"}}' $id >"$corpus/fuzz_api/resume"
printf 'POST\n/v1/sandboxes/%s/pause\n' $id >"$corpus/fuzz_api/pause"
printf 'DELETE\n/v1/sandboxes/%s\n' $id >"$corpus/fuzz_api/delete"
printf 'GET\n/v1/builds/%s/scheduling-metadata\n' $id >"$corpus/fuzz_api/metadata"
printf 'GET\n/metrics\n' >"$corpus/fuzz_api/metrics"
printf 'GET\n/v1/builds?parent=%s\n' $id >"$corpus/fuzz_api/builds"
# fuzz_peer: one seed per peer route ("METHOD\nURI"), and a registry record
mkdir -p "$corpus/fuzz_peer"
printf 'GET\n/peer/v1/builds/%s' $id >"$corpus/fuzz_peer/status"
printf 'GET\n/peer/v1/builds/%s/memfile.header' $id >"$corpus/fuzz_peer/header"
printf 'HEAD\n/peer/v1/builds/%s/rootfs.ext4.header' $id >"$corpus/fuzz_peer/rootfs-header"
printf 'GET\n/peer/v1/builds/%s/memfile?offset=4096&length=8192' $id >"$corpus/fuzz_peer/data"
printf 'GET\n/peer/v1/builds/%s/rootfs.ext4?length=4096&offset=0' $id >"$corpus/fuzz_peer/rootfs-data"
printf 'GET\n/peer/v1/builds/%s/snapfile' $id >"$corpus/fuzz_peer/snapfile"
printf 'GET\n/peer/v1/builds/%s/metadata.json' $id >"$corpus/fuzz_peer/metadata"
printf 'GET\n/peer/v1/builds/%s/checksums' $id >"$corpus/fuzz_peer/checksums"
printf '{"build_id":"%s","address":"127.0.0.1:7000","written_at_ms":1,"expires_at_ms":2}' $id \
	>"$corpus/fuzz_peer/record"
# fuzz_s3_xml: the answers S3 gives the s3 store (error, multipart, listings)
mkdir -p "$corpus/fuzz_s3_xml"
printf '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>' \
	>"$corpus/fuzz_s3_xml/error"
printf '<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>fleet-a/k</Key><UploadId>2~a&amp;b&#x41;&#66;</UploadId></InitiateMultipartUploadResult>' \
	>"$corpus/fuzz_s3_xml/initiate"
printf '<ListMultipartUploadsResult><Upload><Key>a</Key></Upload><Upload><Key>b</Key></Upload></ListMultipartUploadsResult>' \
	>"$corpus/fuzz_s3_xml/uploads"
printf '<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>fleet-a/%s/memfile</Key><Size>4096</Size></Contents><Contents><Key>fleet-a/x&lt;y</Key><Size>0</Size></Contents><NextContinuationToken>1&#x2F;2</NextContinuationToken></ListBucketResult>' $id \
	>"$corpus/fuzz_s3_xml/list"
# fuzz_metadata: a build's metadata.json with a prefetch trace, and one without
mkdir -p "$corpus/fuzz_metadata"
printf '{"build_id":"%s","guest":"workset","prefetch":{"memory":{"block_size":4096,"indices":[3,1,2],"access_types":["r","w","p"]}}}' $id \
	>"$corpus/fuzz_metadata/trace"
printf '{"build_id":"%s","guest":"pattern","mem_bytes":8388608}' $id >"$corpus/fuzz_metadata/plain"
for f in "$build"/fuzz/fuzz_*; do
	[ -f "$f" ] && [ -x "$f" ] || continue
	echo "fuzz: $(basename "$f") for ${seconds}s"
	log="$build/fuzz/$(basename "$f").log"
	if ! "$f" -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
		-artifact_prefix="$build/fuzz/" "$corpus/$(basename "$f")" >"$log" 2>&1; then
		tail -n 40 "$log"
		echo "fuzz: $(basename "$f") crashed; the input is in $build/fuzz/" >&2
		exit 1
	fi
	tail -n 12 "$log"
done
echo "fuzz: no crash"
