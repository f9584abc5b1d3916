#!/usr/bin/env python3
"""Verify a Clearance clearance with PyJWT, a standard JOSE library, using only the JWKS.

Usage: verify_clearance.py JWKS_FILE TOKEN ISSUER
Prints the verified claims as JSON and exits 0, or prints the error and exits 1.
Nothing here is shared with Clearance's own code: it checks the published format.
"""
import json
import sys

import jwt


def main() -> int:
    jwks_path, token, issuer = sys.argv[1:4]
    with open(jwks_path, encoding="utf-8") as f:
        jwks = json.load(f)
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "clearance+jwt":
            raise ValueError(f"typ is {header.get('typ')!r}")
        matching = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
        if len(matching) != 1:
            raise ValueError(f"no single key with kid {header.get('kid')!r}")
        key = jwt.PyJWK(matching[0]).key
        claims = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            issuer=issuer,
            options={"require": ["iss", "sub", "jti", "iat", "nbf", "exp"], "verify_aud": False},
        )
    except Exception as e:  # noqa: BLE001 - report any rejection
        print(f"rejected: {type(e).__name__}: {e}")
        return 1
    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
