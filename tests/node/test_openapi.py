#!/usr/bin/env python3
"""test_openapi.py - docs/openapi.yaml against the daemon it describes.

1. The spec names exactly the routes of the daemon's route table (api_routes
   prints it), every $ref resolves, every operation documents its errors.
2. A live memsnapd (proc backend, file store) answers every route; each JSON
   answer carries only fields the spec documents (and every required one),
   its status is one the spec lists; a known path with another method is a
   405 whose Allow header names exactly the spec's methods; a full node's 429
   carries Retry-After.

usage: test_openapi.py MEMSNAPD API_ROUTES OPENAPI_YAML
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:
    print("FAIL: python3 has no yaml module (scripts/deps.sh installs python3-yaml)")
    sys.exit(1)

memsnapd, api_routes, spec_path = sys.argv[1:4]
spec = yaml.safe_load(open(spec_path))
passed = failed = 0


def ok():
    global passed
    passed += 1


def bad(msg):
    global failed
    failed += 1
    print("FAIL:", msg)


def check(cond, msg):
    ok() if cond else bad(msg)


def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


# ---- 1. the spec and the route table ----
routes = set()
for line in subprocess.run([api_routes], capture_output=True, text=True, check=True).stdout.split("\n"):
    if line:
        method, pattern = line.split()
        routes.add((method, pattern))
documented = set()
for path, item in spec["paths"].items():
    for method in ("get", "post", "delete", "put", "patch"):
        if method in item:
            documented.add((method.upper(), path))
for r in sorted(routes - documented):
    bad("the daemon answers %s %s, docs/openapi.yaml does not describe it" % r)
for r in sorted(documented - routes):
    bad("docs/openapi.yaml describes %s %s, the daemon has no such route" % r)
check(routes == documented and routes, "route sets differ")


def walk_refs(node, where):
    if isinstance(node, dict):
        if "$ref" in node:
            try:
                resolve(node)
            except (KeyError, AssertionError):
                bad("%s: $ref %s does not resolve" % (where, node["$ref"]))
        for k, v in node.items():
            walk_refs(v, where + "/" + str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk_refs(v, "%s[%d]" % (where, i))


walk_refs(spec, "")
for path, item in spec["paths"].items():
    for method, op in item.items():
        if method == "parameters":
            continue
        codes = set(op.get("responses", {}))
        check("405" in codes, "%s %s documents no 405" % (method, path))
        check("401" in codes, "%s %s documents no 401 (TCP needs the token)" % (method, path))
        if "{id}" in path:
            check("400" in codes and "404" in codes,
                  "%s %s takes an id but documents no 400/404" % (method, path))


# ---- a minimal JSON-schema check: the subset the spec uses ----
def validate(value, schema, where):
    schema = resolve(schema)
    if value is None:
        if not schema.get("nullable"):
            bad("%s: null, not nullable" % where)
        return
    if "allOf" in schema:
        for s in schema["allOf"]:
            validate(value, s, where)
        return
    if "oneOf" in schema:
        errs = []
        for s in schema["oneOf"]:
            global failed
            before = failed
            validate(value, s, where)
            errs.append(failed - before)
            failed = before
        if 0 not in errs:
            bad("%s: %r matches none of oneOf" % (where, value))
        return
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t in types and not isinstance(value, types[t]):
        bad("%s: %r is not a %s" % (where, value, t))
        return
    if t == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        if not (isinstance(value, float) and value.is_integer()):
            bad("%s: %r is not an integer" % (where, value))
            return
    if t == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        bad("%s: %r is not a number" % (where, value))
        return
    if "enum" in schema and value not in schema["enum"]:
        bad("%s: %r is not one of %s" % (where, value, schema["enum"]))
    if t == "object":
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                bad("%s: required field '%s' missing" % (where, k))
        for k, v in value.items():
            if k in props:
                validate(v, props[k], where + "." + k)
            elif schema.get("additionalProperties") is False:
                bad("%s: field '%s' is not in docs/openapi.yaml" % (where, k))
    if t == "array":
        for i, v in enumerate(value):
            validate(v, schema.get("items", {}), "%s[%d]" % (where, i))


# ---- 2. a live daemon ----
class UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("memsnapd", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


tmp = tempfile.mkdtemp(prefix="ms-openapi.")
sock = os.path.join(tmp, "api.sock")
procs = []


def start(*extra):
    log = open(os.path.join(tmp, "d.log"), "ab")
    p = subprocess.Popen([memsnapd, "--config", "/dev/null", "--socket", sock,
                          "--run-dir", tmp + "/run", "--cache-dir", tmp + "/cache",
                          "--store", "file://" + tmp + "/store", "--backend", "proc",
                          "--log-level", "warn"] + list(extra), stderr=log)
    procs.append(p)
    for _ in range(600):
        if p.poll() is not None:
            bad("memsnapd exited at start: " + open(os.path.join(tmp, "d.log")).read())
            return None
        try:
            request("GET", "/healthz", check_spec=False)
            return p
        except OSError:
            time.sleep(0.1)
    bad("memsnapd did not answer")
    return p


def request(method, path, body=None, check_spec=True, conn=None):
    c = conn or UnixConn(sock)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    if not conn:
        c.close()
    status, hdrs = r.status, {k.lower(): v for k, v in r.getheaders()}
    if check_spec:
        spec_check(method, path, status, hdrs, data)
    try:
        return status, hdrs, json.loads(data) if data and hdrs.get("content-type", "").startswith("application/json") else data
    except ValueError:
        bad("%s %s: an answer that is not JSON: %r" % (method, path, data[:200]))
        return status, hdrs, None


def spec_path_of(path):
    segs = path.split("?")[0].strip("/").split("/")
    for p in spec["paths"]:
        ps = p.strip("/").split("/")
        if len(ps) == len(segs) and all(a == b or a == "{id}" for a, b in zip(ps, segs)):
            return p
    return None


def spec_check(method, path, status, hdrs, data):
    p = spec_path_of(path)
    if p is None:
        check(status == 404, "%s %s: an undocumented path answered %d" % (method, path, status))
        return
    item = spec["paths"][p]
    op = item.get(method.lower())
    if op is None:
        check(status == 405, "%s %s: not documented, answered %d" % (method, path, status))
        return
    resp = op["responses"].get(str(status))
    if resp is None:
        bad("%s %s answered %d, which docs/openapi.yaml does not list" % (method, path, status))
        return
    resp = resolve(resp)
    content = resp.get("content", {})
    ctype = hdrs.get("content-type", "")
    if "application/json" in content:
        check(ctype.startswith("application/json"), "%s %s: content type %s" % (method, path, ctype))
        try:
            validate(json.loads(data), content["application/json"]["schema"],
                     "%s %s %d" % (method, path, status))
        except ValueError:
            bad("%s %s: not JSON" % (method, path))
    for h in resp.get("headers", {}):
        check(h.lower() in hdrs, "%s %s %d: no %s header" % (method, path, status, h))


try:
    hold = os.path.join(tmp, "release")
    d = start("--max-sandboxes", "1", "--test-hold-upload", hold)
    if d is None:
        raise SystemExit
    st, _, sb = request("POST", "/v1/sandboxes",
                        {"guest": "pattern", "mem_mib": 8,
                         "exec": {"command": "fill", "arg0": 3, "arg1": 1}})
    check(st == 201, "create: %d %s" % (st, sb))
    sid = sb["id"] if isinstance(sb, dict) else "00000000-0000-0000-0000-000000000001"
    st, h, _ = request("POST", "/v1/sandboxes", {"guest": "pattern", "mem_mib": 8})
    check(st == 429 and h.get("retry-after", "").isdigit(), "the full node: %d %s" % (st, h))
    check(request("GET", "/v1/sandboxes")[0] == 200, "list")
    check(request("GET", "/v1/sandboxes/" + sid)[0] == 200, "get")
    st, _, sb = request("POST", "/v1/sandboxes/%s/pause" % sid)
    check(st == 200 and sb.get("build_id"), "pause: %d %s" % (st, sb))
    bid = sb.get("build_id") or "00000000-0000-0000-0000-000000000002"
    check(request("GET", "/v1/builds/" + bid)[0] == 200, "build while uploading")
    check(request("GET", "/v1/builds/%s/scheduling-metadata" % bid)[0] == 200, "metadata")
    check(request("GET", "/v1/builds")[0] == 200, "the build list")
    check(request("DELETE", "/v1/builds/" + bid)[0] == 409, "delete while it uploads")
    check(request("DELETE", "/v1/builds/00000000-0000-0000-0000-00000000abcd")[0] == 404,
          "delete of no build")
    st, _, sb = request("POST", "/v1/sandboxes/%s/resume" % sid,
                        {"exec": {"command": "verify", "arg0": 3, "arg1": 1}})
    check(st == 200 and sb.get("report", {}).get("result0") == 0, "resume + verify: %d %s" % (st, sb))
    check(request("GET", "/metrics")[0] == 200, "metrics")
    check(request("GET", "/healthz")[0] == 200, "healthz")
    # errors the spec lists
    check(request("GET", "/v1/sandboxes/not-a-uuid")[0] == 400, "bad id")
    check(request("GET", "/v1/sandboxes/00000000-0000-0000-0000-00000000abcd")[0] == 404, "no sandbox")
    check(request("GET", "/v1/builds/00000000-0000-0000-0000-00000000abcd")[0] == 404, "no build")
    check(request("POST", "/v1/sandboxes", {"guest": "pattern", "bogus": 1})[0] == 400, "unknown field")
    check(request("GET", "/v2/nothing")[0] == 404, "unknown path")
    # every documented path, with a method it does not take: 405 and Allow = the spec's methods
    for p, item in spec["paths"].items():
        concrete = p.replace("{id}", sid)
        allowed = sorted(m.upper() for m in item if m != "parameters")
        for m in ("GET", "POST", "DELETE", "PUT"):
            if m in allowed:
                continue
            st, h, _ = request(m, concrete)
            check(st == 405, "%s %s: %d, wanted 405" % (m, p, st))
            got = sorted(x.strip() for x in h.get("allow", "").split(",") if x.strip())
            check(got == allowed, "%s %s: Allow %s, the spec says %s" % (m, p, got, allowed))
    check(request("DELETE", "/v1/sandboxes/" + sid)[0] == 200, "delete")
    # a stopping daemon (its upload held) takes no new connection
    d.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    try:
        request("GET", "/healthz", check_spec=False)
        bad("a stopping daemon accepted a new connection")
    except OSError:
        ok()
    open(hold, "w").close()
    d.wait(timeout=120)
    check(d.returncode == 0, "memsnapd exit status %s" % d.returncode)
except (OSError, http.client.HTTPException) as e:
    bad("the daemon stopped answering: %r" % e)  # its log follows
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if failed:
        print(open(os.path.join(tmp, "d.log")).read()[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)

print("test_openapi: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed or not passed else 0)
