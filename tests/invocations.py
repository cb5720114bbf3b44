"""
Command lines that exercise every command on a bundled fixture: what the
JSON contract tests (keys, schema, ``--drgn`` records) run.  Arguments come
from the fixture's ``expected.json`` where it has them, else from what the
fixture holds (its pools), plus values that name nothing valid.
"""

from typing import Dict, List

from conftest import expected

# netmem_ref values no fixture has anything at: NULL with the NET_IOV bit,
# the top of the address space, a misaligned struct page address.
BAD_NETMEMS = ["0x1", "0xffffffffffffffff", "0xffffea0000000001"]


def _key(pool: Dict) -> str:
    """How a command names a pool: its id, or its address (no ids before Linux 6.8)."""
    return str(pool["id"]) if pool["id"] is not None else pool["address"]


def _pool_ids(truth: Dict) -> List[str]:
    return [_key(pool) for pool in truth.get("pools", [])]


def invocations(name: str) -> List[List[str]]:
    """Every command, with the arguments that make it report something on ``name``."""
    truth = expected(name)
    pools = truth.get("pools", [])
    ids = _pool_ids(truth)
    detached = [_key(p) for p in pools if p["detached"] and p["inflight"]]
    netmems = [d["netmem"] for d in truth.get("decode", []) + truth.get("decode-niovs", [])]
    held = [h["netmem"] for h in truth.get("holders", [])]
    lines: List[List[str]] = [
        ["pools"],
        ["pools", "--state", "detached", "--sort", "detach-age"],
        ["layout"],
        ["decode", *(netmems[:6] + BAD_NETMEMS)],
        ["pages"],
        ["pages", "--all-pools"],
        ["pages", "--all-pools", "--count"],
        ["leaks"],
        ["providers"],
        ["niovs"],
    ]
    # pool: the first and last, and a detached one, by id and by address.
    chosen = dict.fromkeys([*ids[:1], *ids[-1:], *detached[:1]])
    lines += [["pool", str(i)] for i in chosen]
    if pools:
        lines.append(["pool", pools[-1]["address"]])
    if detached:
        lines.append(["pool", str(detached[-1]), "--holders"])
        lines.append(["leaks", "--pool", str(detached[-1])])
        lines.append(["pages", "--pool", str(detached[-1])])
    # A pool that is not detached: leaks has nothing to judge.
    if ids:
        lines.append(["leaks", "--pool", str(ids[0])])
    lines.append(["holders", *(held[:8] or [p["address"] for p in pools[:1]])])
    return lines
