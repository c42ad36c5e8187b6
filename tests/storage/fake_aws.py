#!/usr/bin/env python3
"""fake_aws.py - a small stand-in for AWS's credential endpoints on 127.0.0.1, for
test_s3_provider: the instance metadata service v2, STS AssumeRoleWithWebIdentity, and an
S3 that answers HEAD and records how each request was signed.

  fake_aws.py          listens on 127.0.0.1, an ephemeral port; prints the port, then serves

  PUT  /latest/api/token                           IMDSv2 session token (needs the TTL header)
  GET  /latest/meta-data/iam/security-credentials/ the role name   (needs the session token)
  GET  /latest/meta-data/iam/security-credentials/ROLE  credentials JSON (same)
  POST /sts                                        AssumeRoleWithWebIdentity (form body)
  HEAD /bucket/...                                 S3: 200, Content-Length 5
  GET  /control                                    the counters and what was seen (JSON)
  POST /control?fail=0|1&expires=SECONDS&delay=S   make fetches fail, set the lifetime,
                                                   make STS answer after S seconds

Every credential set it hands out is numbered: IM-<n>/IMSECRET-<n>/IMTOKEN-<n> (IMDS) and
WI-<n>/WISECRET-<n>/WITOKEN-<n> (STS); Expiration = now + expires seconds (default 3600).
"""
import datetime
import http.server
import json
import sys
import time
import urllib.parse

state = {"fail": False, "expires": 3600, "delay": 0.0, "imds_tokens": 0, "imds_creds": 0,
         "imds_unauthorized": 0, "sts": 0, "sts_bad": 0, "web_tokens": [], "role_arns": [],
         "s3": []}
SESSION = "imds-session-1"
ROLE = "memsnap-role"


def expiration():
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=state["expires"])
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", ctype="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def do_PUT(self):
        self.body()
        if self.path != "/latest/api/token":
            return self.reply(404)
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(400, "missing TTL")
        state["imds_tokens"] += 1
        self.reply(200, SESSION)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/control":
            return self.reply(200, json.dumps(state), "application/json")
        prefix = "/latest/meta-data/iam/security-credentials/"
        if url.path.startswith(prefix):
            if self.headers.get("X-aws-ec2-metadata-token") != SESSION:
                state["imds_unauthorized"] += 1
                return self.reply(401)
            name = url.path[len(prefix):]
            if name == "":
                return self.reply(200, ROLE + "\n")
            if name != ROLE:
                return self.reply(404)
            if state["fail"]:
                return self.reply(500, "down")
            state["imds_creds"] += 1
            n = state["imds_creds"]
            doc = {"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "IM-%d" % n,
                   "SecretAccessKey": "IMSECRET-%d" % n, "Token": "IMTOKEN-%d" % n,
                   "Expiration": expiration(), "LastUpdated": expiration()}
            return self.reply(200, json.dumps(doc), "application/json")
        self.reply(404)

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        form = urllib.parse.parse_qs(self.body())
        if url.path == "/control":
            q = urllib.parse.parse_qs(url.query)
            if "fail" in q:
                state["fail"] = q["fail"][0] == "1"
            if "expires" in q:
                state["expires"] = int(q["expires"][0])
            if "delay" in q:
                state["delay"] = float(q["delay"][0])
            return self.reply(200, "ok")
        if url.path != "/sts":
            return self.reply(404)
        if (form.get("Action") != ["AssumeRoleWithWebIdentity"] or "RoleArn" not in form
                or "RoleSessionName" not in form or "WebIdentityToken" not in form):
            state["sts_bad"] += 1
            return self.reply(400, "<ErrorResponse><Error><Code>InvalidParameter</Code>"
                              "</Error></ErrorResponse>")
        time.sleep(state["delay"])
        state["web_tokens"].append(form["WebIdentityToken"][0])
        state["role_arns"].append(form["RoleArn"][0])
        if state["fail"]:
            return self.reply(503, "<ErrorResponse><Error><Code>ServiceUnavailable</Code>"
                              "</Error></ErrorResponse>")
        state["sts"] += 1
        n = state["sts"]
        xml = ("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
               "<Credentials><AccessKeyId>WI-%d</AccessKeyId>"
               "<SecretAccessKey>WISECRET-%d</SecretAccessKey>"
               "<SessionToken>WITOKEN-%d</SessionToken><Expiration>%s</Expiration>"
               "</Credentials></AssumeRoleWithWebIdentityResult>"
               "</AssumeRoleWithWebIdentityResponse>") % (n, n, n, expiration())
        self.reply(200, xml, "text/xml")

    def do_HEAD(self):
        auth = self.headers.get("Authorization") or ""
        cred = auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else ""
        signed = auth.split("SignedHeaders=")[1].split(",")[0] if "SignedHeaders=" in auth \
            else ""
        state["s3"].append({"key": cred, "token": self.headers.get("x-amz-security-token"),
                            "signed": signed})
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
