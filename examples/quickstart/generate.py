#!/usr/bin/env python3
"""Regenerates the DEMO-ONLY quickstart key set and tokens.

Makes a fresh RSA key, writes its public half to jwks.json and signs long-lived demo
tokens for alice (allowed by the quickstart routes) and bob (signed in, but not in
team-a). The private key is thrown away: the demo tokens are public, so a server running
the quickstart config accepts them from anyone. Never use this config in production.

    pip install pyjwt cryptography && python3 examples/quickstart/generate.py
"""
import json
import pathlib
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = pathlib.Path(__file__).parent
ISSUER = "https://idp.demo.mesh-authz.invalid"
AUDIENCE = "mesh-authz-demo"
KID = "demo-2026"
EXPIRES = 4102444800  # 2100-01-01T00:00:00Z

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
(HERE / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")

for user, email in [("alice", "alice@example.com"), ("bob", "bob@example.com")]:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"demo-{user}",
        "preferred_username": user,
        "email": email,
        "iat": int(time.time()),
        "exp": EXPIRES,
        "demo_only": "this token is public; never trust its issuer outside the quickstart",
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})
    (HERE / f"{user}.jwt").write_text(token + "\n")
print("wrote jwks.json, alice.jwt, bob.jwt")
