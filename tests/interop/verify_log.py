#!/usr/bin/env python3
"""An independent verifier of a Clearance audit log, written from RFC 9162 (Merkle tree
hashing, sections 2.1.1-2.1.4) and the C2SP signed-note and tlog-checkpoint texts.
It shares no code with Clearance: the standard library, plus `cryptography` for Ed25519.

Usage: verify_log.py SERVER_URL AUDITOR_KEY [SAVED_CHECKPOINT_FILE]

Fetches the log's verifier key, the latest checkpoint and every entry; checks the
checkpoint signature, every entry's inclusion proof, and (given a checkpoint saved
earlier) the consistency proof from it. Prints a JSON summary; exits 0 if all holds.
"""
import base64
import hashlib
import json
import sys
import urllib.request

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def sha256(b):
    return hashlib.sha256(b).digest()


def leaf_hash(entry):  # RFC 9162 2.1.1: MTH({d}) = SHA-256(0x00 || d)
    return sha256(b"\x00" + entry)


def node_hash(left, right):  # RFC 9162 2.1.1: SHA-256(0x01 || left || right)
    return sha256(b"\x01" + left + right)


def parse_vkey(vkey):
    """C2SP signed-note, "Verifier keys": name+hex(key id)+base64(0x01 || key)."""
    name, key_id, key = vkey.strip().split("+", 2)  # base64 may contain "+"
    raw = base64.b64decode(key)
    if raw[0] != 0x01 or len(raw) != 33:
        raise ValueError("not an Ed25519 verifier key")
    expected = sha256(name.encode() + b"\n" + b"\x01" + raw[1:])[:4]
    if expected.hex() != key_id:
        raise ValueError("key id does not match name and key")
    return name, bytes.fromhex(key_id), Ed25519PublicKey.from_public_bytes(raw[1:])


def open_checkpoint(note, vkey):
    """Verify a signed note with the known key, then parse its checkpoint text."""
    name, key_id, public = vkey
    split = note.rindex("\n\n")
    text, signatures = note[: split + 1], note[split + 2 :]
    verified = False
    for line in signatures.rstrip("\n").split("\n"):
        if not line.startswith("\u2014 "):
            raise ValueError("malformed signature line")
        signer, sig = line[2:].split(" ")
        sig = base64.b64decode(sig)
        if signer == name and sig[:4] == key_id:
            public.verify(sig[4:], text.encode())  # raises on a bad signature
            verified = True
    if not verified:
        raise ValueError("no signature by the log key")
    origin, size, root = text.rstrip("\n").split("\n")[:3]
    if origin != name:
        raise ValueError("checkpoint origin is not the key name")
    if size != "0" and size.startswith("0"):
        raise ValueError("size has leading zeroes")
    return int(size), base64.b64decode(root)


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not (fn & 1) and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_root, second_root, proof):
    """RFC 9162 section 2.1.4.2."""
    if first == 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first & (first - 1) == 0:  # first is an exact power of 2
        proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not (fn & 1) and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def get(url, key=None):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req, timeout=30) as res:
        return res.read()


def main():
    server, key = sys.argv[1].rstrip("/"), sys.argv[2]
    saved = open(sys.argv[3], encoding="utf-8").read() if len(sys.argv) > 3 else None
    vkey = parse_vkey(get(server + "/v1/log/verifier-key").decode())
    size, root = open_checkpoint(get(server + "/v1/log/checkpoint").decode(), vkey)

    entries = []
    while len(entries) < size:
        start = len(entries)
        end = min(size, start + 1000)
        page = json.loads(get(f"{server}/v1/log/entries?start={start}&end={end}", key))["entries"]
        if [e["index"] for e in page] != list(range(start, end)):
            raise SystemExit(f"entries {start}..{end} are not all there")
        entries += [base64.b64decode(e["entry"]) for e in page]
    for index, entry in enumerate(entries):
        p = json.loads(get(f"{server}/v1/log/proof/inclusion?index={index}&size={size}"))
        proof = [base64.b64decode(h) for h in p["proof"]]
        if base64.b64decode(p["leaf_hash"]) != leaf_hash(entry):
            raise SystemExit(f"entry {index}: the served leaf hash is not the hash of the entry")
        if not verify_inclusion(index, size, leaf_hash(entry), proof, root):
            raise SystemExit(f"entry {index}: inclusion proof does not verify")

    summary = {"origin": vkey[0], "size": size, "entries_checked": len(entries)}
    if saved is not None:
        old_size, old_root = open_checkpoint(saved, vkey)
        if old_size < size:
            c = json.loads(get(f"{server}/v1/log/proof/consistency?from={old_size}&to={size}"))
            proof = [base64.b64decode(h) for h in c["proof"]]
            if not verify_consistency(old_size, size, old_root, root, proof):
                raise SystemExit(f"consistency from {old_size} to {size} does not verify")
        elif old_size != size or old_root != root:
            raise SystemExit("the saved checkpoint is not a prefix of the current one")
        summary["consistent_with"] = old_size
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
