#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest side of scripts/realkernel/make-vmcore.

Runs inside the QEMU guest, chrooted into the host's / (9p, read-only), with the
host's python, iproute2 and the project's venv.  Talks to the host through files
in the writable output share (--out):

  guest -> host: listening, warm, guest-truth.json, ready, live-*.json, live-done, error
  host -> guest: config.json (before boot), sent, go-live

It creates page pools in every visibility state the kernel has (see
scripts/realkernel/README.md, "Scenario"), keeps pages in flight with unread
sockets, records the kernel's own netlink view in every namespace, and then
keeps everything alive until QEMU is stopped.
"""

with open("/proc/uptime") as _f:
    _T_START = float(_f.read().split()[0])
import argparse  # noqa: E402
import contextlib
import ctypes
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
import traceback
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nlpp  # noqa: E402

_T_IMPORTED = float(open("/proc/uptime").read().split()[0])
OUT = ""  # the output share and the host's config.json, set by main()
CFG: Dict[str, Any] = {}
TIMINGS: Dict[str, float] = {}
SCENARIO: List[Dict[str, Any]] = []
KEEP: List[Any] = []  # sockets and processes that must stay alive through the dump
DELETED_NETNS: Dict[str, int] = {}
VETH_DATAGRAMS = 24
DGRAM = 1200
SO_MEMINFO = 55
SO_RCVBUFFORCE = 33


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def log(msg):
    print("netmem-scenario [%8.2f] %s" % (uptime(), msg), flush=True)


@contextlib.contextmanager
def step(name):
    t = time.monotonic()
    log("step %s" % name)
    yield
    TIMINGS[name] = round(time.monotonic() - t, 2)


def touch(name, data=""):
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, os.path.join(OUT, name))


def wait_for(cond, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        r = cond()
        if r:
            return r
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %s s waiting for %s" % (timeout, what))
        time.sleep(interval)


def sh(*cmd, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    return p.stdout


def ip(*args, ns=None, check=True):
    pre = ["ip"] + (["-n", ns] if ns else [])
    return sh(*(pre + list(args)), check=check)


def ipb(lines, ns=None):
    """ip -batch: one exec for many commands."""
    t = time.monotonic()
    pre = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    p = subprocess.run(
        pre,
        input="\n".join(lines) + "\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(pre), p.returncode, p.stderr.strip()))
    log(
        "  ip%s -batch (%d commands): %.2f s"
        % (" -n " + ns if ns else "", len(lines), time.monotonic() - t)
    )


MNT_DETACH = 2


def netns_del(name):
    """Like ip netns del, but also copes with stacked bind mounts (busybox unshare
    --net=FILE plus the mount --move of /run leave more than one)."""
    path = nspath(name)
    errs = []
    for _ in range(8):
        if _libc.umount2(path.encode(), MNT_DETACH) != 0:
            errs.append(os.strerror(ctypes.get_errno()))
            break
        errs.append("ok")
    try:
        os.unlink(path)
    except OSError as e:
        mi = [line.strip() for line in open("/proc/self/mountinfo") if "netns" in line]
        raise RuntimeError(
            "netns del %s: %s (umount2: %s; mountinfo: %s)" % (name, e, errs, mi)
        ) from e


def nspath(ns):
    return nlpp.netns_path(ns)


@contextlib.contextmanager
def in_netns(ns):
    if not ns:
        yield
        return
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        nlpp.setns(nspath(ns))
        yield
    finally:
        nlpp.setns(home)
        os.close(home)


def inum(ns):
    return os.stat(nspath(ns)).st_ino


def sysctl(ns, key, value):
    with in_netns(ns):
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))


def netns_add(name):
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", ns=name)
    for k in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
        sysctl(name, k, 0)


# ---------------------------------------------------------------- sockets
def sink(ns, addr, port):
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        s.bind((addr, port))
    KEEP.append(s)
    return s


def meminfo(s):
    v = struct.unpack("9I", s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))
    return {"rmem_alloc": v[0], "rcvbuf": v[1], "drops": v[8]}


def send_udp(ns, dst, port, n, size=DGRAM):
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(n):
        s.sendto(b"V" * size, (dst, port))
    s.close()


def settle(socks, quiet=1.0, timeout=20):
    """Wait until the sockets' rmem stops changing for `quiet` seconds."""
    last, since = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur = [meminfo(s)["rmem_alloc"] for s in socks]
        if cur != last:
            last, since = cur, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return cur
        time.sleep(0.1)
    return last


# ---------------------------------------------------------------- TCP out-of-order queue
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
OFO_SEGMENTS, OFO_BYTES = 4, 1000
OFO_SERVER: List[socket.socket] = []  # the server socket whose out-of-order queue holds pages


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_ofo(ns, addr, port):
    """A TCP connection from init_net to a listener in `ns` whose out-of-order queue
    holds OFO_SEGMENTS segments: the client's sequence numbers are read in repair
    mode, then segments beyond a hole are sent with a raw socket, so the server
    queues them in tp->out_of_order_queue for ever (the hole is never filled).
    With XDP on the receiving veth, their memory is the veth pool's pages."""
    with in_netns(ns):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.bind((addr, port))
        ls.listen(1)
    # No timestamps: the raw segments carry no TCP options.
    sysctl(None, "net.ipv4.tcp_timestamps", 0)
    try:
        c = socket.create_connection((addr, port), timeout=10)
    finally:
        sysctl(None, "net.ipv4.tcp_timestamps", 1)
    srv, _ = ls.accept()
    KEEP.extend([ls, srv, c])
    OFO_SERVER.append(srv)
    c.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    seqs = {}
    for name, queue in (("snd", TCP_SEND_QUEUE), ("rcv", TCP_RECV_QUEUE)):
        c.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        seqs[name] = c.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF
    src, sport = c.getsockname()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    payload = b"O" * OFO_BYTES
    for i in range(OFO_SEGMENTS):
        seq = (seqs["snd"] + (2 * i + 1) * OFO_BYTES) & 0xFFFFFFFF  # a hole before each
        hdr = struct.pack("!HHIIBBHHH", sport, port, seq, seqs["rcv"], 5 << 4, 0x18, 65535, 0, 0)
        pseudo = (
            socket.inet_aton(src)
            + socket.inet_aton(addr)
            + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(hdr) + len(payload))
        )
        csum = _csum(pseudo + hdr + payload)
        raw.sendto(hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload, (addr, 0))
    raw.close()
    wait_for(lambda: meminfo(srv)["rmem_alloc"] > 0, 10, "out-of-order segments queued")
    settle([srv], quiet=0.5, timeout=10)
    return {
        "netns": ns,
        "server": "%s:%d" % (addr, port),
        "client": "%s:%d" % (src, sport),
        "segments": OFO_SEGMENTS,
        "bytes": OFO_SEGMENTS * OFO_BYTES,
        "server_fd": srv.fileno(),
        "server_meminfo": meminfo(srv),
    }


# ---------------------------------------------------------------- XDP (raw bpf syscall)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
NR_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]  # __NR_bpf
BPF_PROG_LOAD, BPF_OBJ_PIN = 5, 6
BPF_PROG_TYPE_XDP = 6


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr + b"\0" * (144 - len(attr)))
    r = _libc.syscall(NR_BPF, cmd, buf, ctypes.c_uint(144))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, "bpf(%d): %s" % (cmd, os.strerror(e)))
    return r


def load_xdp_pass(pin):
    """r0 = XDP_PASS (2); exit.  Loaded with bpf(BPF_PROG_LOAD), pinned at `pin`."""
    insns = ctypes.create_string_buffer(
        struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    )
    lic = ctypes.create_string_buffer(b"GPL")
    logbuf = ctypes.create_string_buffer(1 << 16)
    attr = struct.pack(
        "<IIQQIIQII16sII",
        BPF_PROG_TYPE_XDP,
        2,
        ctypes.addressof(insns),
        ctypes.addressof(lic),
        1,
        len(logbuf),
        ctypes.addressof(logbuf),
        0,
        0,
        b"netmem_xdp_pass",
        0,
        0,
    )
    try:
        fd = bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        raise RuntimeError(
            "%s; verifier log: %s" % (e, logbuf.value.decode(errors="replace"))
        ) from e
    path = ctypes.create_string_buffer(pin.encode())
    bpf(BPF_OBJ_PIN, struct.pack("<QII", ctypes.addressof(path), fd, 0))
    KEEP.append(fd)
    return pin


def xdp_attach(ns, ifname, pin):
    ip("link", "set", "dev", ifname, "xdpdrv", "pinned", pin, ns=ns)


# ---------------------------------------------------------------- GRO via SIOCETHTOOL
SIOCETHTOOL = 0x8946
ETHTOOL_GSSET_INFO, ETHTOOL_GSTRINGS, ETHTOOL_SFEATURES = 0x37, 0x1B, 0x3B
ETH_SS_FEATURES = 4


def _ethtool(sock, ifname, buf):
    ifr = struct.pack("16sQ", ifname.encode(), ctypes.addressof(buf)) + b"\0" * 16
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)


def set_gro(ns, ifname, on=True):
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        b = ctypes.create_string_buffer(
            struct.pack("<IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0)
        )
        _ethtool(s, ifname, b)
        n = struct.unpack_from("<I", b.raw, 16)[0]
        b = ctypes.create_string_buffer(
            struct.pack("<III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, n) + b"\0" * (32 * n)
        )
        _ethtool(s, ifname, b)
        names = [b.raw[12 + 32 * i : 12 + 32 * (i + 1)].split(b"\0")[0].decode() for i in range(n)]
        bit = names.index("rx-gro")
        words = (n + 31) // 32
        blocks = [[0, 0] for _ in range(words)]
        blocks[bit // 32][0] |= 1 << (bit % 32)
        if on:
            blocks[bit // 32][1] |= 1 << (bit % 32)
        b = ctypes.create_string_buffer(
            struct.pack("<II", ETHTOOL_SFEATURES, words)
            + b"".join(struct.pack("<II", *x) for x in blocks)
        )
        _ethtool(s, ifname, b)
    finally:
        s.close()


# ---------------------------------------------------------------- links / truth
def links(ns):
    try:
        data = json.loads(ip("-j", "-d", "link", "show", ns=None if ns == "init_net" else ns))
    except Exception as e:  # noqa: BLE001
        return [{"error": str(e)}]
    out = []
    for link in data:
        kind = (link.get("linkinfo") or {}).get("info_kind")
        driver = None
        if kind:
            driver = kind
        elif link.get("parentbus") == "virtio" and link.get("parentdev"):
            p = "/sys/bus/virtio/devices/%s/driver" % link["parentdev"]
            driver = os.path.basename(os.readlink(p)) if os.path.islink(p) else None
        out.append(
            {
                "ifindex": link.get("ifindex"),
                "ifname": link.get("ifname"),
                "address": link.get("address"),
                "operstate": link.get("operstate"),
                "kind": kind,
                "driver": driver,
                "parentdev": link.get("parentdev"),
                "xdp": (link.get("xdp") or {}).get("prog", {}).get("id")
                if isinstance(link.get("xdp"), dict)
                else None,
            }
        )
    return out


def ifindex(ns, ifname):
    for link in links(ns):
        if link.get("ifname") == ifname:
            return link["ifindex"]
    return None


def netns_names():
    names = ["init_net"]
    if os.path.isdir("/run/netns"):
        names += sorted(os.listdir("/run/netns"))
    return names


def clocks():
    up, idle = open("/proc/uptime").read().split()
    return {
        "uptime": float(up),
        "uptime_idle": float(idle),
        "boottime_ns": time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        "monotonic_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC),
        "realtime": time.time(),
    }


_KSYMS = None


def ksym(name):
    """Whether the running kernel (or a loaded module) has symbol ``name``."""
    global _KSYMS
    if _KSYMS is None:
        with open("/proc/kallsyms") as f:
            _KSYMS = {line.split()[2] for line in f if len(line.split()) >= 3}
    return name in _KSYMS


# ---------------------------------------------------------------- pp_test (c/pp_test)
NR_FINIT_MODULE = 313
PP_PARAMS = "/sys/module/pp_test/parameters/"
PP_DST, PP_SRC, PP_PORT = "10.99.0.1", "10.99.0.2", 7000
# pool 4's pages held in a CPU's backlog through the dump (hold_backlog())
BACKLOG_POOL, BACKLOG_PAGES, BACKLOG_CPU, BACKLOG_MS = 4, 8, 1, 5000


def pp_cmd(text):
    with open(PP_PARAMS + "cmd", "w") as f:
        f.write(text)


def run_pp_test():
    """
    Page pools the way a driver makes them, with the pp_test module on its own
    device pptest0 (for kernels whose drivers make none under QEMU): pool 0
    hands out pages in skbs to an unread socket, keeps some in the module's
    array and gets some back in its ring; pool 1 hands out pages and is
    destroyed while they are out; pool 2's pages wait in pptest0's qdisc, its
    tx queue stopped (one requeued as the qdisc's gso_skb, the rest in the
    default qdisc's queue); pool 3's wait in pptest1's fq qdisc, its tx queue
    stopped too: the first ones in fq's fast-path flow (``internal``), the
    rest, stamped to leave each earlier than the one before, in one flow's
    list (the first) and time-ordered rbtree.  Returns the module's own account.
    """
    fd = os.open(CFG["pp_test_ko"], os.O_RDONLY)
    try:
        params = ("dst=%s src=%s port=%d" % (PP_DST, PP_SRC, PP_PORT)).encode()
        if _libc.syscall(NR_FINIT_MODULE, fd, ctypes.c_char_p(params), 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "finit_module(%s): %s" % (CFG["pp_test_ko"], os.strerror(e)))
    finally:
        os.close(fd)
    try:  # no IPv6 autoconf packets in pptest1's qdisc beside pool 3's
        with open("/proc/sys/net/ipv6/conf/pptest1/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    ipb(["addr add %s/24 dev pptest0" % PP_DST, "link set pptest0 up", "link set pptest1 up"])
    s = sink(None, PP_DST, PP_PORT)
    rx0, hold0, back0, rx1 = 24, 8, 8, 16
    pp_cmd("pool 0")
    pp_cmd("rx 0 %d" % rx0)
    pp_cmd("hold 0 %d" % hold0)
    settle([s], quiet=0.5, timeout=10)
    s.setblocking(False)
    for _ in range(back0):  # their pages go back into pool 0's ring
        s.recv(65536)
    pp_cmd("pool 1")
    pp_cmd("rx 1 %d" % rx1)
    pp_cmd("destroy 1")
    settle([s], quiet=0.5, timeout=10)
    tx2 = 12
    pp_cmd("pool 2")
    pp_cmd("tx 2 %d" % tx2)
    try:  # for the log: what the qdisc says it holds
        qdisc = sh("tc", "-s", "qdisc", "show", "dev", "pptest0", check=False)
    except OSError as e:
        qdisc = "tc: %s" % e
    # sch_fq (a module: make-vmcore loads it) as pptest1's root qdisc
    fast3, timed3 = 4, 6
    pp_cmd("pool 3")
    try:
        sh("tc", "qdisc", "replace", "dev", "pptest1", "root", "fq")
        fq = sh("tc", "qdisc", "show", "dev", "pptest1")
    except (OSError, RuntimeError) as e:
        fq = "tc: %s" % e
    fq3 = None
    if fq.startswith("qdisc fq "):
        pp_cmd("tx 3 %d 1" % fast3)
        pp_cmd("tx 3 %d 1 1000" % timed3)
        fq3 = fast3 + timed3
        fq = sh("tc", "-s", "qdisc", "show", "dev", "pptest1", check=False)
    # pool 4: pages the module keeps until hold_backlog() puts them in a backlog
    pp_cmd("pool %d" % BACKLOG_POOL)
    pp_cmd("stage %d %d" % (BACKLOG_POOL, BACKLOG_PAGES))
    with open(PP_PARAMS + "state") as f:
        state = f.read()
    pools, held_pages = [], []
    for line in state.splitlines():
        w = line.split()
        if w[0] == "pool":
            pools.append(
                {
                    "n": int(w[1]),
                    "address": hex(int(w[2], 16)),
                    "hold": int(w[3]),
                    "release": int(w[4]) & 0xFFFFFFFF,
                    "destroyed": w[5] == "1",
                    "inflight": (int(w[3]) - int(w[4])) & 0xFFFFFFFF,
                }
            )
        elif w[0] == "held":
            held_pages.append({"pool": int(w[1]), "page": hex(int(w[2], 16))})
    res = {
        "pools": pools,
        "held": held_pages,
        "sink": meminfo(s),
        "ifindex": ifindex("init_net", "pptest0"),
        "datagrams": {
            "pool0": rx0,
            "pool0-read-back": back0,
            "pool1": rx1,
            "pool2-qdisc": tx2,
            "pool3-fq": fq3,
        },
        "qdisc": qdisc,
        "fq": fq,
        "sink_queued": rx0 - back0 + rx1,
    }
    log("pp_test: %s" % json.dumps(res)[:400])
    return res


def hold_backlog():
    """
    Right before the dump: pp_test's work item on CPU BACKLOG_CPU receives the
    pages it staged for pool BACKLOG_POOL on pptest0 with that CPU's bottom
    halves off, so they wait in its backlog (input_pkt_queue) for BACKLOG_MS,
    long past the host's stop (it stops the guest as soon as "ready" appears,
    polling every 0.1 s).  This process moves to another CPU first.  Returns
    what the module says it queued, and when.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if BACKLOG_CPU not in cpus or len(cpus) < 2:
        return {"pool": BACKLOG_POOL, "cpu": None, "queued": None, "note": "CPUs %s" % cpus}
    os.sched_setaffinity(0, [c for c in cpus if c != BACKLOG_CPU])
    t0 = uptime()
    pp_cmd("backlog %d %d %d" % (BACKLOG_POOL, BACKLOG_MS, BACKLOG_CPU))

    def line():
        with open(PP_PARAMS + "state") as f:
            for text in f.read().splitlines():
                w = text.split()
                if w[0] == "backlog" and int(w[2]) >= 0:
                    return {"queued": int(w[2]), "done": w[3] == "1"}
        return None

    wait_for(line, 5, "pp_test's backlog work", interval=0.01)
    got = line()
    return {
        "pool": BACKLOG_POOL,
        "cpu": BACKLOG_CPU,
        "hold_ms": BACKLOG_MS,
        "staged": BACKLOG_PAGES,
        "queued": got["queued"],
        "done_at_check": got["done"],
        "queued_after_s": round(uptime() - t0, 3),
    }


def netlink_all(with_links=True):
    res = []
    for ns in netns_names():
        entry = {"name": ns, "inum": inum(None if ns == "init_net" else ns)}
        if with_links:
            entry["links"] = links(ns)
        d = nlpp.dump_netns(CFG["attrs"], None if ns == "init_net" else nspath(ns), stats=True)
        entry.update(d)
        res.append(entry)
    return res


def held(n):
    """Datagrams a sink was meant to hold, and the pages that takes at least: each
    DGRAM-byte datagram lies in one page fragment (virtio's mergeable buffers, veth's
    XDP conversion), so a page holds at most PAGE_SIZE // DGRAM of them. How many
    share one in fact depends on the driver's buffer size: 2 on 4 KiB pages, 9 on
    16 KiB ones with virtio_net on 7.3."""
    per_page = os.sysconf("SC_PAGE_SIZE") // DGRAM
    return {"meant_to_hold_datagrams": n, "meant_to_hold_pages_min": -(-n // per_page)}


def add(**kw):
    SCENARIO.append(kw)
    return kw


# ---------------------------------------------------------------- scenario
def nic_by_mac(mac, ns=None):
    for link in links(ns or "init_net"):
        if (link.get("address") or "").lower() == mac.lower():
            return link
    return None


def main():
    global OUT, CFG
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    OUT = args.out
    with open(os.path.join(OUT, "config.json")) as f:
        CFG = json.load(f)
    try:
        with open("/run/netmem-init.json") as f:
            init = json.load(f)
    except OSError:
        init = {}
    log(
        "kernel %s; python started at %.2f s, imports done at %.2f s; init: %s"
        % (os.uname().release, _T_START, _T_IMPORTED, init)
    )
    nics = {n["role"]: n for n in CFG["nics"]}
    virtio_pp = bool(init.get("virtio_page_pools"))
    pm_done = init.get("pm_cycle") == "done"

    with step("setup-netns"):
        # batched: every exec of ip over 9p costs ~0.2 s under TCG
        ipb(
            [
                "netns add %s" % ns
                for ns in ("pp-keep", "pp-xdp", "pp-gro-b", "pp-gro-c", "pp-detach", "pp-dying")
            ]
        )
        for ns in netns_names():
            nsname = None if ns == "init_net" else ns
            for k in ("all", "default"):
                sysctl(nsname, "net.ipv4.conf.%s.rp_filter" % k, 0)
        nsinum = {ns: inum(ns) for ns in netns_names() if ns != "init_net"}
        nsinum["init_net"] = inum(None)

    with step("setup-links"):
        l0 = nic_by_mac(nics["listed"]["mac"])
        l1 = nic_by_mac(nics["orphan"]["mac"])
        lp = nic_by_mac(nics["poison"]["mac"], "pp-poison")
        if not (l0 and l1 and lp):
            raise RuntimeError("virtio NICs not found: %s %s %s" % (l0, l1, lp))
        eth0, eth1, ethp = l0["ifname"], l1["ifname"], lp["ifname"]
        pin = load_xdp_pass("/run/netmem-bpf/xdp_pass")
        xdp = "link set dev %s xdpdrv pinned " + pin
        ipb(
            [
                "link set lo up",
                "addr add %s/24 dev %s" % (nics["listed"]["guest_ip"], eth0),
                "link set %s up" % eth0,
                "addr add %s/24 dev %s" % (nics["orphan"]["guest_ip"], eth1),
                "link set %s up" % eth1,
                # pp-poison: ethp receives for 10.0.4.20 (proxy ARP) and forwards it over
                # veth pz0 -> pz1 into pp-keep, where the sink holds the skbs.
                "link add pz0 netns pp-poison type veth peer name pz1 netns pp-keep",
                # pp-xdp: XDP on the receiving end vxa1; sender in init_net
                "link add vxa0 type veth peer name vxa1 netns pp-xdp",
                "addr add 10.77.1.1/24 dev vxa0",
                "link set vxa0 up",
                # pp-gro-b <-> pp-gro-c: XDP on vgb0 (b), GRO only on vgc0 (c)
                "link add vgb0 netns pp-gro-b type veth peer name vgc0 netns pp-gro-c",
                # pp-detach: XDP on vd0; the pair is deleted later
                "link add vd1 type veth peer name vd0 netns pp-detach",
                "addr add 10.77.3.1/24 dev vd1",
                "link set vd1 up",
                # pp-dying: XDP on vn0, forwarded over vm0 -> vm1 into pp-keep; deleted later
                "link add vn1 type veth peer name vn0 netns pp-dying",
                "addr add 10.77.4.1/24 dev vn1",
                "link set vn1 up",
                "link add vm0 netns pp-dying type veth peer name vm1 netns pp-keep",
                "route add 10.77.5.0/24 via 10.77.4.2",
            ]
        )
        ipb(
            [
                "link set lo up",
                "addr add %s/24 dev %s" % (nics["poison"]["guest_ip"], ethp),
                "link set %s up" % ethp,
                "link set pz0 up",
                "route add %s/32 dev pz0" % nics["poison"]["fwd_ip"],
            ],
            ns="pp-poison",
        )
        sysctl("pp-poison", "net.ipv4.ip_forward", 1)
        sysctl("pp-poison", "net.ipv4.conf.%s.proxy_arp" % ethp, 1)
        ipb(
            [
                "link set lo up",
                "addr add %s/24 dev pz1" % nics["poison"]["fwd_ip"],
                "link set pz1 up",
                "addr add 10.77.5.2/24 dev vm1",
                "link set vm1 up",
                "route add default via 10.77.5.1",
            ],
            ns="pp-keep",
        )
        ipb(
            ["link set lo up", "addr add 10.77.1.2/24 dev vxa1", "link set vxa1 up", xdp % "vxa1"],
            ns="pp-xdp",
        )
        ipb(
            ["link set lo up", "addr add 10.77.2.1/24 dev vgb0", "link set vgb0 up", xdp % "vgb0"],
            ns="pp-gro-b",
        )
        ipb(["link set lo up", "addr add 10.77.2.2/24 dev vgc0", "link set vgc0 up"], ns="pp-gro-c")
        ipb(
            ["link set lo up", "addr add 10.77.3.2/24 dev vd0", "link set vd0 up", xdp % "vd0"],
            ns="pp-detach",
        )
        sysctl("pp-dying", "net.ipv4.ip_forward", 1)
        ipb(
            [
                "link set lo up",
                "addr add 10.77.4.2/24 dev vn0",
                "link set vn0 up",
                "addr add 10.77.5.1/24 dev vm0",
                "link set vm0 up",
                xdp % "vn0",
            ],
            ns="pp-dying",
        )
        gro_err = None
        try:
            set_gro("pp-gro-c", "vgc0", True)
        except Exception as e:  # noqa: BLE001
            gro_err = repr(e)
            log("GRO on vgc0 failed: %s" % gro_err)
        s_eth0 = sink(None, nics["listed"]["guest_ip"], nics["listed"]["port"])
        s_eth1 = sink(None, nics["orphan"]["guest_ip"], nics["orphan"]["port"])
        s_ethp = sink("pp-keep", nics["poison"]["fwd_ip"], nics["poison"]["port"])
        virtio_socks = [s_eth0, s_eth1, s_ethp]
        touch("listening")
        s_xdp = sink("pp-xdp", "10.77.1.2", 9101)
        s_grob = sink("pp-gro-b", "10.77.2.1", 9102)
        s_groc = sink("pp-gro-c", "10.77.2.2", 9103)
        s_det = sink("pp-detach", "10.77.3.2", 9104)
        s_dying = sink("pp-keep", "10.77.5.2", 9105)
        veth_idx = {
            "vxa1": ifindex("pp-xdp", "vxa1"),
            "vgb0": ifindex("pp-gro-b", "vgb0"),
            "vgc0": ifindex("pp-gro-c", "vgc0"),
            "vd0": ifindex("pp-detach", "vd0"),
            "vn0": ifindex("pp-dying", "vn0"),
        }

    with step("veth-traffic"):
        send_udp(None, "10.77.1.2", 9101, VETH_DATAGRAMS)
        send_udp("pp-gro-c", "10.77.2.1", 9102, VETH_DATAGRAMS)
        send_udp("pp-gro-b", "10.77.2.2", 9103, VETH_DATAGRAMS)
        send_udp(None, "10.77.3.2", 9104, VETH_DATAGRAMS)
        # warm the forwarding path (ARP) first, then the real batch
        send_udp(None, "10.77.5.2", 9105, 1)
        wait_for(lambda: meminfo(s_dying)["rmem_alloc"] > 0, 10, "forwarded veth traffic")
        send_udp(None, "10.77.5.2", 9105, VETH_DATAGRAMS - 1)
        veth_socks = [s_xdp, s_grob, s_groc, s_det, s_dying]
        settle(veth_socks, quiet=0.5, timeout=10)

    with step("tcp-ofo"):
        ofo = tcp_ofo("pp-xdp", "10.77.1.2", 5201)
        log("tcp-ofo: %s" % ofo)

    with step("virtio-traffic"):
        wait_for(
            lambda: all(meminfo(s)["rmem_alloc"] > 0 for s in virtio_socks),
            90,
            "host warm-up datagrams on all virtio sinks: %s" % [meminfo(s) for s in virtio_socks],
        )
        touch("warm")
        wait_for(lambda: os.path.exists(os.path.join(OUT, "sent")), 60, "host batch")
        with open(os.path.join(OUT, "sent")) as f:
            sent = json.load(f)
        settle(virtio_socks, quiet=1.0, timeout=20)

    def sinkinfo(s, ns, addr, port):
        d = meminfo(s)
        d.update({"netns": ns, "addr": addr, "port": port})
        return d

    # --- destructive steps
    with step("orphan-virtio"):
        dev = os.path.basename(os.readlink("/sys/class/net/%s/device" % eth1))
        eth1_idx = ifindex("init_net", eth1)
        with open("/sys/bus/virtio/drivers/virtio_net/unbind", "w") as f:
            f.write(dev)
        wait_for(lambda: not os.path.exists("/sys/class/net/" + eth1), 20, "%s to go" % eth1)

    with step("detach-veth"):
        ip("link", "del", "vd0", ns="pp-detach")

    with step("delete-netns-dying"):
        DELETED_NETNS["pp-dying"] = nsinum["pp-dying"]
        netns_del("pp-dying")
        wait_for(
            lambda: not os.path.exists("/sys/class/net/vn1"), 60, "pp-dying cleanup (vn1 gone)"
        )

    with step("delete-netns-poison"):
        ethp_idx = lp["ifindex"]
        DELETED_NETNS["pp-poison"] = nsinum["pp-poison"]
        netns_del("pp-poison")
        back = wait_for(
            lambda: nic_by_mac(nics["poison"]["mac"]),
            60,
            "pp-poison cleanup (NIC back in init_net)",
        )
        wait_for(lambda: ip("link", "show", "pz1", ns="pp-keep", check=False) == "", 30, "pz1 gone")

    zcrx = None
    zcrx_note = CFG.get("zcrx_reason")
    if CFG.get("zcrx_bin"):
        with step("zcrx"):
            # about 10 buffers' worth (40000 bytes with 4 KiB pages), 4 handed back
            nbytes = 10 * os.sysconf("SC_PAGESIZE") - 960
            p = subprocess.Popen(
                [CFG["zcrx_bin"], str(nbytes), "4"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            KEEP.append(p)
            assert p.stdout is not None and p.stderr is not None  # PIPE
            line = p.stdout.readline()
            try:
                zcrx = json.loads(line)
            except ValueError:
                zcrx = None
                zcrx_note = "zcrx-hold printed %r (stderr %r, exit %r)" % (
                    line,
                    p.stderr.read() if p.poll() is not None else "",
                    p.poll(),
                )
            if zcrx and "error" in zcrx:
                zcrx_note = "zcrx-hold failed: %s" % zcrx
                zcrx = None
            log("zcrx: %s" % (json.dumps(zcrx)[:300] if zcrx else zcrx_note))

    # --- what the scenario meant to create
    # veth makes page pools since Linux 6.6 (the host looked in veth.ko)
    veth_pp = CFG.get("veth_page_pools", True)
    vp = virtio_pp
    no_vpp = None if vp else "virtio_net of this kernel has no page pools"
    add(
        id="system",
        kind="system",
        netns=None,
        ifname=None,
        expected_state="invisible",
        expect_netdev="NULL",
        pools="one per possible CPU (system_page_pool)",
        meant_to_hold=0,
        pool_expected=ksym("system_page_pool"),
        note="per-cpu system page pools, created at boot (Linux 6.9+)",
    )
    add(
        id="virtio-listed",
        kind="virtio_net",
        netns="init_net",
        netns_inum=nsinum.get("init_net"),
        ifname=eth0,
        ifindex=l0["ifindex"],
        mac=nics["listed"]["mac"],
        expected_state="listed",
        expect_netdev="self",
        expect_detach_time=False,
        pool_expected=vp,
        note=no_vpp,
        **held(sent["listed"]["warmup"] + sent["listed"]["batch"]),
        sink=sinkinfo(s_eth0, "init_net", nics["listed"]["guest_ip"], nics["listed"]["port"]),
    )
    add(
        id="virtio-orphan",
        kind="virtio_net",
        netns="init_net",
        netns_inum=nsinum.get("init_net"),
        ifname=eth1,
        ifindex=eth1_idx,
        mac=nics["orphan"]["mac"],
        expected_state="orphaned",
        expect_netdev="lo",
        expect_detach_time=True,
        device_deleted=True,
        pool_expected=vp,
        note=no_vpp
        or "virtio device unbound while the sink holds its pages: pools moved to "
        "lo of init_net and destroyed with pages in flight",
        **held(sent["orphan"]["warmup"] + sent["orphan"]["batch"]),
        sink=sinkinfo(s_eth1, "init_net", nics["orphan"]["guest_ip"], nics["orphan"]["port"]),
    )
    poison_note = no_vpp or (
        "pools re-created by the PM cycle while the NIC lived in pp-poison; pp-poison deleted "
        "while pp-keep holds the pages: NIC moved back to init_net (pools orphaned onto "
        "pp-poison's lo), then that lo unregistered (page_pool_unreg_netdev_wipe) -> "
        "slow.netdev = NET_PTR_POISON, unlisted; pool not destroyed (device alive)"
        if pm_done
        else "PM cycle %s (%s): the NIC's pools were created in init_net and were orphaned onto "
        "init_net's lo when the NIC moved into pp-poison"
        % (init.get("pm_cycle"), init.get("pm_cycle_detail"))
    )
    add(
        id="virtio-poison",
        kind="virtio_net",
        netns="pp-poison",
        netns_inum=DELETED_NETNS["pp-poison"],
        netns_deleted=True,
        ifname=ethp,
        ifindex=ethp_idx,
        mac=nics["poison"]["mac"],
        now_in_init_net_as=back["ifname"],
        now_ifindex=back["ifindex"],
        pool_expected=vp,
        expected_state="invisible" if pm_done else "orphaned",
        expect_netdev="NET_PTR_POISON" if pm_done else "lo",
        expect_detach_time=False,
        note=poison_note,
        pm_cycle=init.get("pm_cycle"),
        **held(sent["poison"]["warmup"] + sent["poison"]["batch"]),
        sink=sinkinfo(s_ethp, "pp-keep", nics["poison"]["fwd_ip"], nics["poison"]["port"]),
    )
    add(
        id="veth-xdp",
        kind="veth",
        netns="pp-xdp",
        netns_inum=nsinum.get("pp-xdp"),
        ifname="vxa1",
        ifindex=veth_idx["vxa1"],
        expected_state="invisible",
        expect_netdev="NULL",
        expect_detach_time=False,
        xdp=True,
        gro=False,
        pool_expected=veth_pp,
        **held(VETH_DATAGRAMS),
        sink=sinkinfo(s_xdp, "pp-xdp", "10.77.1.2", 9101),
        note="veth does not set pp_params.netdev: in the xarray, on no hlist",
    )
    add(
        id="veth-xdp-b",
        kind="veth",
        netns="pp-gro-b",
        netns_inum=nsinum.get("pp-gro-b"),
        ifname="vgb0",
        ifindex=veth_idx["vgb0"],
        expected_state="invisible",
        expect_netdev="NULL",
        expect_detach_time=False,
        xdp=True,
        gro=False,
        pool_expected=veth_pp,
        **held(VETH_DATAGRAMS),
        sink=sinkinfo(s_grob, "pp-gro-b", "10.77.2.1", 9102),
    )
    add(
        id="veth-gro-c",
        kind="veth",
        netns="pp-gro-c",
        netns_inum=nsinum.get("pp-gro-c"),
        ifname="vgc0",
        ifindex=veth_idx["vgc0"],
        expected_state="invisible",
        expect_netdev="NULL",
        expect_detach_time=False,
        xdp=False,
        gro=gro_err is None,
        pool_expected=veth_pp and gro_err is None,
        **held(0),
        gro_error=gro_err,
        sink=sinkinfo(s_groc, "pp-gro-c", "10.77.2.2", 9103),
        note="GRO only: NAPI + page pool exist, but skbs are not converted, so no pool pages "
        "are used (the sink holds %d datagrams of other memory)" % VETH_DATAGRAMS,
    )
    add(
        id="veth-detached",
        kind="veth",
        netns="pp-detach",
        netns_inum=nsinum.get("pp-detach"),
        ifname="vd0",
        ifindex=veth_idx["vd0"],
        expected_state="detached",
        expect_netdev="NULL",
        expect_detach_time=True,
        device_deleted=True,
        xdp=True,
        pool_expected=veth_pp,
        **held(VETH_DATAGRAMS),
        sink=sinkinfo(s_det, "pp-detach", "10.77.3.2", 9104),
        note="veth pair deleted while the sink in pp-detach holds the pages: pool destroyed "
        "with pages in flight; p.dev is a dangling pointer",
    )
    add(
        id="veth-netns-deleted",
        kind="veth",
        netns="pp-dying",
        netns_inum=DELETED_NETNS["pp-dying"],
        netns_deleted=True,
        ifname="vn0",
        ifindex=veth_idx["vn0"],
        expected_state="detached",
        expect_netdev="NULL",
        expect_detach_time=True,
        device_deleted=True,
        xdp=True,
        pool_expected=veth_pp,
        **held(VETH_DATAGRAMS),
        sink=sinkinfo(s_dying, "pp-keep", "10.77.5.2", 9105),
        note="pages converted by XDP on vn0 and forwarded into pp-keep; pp-dying deleted while "
        "pp-keep holds them: invisible and detached, its netns gone",
    )

    pp_test = None
    if CFG.get("pp_test_ko"):
        with step("pp-test"):
            pp_test = run_pp_test()

    with step("record"):
        time.sleep(1.0)
        c0 = clocks()
        ns_dump = netlink_all()
        c1 = clocks()
        for ns in ns_dump:
            log(
                "netns %-10s inum %s: %d pools via netlink %s"
                % (
                    ns["name"],
                    ns["inum"],
                    len(ns.get("page-pool-get") or []),
                    [
                        (p.get("id"), p.get("ifindex"), p.get("inflight"), p.get("detach-time"))
                        for p in ns.get("page-pool-get") or []
                    ],
                )
            )
    if pp_test:
        with step("pp-test-backlog"):
            pp_test["backlog"] = hold_backlog()
            log("pp_test backlog: %s" % pp_test["backlog"])
    truth = {
        "init": init,
        "netns": ns_dump,
        "deleted_netns": [{"name": k, "inum": v} for k, v in DELETED_NETNS.items()],
        "scenario": SCENARIO,
        "zcrx": zcrx,
        "pp_test": pp_test,
        "pp_test_note": None if pp_test else CFG.get("pp_test_reason"),
        "zcrx_note": zcrx_note if not zcrx else None,
        # What holders must name: this process owns every sink (their fds) and
        # the TCP connection whose out-of-order queue holds veth pool pages.
        "holders": {
            "scenario_pid": os.getpid(),
            "sink_fds": {
                "%s:%d" % s.getsockname(): s.fileno()
                for s in KEEP
                if isinstance(s, socket.socket) and s.type == socket.SOCK_DGRAM
            },
            "tcp_ofo": ofo,
        },
        "clock_at_netlink_dump": {"before": c0, "after": c1},
        "uptime": c1["uptime"],
        "boottime_ns": c1["boottime_ns"],
        "page_pool_stats": CFG.get("page_pool_stats"),
        "timings": TIMINGS,
    }
    touch("guest-truth.json", json.dumps(truth, indent=1))
    touch("ready")
    log("NETMEM-PROBE-READY")

    # --- hold everything through the dump; then the optional live run and the
    # release step
    done_live = False
    while not os.path.exists(os.path.join(OUT, "go-release")):
        if not done_live and os.path.exists(os.path.join(OUT, "go-live")):
            live()
            done_live = True
        time.sleep(0.2)
    release(s_eth1, nics["orphan"]["guest_ip"], nics["orphan"]["port"], ofo)
    while True:
        time.sleep(3600)


def pool_inflight():
    """Every page pool netlink lists in init_net: id -> in-flight pages."""
    d = nlpp.dump_netns(CFG["attrs"], None, stats=False)
    return {str(p["id"]): p.get("inflight") for p in d.get("page-pool-get") or []}


RELEASE_SETTLE = 1.5  # s: freed skbs return their pages at once; let softirqs run


def release(sock, addr, port, ofo):
    """
    After the dump: what releases the pages a socket holds.  The orphaned
    virtio pool's pages sit in the receive queue of the UDP sink addr:port
    (this process owns it): run the `ss -K` filter holders named for it, the
    same with -a (an unconnected UDP socket is UNCONN, which ss leaves out by
    default), then close the socket's descriptor (its owner letting go),
    recording the pools' in-flight counts and the socket's queued bytes after
    each step.  Then the same `ss -K` for the TCP connection whose
    out-of-order queue holds veth pool pages (veth pools are not in netlink:
    the server socket's queued bytes tell), and closing its descriptor.
    """
    log("release: start")
    t = time.monotonic()
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    rec = {
        "socket": "%s:%d" % (addr, port),
        "pid": os.getpid(),
        "comm": comm,
        "fd": sock.fileno(),
        "before": {"inflight": pool_inflight(), "rmem_alloc": meminfo(sock)["rmem_alloc"]},
        "steps": [],
    }

    def run(command, ns=None):
        with in_netns(ns):
            p = subprocess.run(
                command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        time.sleep(RELEASE_SETTLE)
        return {
            "action": command,
            "returncode": p.returncode,
            "stdout": p.stdout[-2000:],
            "stderr": p.stderr[-2000:],
        }

    for command in (
        "ss -K -u 'src %s:%d'" % (addr, port),
        "ss -K -a -u 'src %s:%d'" % (addr, port),
    ):
        step = run(command)
        step.update(inflight=pool_inflight(), rmem_alloc=meminfo(sock)["rmem_alloc"])
        rec["steps"].append(step)
    action = "close fd %d of pid %d (%s)" % (sock.fileno(), os.getpid(), comm)
    sock.close()
    time.sleep(RELEASE_SETTLE)
    rec["steps"].append(
        {"action": action, "returncode": 0, "inflight": pool_inflight(), "rmem_alloc": None}
    )
    if OFO_SERVER:
        srv = OFO_SERVER[0]
        tcp = {
            "socket": ofo["server"],
            "remote": ofo["client"],
            "netns": ofo["netns"],
            "fd": srv.fileno(),
            "before": {"rmem_alloc": meminfo(srv)["rmem_alloc"]},
            "steps": [],
        }
        step = run("ss -K -t 'src %s dst %s'" % (ofo["server"], ofo["client"]), ofo["netns"])
        step.update(rmem_alloc=meminfo(srv)["rmem_alloc"], state=tcp_state(srv))
        tcp["steps"].append(step)
        rec["tcp"] = tcp
    rec["duration_s"] = round(time.monotonic() - t, 2)
    touch("release.json", json.dumps(rec, indent=1))
    touch("release-done")
    log("release: %s" % json.dumps(rec)[:800])


def tcp_state(s):
    """A TCP socket's state number (getsockopt TCP_INFO's first byte)."""
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def live():
    log("live: start")
    t = time.monotonic()
    before = netlink_all(with_links=False)
    probe = [CFG["probe_cmd"]]
    cmd = list(probe)
    for s in CFG["symbols"]:
        cmd += ["-s", s]
    res = run_probe(cmd + ["pools", "--json"])
    # The same with no -s: the guest has no debug info where drgn looks, so
    # netmem-probe reads the kernel's BTF and /proc/kallsyms instead.
    res["btf"] = run_probe(probe + ["pools", "--json"])
    # As on a fleet host (no debug info): check, with 1 s of growth measured,
    # and one reading of the exporter in node_exporter's textfile format.
    res["check"] = run_probe(probe + ["check", "--json", "--no-leaks", "--interval", "1"])
    prom = os.path.join(OUT, "live-metrics.prom")
    res["export"] = run_probe(probe + ["export", "--textfile", prom], textfile=prom)
    # netmem-probe asks this kernel's netlink itself and compares, in every
    # network namespace (entered by its /run/netns file);
    # with BTF, whose NETDEV_* enumerators number its requests (and 40 s
    # faster under TCG than loading the DWARF again).
    res["check-netlink"] = run_probe(probe + ["pools", "--check-netlink", "--json"])
    after = netlink_all(with_links=False)
    touch("live-pools.json", json.dumps(res, indent=1))
    touch(
        "live-netlink.json",
        json.dumps({"before": before, "after": after, "clock": clocks()}, indent=1),
    )
    touch("live-done", str(round(time.monotonic() - t, 2)))
    log("live: done in %.1f s (%s)" % (time.monotonic() - t, res.get("error") or "ok"))


def run_probe(cmd, textfile=None):
    """
    Run netmem-probe on /proc/kcore; its JSON output (or the text it wrote to
    ``textfile``), exit code and stderr.
    """
    res = {"cmd": cmd, "target": "live (/proc/kcore in the guest)"}
    if not os.path.exists(cmd[0]):
        res.update(
            ok=False, error="%s does not exist (netmem-probe CLI not installed yet)" % cmd[0]
        )
        return res
    t1 = time.monotonic()
    try:
        p = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900
        )
        res.update(returncode=p.returncode, stderr=p.stderr[-20000:])
        if textfile is not None:
            try:
                with open(textfile) as f:
                    res.update(output=f.read(), ok=p.returncode == 0)
            except OSError as e:
                res.update(ok=False, output=None, error="no textfile: %r" % e)
            res["duration_s"] = round(time.monotonic() - t1, 2)
            return res
        try:
            res["output"] = json.loads(p.stdout)
            res["ok"] = p.returncode in (0, 1, 4)
        except ValueError:
            res.update(ok=False, output=None, stdout=p.stdout[-20000:], error="output is not JSON")
    except subprocess.TimeoutExpired:
        res.update(ok=False, error="timed out after 900 s")
    except OSError as e:
        res.update(ok=False, error=repr(e))
    res["duration_s"] = round(time.monotonic() - t1, 2)
    log("live: %s: %s in %.1f s" % (" ".join(cmd[1:]), res.get("ok"), res["duration_s"]))
    return res


if __name__ == "__main__":
    try:
        main()
    except Exception:
        tb = traceback.format_exc()
        print(tb, flush=True)
        try:
            touch("error", tb.strip().splitlines()[-1] + "\n" + tb)
        except Exception:  # noqa: BLE001
            pass
        sys.exit(1)
