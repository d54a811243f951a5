#!/usr/bin/env python3
"""A workload-token issuer for the identity tests (tests/src/identity.rs).

Real keys (cryptography), real signatures (PyJWT's algorithms), and an HTTPS
JWKS / OIDC discovery server on loopback. Subcommands, output on stdout:

  keys  --dir D --kid K --alg A   write D/K.pem (private key) and D/K.jwk.json;
                                   print the public JWK
  jwks  --dir D K1 K2 ...          print {"keys": [...]} of those keys
  mint  --dir D --kid K --alg A --claims JSON [--no-kid] [--header JSON]
                                   print the compact token (one line)
        --alg none                 unsigned: alg "none", empty signature
        --hs256-with-public-key K  HS256 keyed with K's PUBLIC key PEM
                                   (the algorithm-confusion attack)
  serve --dir D --port P --cert C --key K [--issuer-path /p]
                                   HTTPS on 127.0.0.1; prints {"port": N}

`--header` is merged over the header last: a key set to null is removed, so
`{"typ": null}` drops `typ` and `{"alg": "RS256"}` can lie about the
algorithm the signature was made with.
"""

import argparse
import base64
import hashlib
import hmac
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

# What each algorithm signs with.
KEY_MAKERS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "EdDSA": lambda: ed25519.Ed25519PrivateKey.generate(),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact_json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def private_key(directory: Path, kid: str):
    pem = (directory / f"{kid}.pem").read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


def cmd_keys(args):
    key = KEY_MAKERS[args.alg]()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / f"{args.kid}.pem").write_bytes(pem)
    algorithm = get_default_algorithms()[args.alg]
    jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    # PyJWT adds key_ops to RSA keys; real JWKS documents (Kubernetes,
    # SPIRE) carry `use` alone, and RFC 7517 advises against both.
    jwk.pop("key_ops", None)
    jwk.update(kid=args.kid, alg=args.alg, use="sig")
    (args.dir / f"{args.kid}.jwk.json").write_text(json.dumps(jwk))
    print(json.dumps(jwk))


def cmd_jwks(args):
    keys = [json.loads((args.dir / f"{kid}.jwk.json").read_text()) for kid in args.kids]
    print(json.dumps({"keys": keys}))


def cmd_mint(args):
    claims = json.loads(args.claims)
    if args.hs256_with_public_key:
        kid, alg = args.hs256_with_public_key, "HS256"
    else:
        if not args.alg or (args.alg != "none" and not args.kid):
            sys.exit("mint: --alg (and --kid unless --alg none) are required")
        kid, alg = args.kid, args.alg
    header = {"alg": alg, "typ": "JWT"}
    if kid and not args.no_kid:
        header["kid"] = kid
    for name, value in json.loads(args.header or "{}").items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    signing_input = f"{b64url(compact_json(header))}.{b64url(compact_json(claims))}"
    if alg == "none":
        signature = b""
    elif args.hs256_with_public_key:
        # The verifier is meant to be fooled into using the PEM of the RSA/EC
        # public key it holds as an HMAC secret. PyJWT refuses such a key.
        public_pem = private_key(args.dir, kid).public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    else:
        algorithm = get_default_algorithms()[alg]
        key = algorithm.prepare_key(private_key(args.dir, kid))
        signature = algorithm.sign(signing_input.encode(), key)
    print(f"{signing_input}.{b64url(signature)}")


class Issuer(BaseHTTPRequestHandler):
    """GET /jwks.json (the file D/jwks.json, read per request),
    GET <issuer-path>/.well-known/openid-configuration, GET /stats,
    POST /down and POST /up (/jwks.json answers 503 while down)."""

    protocol_version = "HTTP/1.1"
    state = {"down": False, "counts": {}}
    lock = threading.Lock()
    directory: Path
    issuer_path = ""

    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, status: int, body: bytes, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def count(self, path: str):
        with self.lock:
            counts = self.state["counts"]
            counts[path] = counts.get(path, 0) + 1

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/stats":
            with self.lock:
                body = compact_json(self.state["counts"])
            return self.answer(200, body)
        self.count(path)
        if path == "/jwks.json":
            if self.state["down"]:
                return self.answer(503, b"jwks is down\n", "text/plain")
            jwks = self.directory / "jwks.json"
            if not jwks.exists():
                return self.answer(404, b"no jwks.json written yet\n", "text/plain")
            return self.answer(200, jwks.read_bytes())
        if path == f"{self.issuer_path}/.well-known/openid-configuration":
            # A test may replace the document (a wrong issuer, no jwks_uri).
            override = self.directory / "openid-configuration.json"
            if override.exists():
                return self.answer(200, override.read_bytes())
            document = {
                "issuer": self.base_url() + self.issuer_path,
                "jwks_uri": self.base_url() + "/jwks.json",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": list(KEY_MAKERS),
            }
            return self.answer(200, compact_json(document))
        self.answer(404, b"not found\n", "text/plain")

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if path in ("/down", "/up"):
            with self.lock:
                self.state["down"] = path == "/down"
            return self.answer(200, compact_json({"down": self.state["down"]}))
        self.count(path)
        self.answer(404, b"not found\n", "text/plain")


def cmd_serve(args):
    Issuer.directory = args.dir
    Issuer.issuer_path = args.issuer_path.rstrip("/")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Issuer)
    server.daemon_threads = True
    # The handshake runs in the request's thread, not in accept(): a client
    # that stalls mid-handshake cannot block the others.
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    keys = commands.add_parser("keys")
    keys.add_argument("--dir", type=Path, required=True)
    keys.add_argument("--kid", required=True)
    keys.add_argument("--alg", choices=list(KEY_MAKERS), required=True)
    keys.set_defaults(run=cmd_keys)

    jwks = commands.add_parser("jwks")
    jwks.add_argument("--dir", type=Path, required=True)
    jwks.add_argument("kids", nargs="*")
    jwks.set_defaults(run=cmd_jwks)

    mint = commands.add_parser("mint")
    mint.add_argument("--dir", type=Path, required=True)
    mint.add_argument("--kid")
    mint.add_argument("--alg", choices=[*KEY_MAKERS, "none"])
    mint.add_argument("--claims", required=True)
    mint.add_argument("--no-kid", action="store_true")
    mint.add_argument("--header")
    mint.add_argument("--hs256-with-public-key", metavar="KID")
    mint.set_defaults(run=cmd_mint)

    serve = commands.add_parser("serve")
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--cert", required=True)
    serve.add_argument("--key", required=True)
    serve.add_argument("--issuer-path", default="")
    serve.set_defaults(run=cmd_serve)

    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
