#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Minimal generic-netlink client for the kernel's page pool view (netdev family).

Standard library only: this runs inside the QEMU guest with the host's Python.

It resolves the ``netdev`` family id through ``nlctrl`` and dumps
``page-pool-get`` and ``page-pool-stats-get``.  Attribute and command numbers
come from the booted kernel's own ``include/uapi/linux/netdev.h`` (parsed on the
host by make-vmcore into a JSON file), and the output uses the names of
``Documentation/netlink/specs/netdev.yaml``, i.e. what ``ynl --output-json``
prints: ``id``, ``ifindex``, ``napi-id``, ``inflight``, ``inflight-mem``,
``detach-time``, ``dmabuf``, ``io-uring``; stats: ``info: {id, ifindex}``,
``alloc-fast``, ... ``recycle-released-refcnt``.

    nlpp.py --attrs netdev-attrs.json [--netns NAME|PATH] [--stats]
"""

import ctypes
import errno
import json
import os
import sys
from pathlib import Path

# The guest mounts the checkout at its host path: the package's generic
# netlink client (standard library only; this Python has no drgn).
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from netmem_probe.genl import GenlSocket, NetlinkError, attrs, uint  # noqa: E402

CLONE_NEWNET = 0x40000000

# Attribute types from netdev.yaml: everything here is 'uint' (4 or 8 bytes) or
# 'u32', except these nests.
NESTS = {"io-uring": "io-uring-provider-info", "info": "page-pool"}


def errname(e):
    """EOPNOTSUPP (not its alias ENOTSUP, which errno.errorcode picks on Linux)."""
    if e == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(e, str(e))


def _value(b):
    """An integer attribute (1, 2, 4 or 8 bytes, host order); hex for any other size."""
    return uint(b) if len(b) in (1, 2, 4, 8) else b.hex()


class PagePoolNetlink:
    """Dumps page-pool-get / page-pool-stats-get of the netns this object was created in."""

    def __init__(self, attrs):
        self.a = attrs
        self.gs = GenlSocket()
        self.family = self.gs.family(attrs.get("family-name", "netdev"))

    def close(self):
        self.gs.close()

    def _decode(self, space, payload):
        names = {int(k): v for k, v in self.a["attrs"][space].items()}
        out = {}
        for atype, val in attrs(payload):
            name = names.get(atype, "attr-%d" % atype)
            if name in NESTS:
                out[name] = self._decode(NESTS[name], val)
            elif name == "pad":
                continue
            else:
                out[name] = _value(val)
        return out

    def page_pool_get(self):
        msgs = self.gs.request(self.family, self.a["cmds"]["page-pool-get"], dump=True)
        return [self._decode("page-pool", m) for m in msgs]

    def page_pool_stats_get(self):
        msgs = self.gs.request(self.family, self.a["cmds"]["page-pool-stats-get"], dump=True)
        return [self._decode("page-pool-stats", m) for m in msgs]


_libc = None


def setns(path_or_fd):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = path_or_fd if isinstance(path_or_fd, int) else os.open(path_or_fd, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (path_or_fd, os.strerror(e)))
    finally:
        if not isinstance(path_or_fd, int):
            os.close(fd)


def netns_path(name):
    if name in (None, "", "init_net"):
        return "/proc/1/ns/net"
    return name if "/" in name else "/run/netns/" + name


def dump_netns(attrs, nspath=None, stats=True):
    """Return {"page-pool-get": [...], "page-pool-stats-get": [...] or None, ...}."""
    if not attrs.get("cmds"):
        # a kernel before page-pool netlink (6.8): nothing to ask
        why = attrs.get("none") or "no page-pool netlink commands"
        return {
            "page-pool-get": None,
            "page-pool-get-error": why,
            "page-pool-stats-get": None,
            "page-pool-stats-get-error": why,
        }
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if nspath:
            setns(nspath)
        try:
            nl = PagePoolNetlink(attrs)
        finally:
            if nspath:
                setns(home)
    finally:
        os.close(home)
    res = {}
    try:
        res["page-pool-get"] = nl.page_pool_get()
    except NetlinkError as e:
        res["page-pool-get"] = None
        res["page-pool-get-error"] = errname(e.errno)
    if stats:
        try:
            res["page-pool-stats-get"] = nl.page_pool_stats_get()
        except NetlinkError as e:
            res["page-pool-stats-get"] = None
            res["page-pool-stats-get-error"] = errname(e.errno)
    nl.close()
    return res


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attrs", required=True, help="netdev-attrs.json from make-vmcore")
    ap.add_argument("--netns", help="netns name (in /run/netns) or path; default: current")
    ap.add_argument("--stats", action="store_true", help="also dump page-pool-stats-get")
    args = ap.parse_args(argv)
    with open(args.attrs) as f:
        attrs = json.load(f)
    json.dump(
        dump_netns(attrs, netns_path(args.netns) if args.netns else None, args.stats),
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
