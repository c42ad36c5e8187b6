#!/bin/sh
# test_s3_sts.sh - temporary S3 credentials against the S3 test server (Ceph RGW with STS on,
# scripts/rgw.sh): the test allows its user sts:GetSessionToken (IAM PutUserPolicy), takes a
# session token (STS GetSessionToken), and s3_probe's calls signed with it (the token sent
# as x-amz-security-token) work, through the config and through AWS_SESSION_TOKEN; a wrong
# token, or the temporary key without its token, is refused with HTTP 403.
#   test_s3_sts.sh S3_PROBE      (needs MEMSNAP_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY)
set -u
probe=${1:?usage: test_s3_sts.sh S3_PROBE}
if [ -z "${MEMSNAP_S3_ENDPOINT:-}" ] || [ -z "${MEMSNAP_S3_ACCESS_KEY:-}" ]; then
	echo "SKIP: no S3 test server (MEMSNAP_S3_ENDPOINT; scripts/run-tests.sh starts one)"
	exit 77
fi
case $MEMSNAP_S3_ENDPOINT in
http://127.*) ;;
*) echo "SKIP: the S3 test server is not on 127.0.0.0/8"; exit 77 ;;
esac
tmp=$(mktemp -d /tmp/ms-sts.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/../expect.sh"
E=$MEMSNAP_S3_ENDPOINT
region=${MEMSNAP_S3_REGION:-us-east-1}
user="$MEMSNAP_S3_ACCESS_KEY:$MEMSNAP_S3_SECRET_KEY"
bucket=memsnap-sts-$$
# aws SERVICE OUT PARAM=VALUE...: a signed POST of a form (IAM, STS); $code = HTTP status
aws() {
	service=$1 out=$2
	shift 2
	set -- $(for kv in "$@"; do printf -- '--data-urlencode %s ' "$kv"; done)
	code=$(curl -s -o "$out" -w '%{http_code}' --aws-sigv4 "aws:amz:$region:$service" \
		--user "$user" -X POST "$E/" "$@")
}
policy='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:GetSessionToken","s3:*"],"Resource":"*"}]}'
aws iam "$tmp/policy.xml" Action=PutUserPolicy UserName=memsnap PolicyName=memsnap-sts \
	"PolicyDocument=$policy" Version=2010-05-08
expect "PutUserPolicy" 200 "$code"
aws sts "$tmp/token.xml" Action=GetSessionToken Version=2011-06-15 DurationSeconds=900
expect "GetSessionToken" 200 "$code"
xml() { sed -n "s:.*<$1>\([^<]*\)</$1>.*:\1:p" "$tmp/token.xml"; }
ak=$(xml AccessKeyId) sk=$(xml SecretAccessKey) token=$(xml SessionToken)
[ -n "$ak" ] && [ -n "$sk" ] && [ -n "$token" ] && ok || bad "no credentials in: $(cat "$tmp/token.xml")"
[ "$ak" != "$MEMSNAP_S3_ACCESS_KEY" ] && ok || bad "the temporary key is the user's"

# run NAME WANT_STATUS [VAR=VALUE...] -- MODE: s3_probe with only the given variables
run() {
	name=$1 want=$2
	shift 2
	env -i PATH="$PATH" HOME="$tmp" "$@" "$probe" "$mode" "$E" "$bucket" \
		>"$tmp/out" 2>"$tmp/err"
	got=$?
	expect "$name" "$want" "$got"
	[ "$got" = "$want" ] || sed 's/^/  | /' "$tmp/err"
}
mode=config
run "config: the session token" 0 PROBE_ACCESS_KEY="$ak" PROBE_SECRET_KEY="$sk" \
	PROBE_SESSION_TOKEN="$token"
run "config: a wrong token" 1 PROBE_ACCESS_KEY="$ak" PROBE_SECRET_KEY="$sk" \
	PROBE_SESSION_TOKEN="x$token"
grep -q "HTTP 403" "$tmp/err" && ok || bad "wrong token: not a 403: $(cat "$tmp/err")"
run "config: the temporary key without its token" 1 PROBE_ACCESS_KEY="$ak" PROBE_SECRET_KEY="$sk"
grep -q "HTTP 403" "$tmp/err" && ok || bad "no token: not a 403: $(cat "$tmp/err")"
run "config: the long-term key" 0 PROBE_ACCESS_KEY="$MEMSNAP_S3_ACCESS_KEY" \
	PROBE_SECRET_KEY="$MEMSNAP_S3_SECRET_KEY"
mode=uri
run "env: AWS_SESSION_TOKEN" 0 AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" \
	AWS_SESSION_TOKEN="$token"
run "env: a wrong AWS_SESSION_TOKEN" 1 AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" \
	AWS_SESSION_TOKEN="${token}x"
# the shared credentials file's profile (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE) with
# aws_session_token (the config file's region: test_s3_creds, RGW takes any region)
cat >"$tmp/credentials" <<CREDS
[default]
aws_access_key_id = nope
aws_secret_access_key = nope
[temp]
aws_access_key_id = $ak
aws_secret_access_key = $sk
aws_session_token = $token
CREDS
printf '[default]\nregion = nowhere-1\n[profile temp]\nregion = %s\n' "$region" >"$tmp/config"
run "files: profile temp" 0 AWS_PROFILE=temp AWS_SHARED_CREDENTIALS_FILE="$tmp/credentials" \
	AWS_CONFIG_FILE="$tmp/config"
echo "test_s3_sts: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
