#!/bin/sh
# test_daemon_creds.sh - memsnapd's s3:// store with temporary credentials from its config:
# s3_imds + s3_imds_endpoint (IMDSv2) and s3_sts_endpoint (web identity, with
# AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN), against tests/storage/fake_aws.py on
# 127.0.0.1 (nothing else is contacted); without a source the daemon refuses to start.
#   test_daemon_creds.sh MEMSNAPD
set -u
memsnapd=${1:?usage: test_daemon_creds.sh MEMSNAPD}
for tool in python3 curl jq; do
	command -v $tool >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
tmp=$(mktemp -d /tmp/msd-creds.XXXXXX)
fake=""
daemon=""
cleanup() {
	[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
	[ -n "$fake" ] && kill "$fake" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../expect.sh"
python3 "$(dirname "$0")/../storage/fake_aws.py" >"$tmp/port" &
fake=$!
tries=0
until [ -s "$tmp/port" ]; do
	tries=$((tries + 1))
	[ $tries -lt 100 ] || { bad "fake_aws.py did not start"; exit 1; }
	sleep 0.1
done
url="http://127.0.0.1:$(cat "$tmp/port")"
sock="$tmp/api.sock"
state() { curl -s "$url/control" | jq -r "$1"; }

# run NAME VAR=VALUE... -- FLAGS...: memsnapd with only those variables; $up = it answered
run() {
	name=$1
	shift
	vars=""
	while [ "$1" != -- ]; do vars="$vars $1"; shift; done
	shift
	env -i PATH="$PATH" HOME="$tmp" $vars "$memsnapd" --config=/dev/null --socket="$sock" \
		--run-dir="$tmp/run" --cache-dir="$tmp/cache" --backend=proc \
		--store=s3://bucket/memsnap --s3-endpoint="$url" "$@" 2>"$tmp/$name.log" &
	daemon=$!
	up=0
	tries=0
	while kill -0 "$daemon" 2>/dev/null && [ $tries -lt 300 ]; do
		if curl -s --unix-socket "$sock" -o /dev/null http://d/healthz; then up=1; break; fi
		tries=$((tries + 1))
		sleep 0.1
	done
	if [ $up = 1 ]; then
		kill -TERM "$daemon"
		wait "$daemon"
		status=$?
	else
		wait "$daemon"
		status=$?
	fi
	daemon=""
}

run imds -- --s3-imds=on --s3-imds-endpoint="$url"
expect "IMDS: memsnapd started" 1 "$up"
expect "IMDS: clean stop" 0 "$status"
expect "IMDS: one set of credentials fetched" 1 "$(state .imds_creds)"
expect "IMDS: every metadata request had the session token" 0 "$(state .imds_unauthorized)"
grep -q "instance metadata credentials, valid for" "$tmp/imds.log" && ok ||
	bad "IMDS: not logged: $(cat "$tmp/imds.log")"

run none -- --s3-imds=off
expect "no source: memsnapd did not start" 0 "$up"
[ "$status" != 0 ] && ok || bad "no source: exit 0"
grep -q "no S3 credentials" "$tmp/none.log" && ok || bad "no source: reason: $(cat "$tmp/none.log")"

echo "header.payload.signature" >"$tmp/web-token"
run web AWS_WEB_IDENTITY_TOKEN_FILE="$tmp/web-token" \
	AWS_ROLE_ARN=arn:aws:iam::123456789012:role/memsnap -- --s3-sts-endpoint="$url/sts"
expect "web identity: memsnapd started" 1 "$up"
expect "web identity: one STS call" 1 "$(state .sts)"
expect "web identity: the token file's token" "header.payload.signature" "$(state '.web_tokens[-1]')"
expect "web identity: the role" "arn:aws:iam::123456789012:role/memsnap" "$(state '.role_arns[-1]')"

echo "test_daemon_creds: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
