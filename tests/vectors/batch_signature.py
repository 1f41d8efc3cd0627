#!/usr/bin/env python3
"""Writes batch-signature.json: known answers for the batch signature of docs/protocol.md
5.6, computed here from the spec alone (hashlib and the cryptography package's Ed25519),
not with refex's code. Three envelope headers and two receipts, mixed in one tree of five.
Run: python3 tests/vectors/batch_signature.py > tests/vectors/batch-signature.json"""
import hashlib
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wt, payload):
    tag = varint(num << 3 | wt)
    if wt == 0:
        return tag + varint(payload)
    return tag + varint(len(payload)) + payload


def header(i):
    return (field(1, 0, 1) + field(2, 2, bytes([0x10 + i] * 16)) + field(3, 2, b"midwifery") +
            field(4, 2, b"social-care") + field(5, 0, 1) + field(6, 2, b"case-%d" % i) +
            field(7, 0, 1700000000000 + i) + field(8, 0, 1700604800000 + i) +
            field(9, 2, bytes([0x30 + i] * 24)) + field(10, 2, bytes([0x50 + i] * 32)) +
            field(11, 2, bytes([0x70 + i] * 32)))


def receipt(i):
    return (field(1, 0, 1) + field(2, 2, bytes([0x90 + i] * 16)) + field(3, 2, b"police") +
            field(4, 2, b"midwifery") + field(6, 0, 1700000001000 + i) +
            field(7, 2, bytes([0xb0 + i] * 32)) + field(8, 2, b"midwifery"))


def sha(b):
    return hashlib.sha256(b).digest()


def leaf(context, data):
    return sha(b"\x00" + context + b"\x00" + sha(data))


def node(l, r):
    return sha(b"\x01" + l + r)


def mth(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def path(leaves, m):
    """RFC 9162 2.1.3.1 PATH(m, D[n]), leaf upwards."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return path(leaves[:k], m) + [mth(leaves[k:])]
    return path(leaves[k:], m - k) + [mth(leaves[:k])]


items = [("envelope", header(0)), ("receipt", receipt(0)), ("envelope", header(1)),
         ("receipt", receipt(1)), ("envelope", header(2))]
ctx = {"envelope": b"refex/envelope/v2", "receipt": b"refex/receipt/v2"}
leaves = [leaf(ctx[k], b) for k, b in items]
root = mth(leaves)
n = len(leaves)
msg = b"refex/batch/v1\x00" + n.to_bytes(8, "big") + root
seed = bytes(range(0x40, 0x60))
sk = Ed25519PrivateKey.from_private_bytes(seed)
pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
sig = sk.sign(msg)
doc = {
    "description": "Batch signature known answers (docs/protocol.md 5.6): five items, "
                   "envelope headers and receipts mixed, one Ed25519 root signature.",
    "seed": seed.hex(),
    "public_key": pk.hex(),
    "tree_size": n,
    "items": [{"kind": k, "bytes": b.hex(), "leaf": leaves[i].hex(), "leaf_index": i,
               "path": [p.hex() for p in path(leaves, i)]} for i, (k, b) in enumerate(items)],
    "root": root.hex(),
    "signed_message": msg.hex(),
    "root_signature": sig.hex(),
}
json.dump(doc, sys.stdout, indent=2)
sys.stdout.write("\n")
