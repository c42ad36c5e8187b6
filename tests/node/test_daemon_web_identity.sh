#!/bin/sh
# test_daemon_web_identity.sh - memsnapd's s3:// store with web-identity credentials
# against the S3 test server (Ceph RGW, scripts/rgw.sh), whose STS checks the token for
# real: tests/storage/oidc_issuer.py is an OpenID Connect issuer on 127.0.0.1 (its
# openid-configuration and JWKS, a key of its own, a signed JWT); the test registers it
# with RGW (IAM CreateOpenIDConnectProvider with the certificate's thumbprint), makes a
# role it may assume (CreateRole, PutRolePolicy). RGW grants AssumeRoleWithWebIdentity
# for the issuer's token and refuses one signed by another key; memsnapd with only
# AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (no static keys) pauses a sandbox into
# the store, and after a restart (cache emptied) resumes it cold from RGW, the guest
# verifying its memory.
#   test_daemon_web_identity.sh MEMSNAPD MEMSNAP  (needs MEMSNAP_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY)
set -u
memsnapd=${1:?usage: test_daemon_web_identity.sh MEMSNAPD MEMSNAP}
memsnap=${2:?usage: test_daemon_web_identity.sh MEMSNAPD MEMSNAP}
if [ -z "${MEMSNAP_S3_ENDPOINT:-}" ] || [ -z "${MEMSNAP_S3_ACCESS_KEY:-}" ]; then
	echo "SKIP: no S3 test server (MEMSNAP_S3_ENDPOINT; scripts/run-tests.sh starts one)"
	exit 77
fi
case $MEMSNAP_S3_ENDPOINT in
http://127.*) ;;
*) echo "SKIP: the S3 test server is not on 127.0.0.0/8"; exit 77 ;;
esac
if ! python3 -c 'import cryptography' 2>/dev/null; then
	echo "SKIP: python3-cryptography is not installed"
	exit 77
fi
tmp=$(mktemp -d /tmp/msd-wi.XXXXXX)
issuer=""
daemon=""
cleanup() {
	[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
	[ -n "$issuer" ] && kill "$issuer" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../expect.sh"
. "$(dirname "$0")/daemon_lib.sh" # api, field, wait_healthz
E=$MEMSNAP_S3_ENDPOINT
region=${MEMSNAP_S3_REGION:-us-east-1}
user="$MEMSNAP_S3_ACCESS_KEY:$MEMSNAP_S3_SECRET_KEY"
# aws SERVICE OUT PARAM=VALUE...: a POST of a form signed with the test user's keys; $code
aws() {
	service=$1 out=$2
	shift 2
	set -- $(for kv in "$@"; do printf -- '--data-urlencode %s ' "$kv"; done)
	code=$(curl -s -o "$out" -w '%{http_code}' --aws-sigv4 "aws:amz:$region:$service" \
		--user "$user" -X POST "$E/" "$@")
}
# assume TOKEN_FILE OUT: AssumeRoleWithWebIdentity, unsigned as the SDKs send it; $code
assume() {
	code=$(curl -s -o "$2" -w '%{http_code}' -X POST "$E/" \
		--data-urlencode Action=AssumeRoleWithWebIdentity --data-urlencode Version=2011-06-15 \
		--data-urlencode "RoleArn=$role_arn" --data-urlencode RoleSessionName=memsnap-test \
		--data-urlencode "WebIdentityToken=$(cat "$1")")
}

python3 "$(dirname "$0")/../storage/oidc_issuer.py" "$tmp" 2>"$tmp/issuer.log" &
issuer=$!
tries=0
until [ -s "$tmp/port" ]; do
	tries=$((tries + 1))
	kill -0 "$issuer" 2>/dev/null && [ $tries -lt 300 ] ||
		{ bad "oidc_issuer.py did not start: $(cat "$tmp/issuer.log")"; exit 1; }
	sleep 0.1
done
port=$(cat "$tmp/port")
role=memsnap-wi-$$
role_arn="arn:aws:iam:::role/$role"
bucket=memsnap-wi-$$

aws iam "$tmp/out.xml" Action=CreateOpenIDConnectProvider "Url=http://127.0.0.1:$port" \
	ClientIDList.member.1=memsnap "ThumbprintList.member.1=$(cat "$tmp/thumbprint")" \
	Version=2010-05-08
expect "CreateOpenIDConnectProvider" 200 "$code"
trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":["arn:aws:iam:::oidc-provider/127.0.0.1:'$port'"]},"Action":["sts:AssumeRoleWithWebIdentity"]}]}'
aws iam "$tmp/out.xml" Action=CreateRole "RoleName=$role" Path=/ \
	"AssumeRolePolicyDocument=$trust" Version=2010-05-08
expect "CreateRole" 200 "$code"
policy='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":"*"}]}'
aws iam "$tmp/out.xml" Action=PutRolePolicy "RoleName=$role" PolicyName=memsnap-s3 \
	"PolicyDocument=$policy" Version=2010-05-08
expect "PutRolePolicy" 200 "$code"

# RGW checks the token against the issuer's keys: granted for the issuer's, not a forgery
assume "$tmp/token" "$tmp/assume.xml"
expect "AssumeRoleWithWebIdentity (the issuer's token)" 200 "$code"
grep -q "<SessionToken>" "$tmp/assume.xml" && ok || bad "no SessionToken: $(head -c 300 "$tmp/assume.xml")"
grep -q "GET /jwks" "$tmp/issuer.log" && ok || bad "RGW never fetched the issuer's JWKS"
assume "$tmp/token.forged" "$tmp/forged.xml"
expect "AssumeRoleWithWebIdentity (signed by another key)" 403 "$code"

# memsnapd with the web identity only: no static keys in its environment or config
sock="$tmp/api.sock"
export MEMSNAP_SOCKET="$sock"
start_daemon() {
	env -i PATH="$PATH" HOME="$tmp" AWS_WEB_IDENTITY_TOKEN_FILE="$tmp/token" \
		AWS_ROLE_ARN="$role_arn" AWS_REGION="$region" "$memsnapd" --config=/dev/null \
		--socket="$sock" --run-dir="$tmp/run" --cache-dir="$tmp/cache" --backend=proc \
		--store="s3://$bucket/memsnap" --s3-endpoint="$E" --s3-sts-endpoint="$E" \
		--s3-create-bucket=on --log-level=info 2>>"$tmp/daemon.log" &
	daemon=$!
	wait_healthz "$1" "$daemon" "$tmp/daemon.log" && ok
}
stop_daemon() {
	kill -TERM "$daemon"
	wait "$daemon"
	expect "$1: clean stop" 0 $?
	daemon=""
}
start_daemon "first start"
grep -q "web identity" "$tmp/daemon.log" && ok || bad "the credential source is not logged: $(cat "$tmp/daemon.log")"
sid=$("$memsnap" sandbox start --guest pattern --mem 8 --exec fill --arg0 61 --arg1 1 -q 2>"$tmp/err")
[ -n "$sid" ] && ok || bad "sandbox start: $(cat "$tmp/err")"
build=$("$memsnap" sandbox pause -q "$sid" 2>"$tmp/err")
[ -n "$build" ] && ok || bad "sandbox pause: $(cat "$tmp/err")"
tries=0
while :; do
	api GET "/v1/builds/$build"
	s=$(field .status)
	[ "$s" = published ] && { ok; break; }
	tries=$((tries + 1))
	[ "$s" != failed ] && [ $tries -lt 1200 ] || { bad "build $build: $s: $(cat "$tmp/body")"; break; }
	sleep 0.1
done
stop_daemon "first run"
# the objects are in RGW's bucket (the role's: listed with the role's credentials
# from the test's own AssumeRoleWithWebIdentity above)
xml() { sed -n "s:.*<$1>\([^<]*\)</$1>.*:\1:p" "$tmp/assume.xml"; }
code=$(curl -s -o "$tmp/list.xml" -w '%{http_code}' --aws-sigv4 "aws:amz:$region:s3" \
	--user "$(xml AccessKeyId):$(xml SecretAccessKey)" -H "x-amz-security-token: $(xml SessionToken)" \
	-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
	"$E/$bucket")
expect "ListObjects of the bucket" 200 "$code"
grep -q "$build" "$tmp/list.xml" && ok || bad "the bucket has no object of $build"
# a fresh start (the cache is emptied): the resume reads every page from RGW
start_daemon "second start"
"$memsnap" sandbox start --build "$build" --exec verify --arg0 61 --arg1 1 -q >"$tmp/out" 2>"$tmp/err" &&
	ok || bad "cold resume from RGW (verify): $(cat "$tmp/out" "$tmp/err")"
stop_daemon "second run"
echo "test_daemon_web_identity: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
