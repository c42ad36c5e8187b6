#!/usr/bin/env python3
"""oidc_issuer.py - a tiny OpenID Connect issuer on 127.0.0.1 for test_s3_web_identity.sh.

  oidc_issuer.py DIR
makes an RSA key and a self-signed certificate, serves
  /.well-known/openid-configuration  (issuer, jwks_uri)
  /jwks                              (the key, with the certificate in x5c)
on a free port, and writes into DIR: port, thumbprint (SHA-1 of the
certificate, as IAM CreateOpenIDConnectProvider takes it), and token(s) signed
RS256: DIR/token (aud memsnap, valid an hour) and DIR/token.forged (the same
claims signed by another key). Runs until killed."""
import base64, datetime, hashlib, http.server, json, os, sys, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

d = sys.argv[1]


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_cert(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memsnap test issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256()))


key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
cert = make_cert(key)
der = cert.public_bytes(serialization.Encoding.DER)
nums = key.public_key().public_numbers()
jwks = {"keys": [{
    "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "memsnap-test",
    "n": b64u(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
    "e": b64u(nums.e.to_bytes(3, "big")),
    "x5c": [base64.b64encode(der).decode()],
}]}


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/.well-known/openid-configuration":
            body = {"issuer": issuer, "jwks_uri": issuer + "/jwks",
                    "id_token_signing_alg_values_supported": ["RS256"]}
        elif self.path == "/jwks":
            body = jwks
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("oidc_issuer: " + (fmt % args) + "\n")


srv = http.server.HTTPServer(("127.0.0.1", 0), H)
port = srv.server_address[1]
issuer = "http://127.0.0.1:%d" % port


def token(signer):
    now = int(time.time())
    head = b64u(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "memsnap-test"}).encode())
    claims = {"iss": issuer, "aud": "memsnap", "sub": "memsnap-node", "client_id": "memsnap",
              "iat": now, "nbf": now - 60, "exp": now + 3600}
    body = b64u(json.dumps(claims).encode())
    sig = signer.sign((head + "." + body).encode(), padding.PKCS1v15(), hashes.SHA256())
    return head + "." + body + "." + b64u(sig)


def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))


put("thumbprint", hashlib.sha1(der).hexdigest())
put("token", token(key))
put("token.forged", token(other))
put("port", str(port))
srv.serve_forever()
