"""
The running kernel's own netlink view of its page pools: the ``netdev``
family's ``page-pool-get`` dump, asked with :mod:`netmem_probe.genl`'s client,
as ``ynl --family netdev --dump page-pool-get`` prints it.

Command and attribute numbers come from the target's own types (the
``NETDEV_CMD_*`` and ``NETDEV_A_*`` enumerators of
``include/uapi/linux/netdev.h``, in its debug info or BTF), so the client
follows the kernel it talks to.  A dump covers one network namespace: the
caller's, or one entered for the socket (setns(2) on a ``/run/netns`` file or
a process's ``/proc/PID/ns/net``, which needs CAP_SYS_ADMIN).
"""

import ctypes
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from drgn import Program

from netmem_probe.genl import GenlSocket, NetlinkError, attrs, uint

__all__ = ("NetlinkError", "netns_files", "page_pool_dump")

CLONE_NEWNET = 0x40000000

#: page-pool-get attributes (netdev.yaml names) and the nest among them.
POOL_ATTRS = ("id", "ifindex", "napi-id", "inflight", "inflight-mem", "detach-time", "dmabuf")
IO_URING_ATTRS = ("rx-buf-len",)
#: The keys of one pool's object in ``ynl --dump page-pool-get --output-json``.
PAGE_POOL_GET_KEYS = (*POOL_ATTRS, "io-uring")


def _constant(prog: Program, name: str) -> Optional[int]:
    try:
        return prog.constant(name).value_()
    except LookupError:
        return None


def netns_files() -> Dict[int, str]:
    """
    Network namespace inode number -> a file that enters it: the names of
    ``ip netns`` (``/run/netns``), then each process's ``/proc/PID/ns/net``
    (the first process found in each).  A namespace no process is in and no
    file names cannot be entered.
    """
    paths: List[str] = []
    try:
        paths += [os.path.join("/run/netns", name) for name in sorted(os.listdir("/run/netns"))]
    except OSError:
        pass
    try:
        pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        pids = []
    paths += [f"/proc/{pid}/ns/net" for pid in pids]
    found: Dict[int, str] = {}
    for path in paths:
        try:
            found.setdefault(os.stat(path).st_ino, path)
        except OSError:
            continue  # the process ended, or no permission to look
    return found


def _socket_in(netns: Optional[Tuple[int, str]]) -> GenlSocket:
    """
    A generic netlink socket of the caller's namespace, or of ``(inode, file)``:
    made by a thread that enters the namespace (setns(2) moves only the
    calling thread; the socket stays bound to the namespace it was made in).
    """
    if netns is None:
        return GenlSocket()
    inum, path = netns
    made: Dict[str, Any] = {}

    def enter() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_ino != inum:
                    raise OSError(0, f"{path} is now another namespace")
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, os.strerror(error))
            finally:
                os.close(fd)
            made["socket"] = GenlSocket()
        except OSError as e:
            made["error"] = e

    thread = threading.Thread(target=enter, name="netmem-probe setns")
    thread.start()
    thread.join()
    if "error" in made:
        raise NetlinkError(f"cannot enter it by {path}: {made['error'].strerror}")
    return made["socket"]


def _numbers(prog: Program, prefix: str, names: Tuple[str, ...]) -> Dict[int, str]:
    out = {}
    for name in names:
        number = _constant(prog, prefix + name.upper().replace("-", "_"))
        if number is not None:
            out[number] = name
    return out


def page_pool_dump(prog: Program, netns: Optional[Tuple[int, str]] = None) -> List[Dict[str, Any]]:
    """
    What the kernel's netlink answers to ``page-pool-get`` (a dump) in this
    process's network namespace, or in ``netns`` (its inode number and a file
    that enters it, from :func:`netns_files`): one dict per pool, with
    netdev.yaml's attribute names, as ``ynl --output-json`` prints it.

    :param prog: the running kernel, for the command and attribute numbers.
    :raises NetlinkError: without the netdev family or its page-pool-get
        (Linux before 6.8), or if the kernel refuses the dump.
    """
    cmd = _constant(prog, "NETDEV_CMD_PAGE_POOL_GET")
    if cmd is None:
        raise NetlinkError("this kernel's netdev netlink family has no page-pool-get")
    names = _numbers(prog, "NETDEV_A_PAGE_POOL_", POOL_ATTRS)
    io_uring = _constant(prog, "NETDEV_A_PAGE_POOL_IO_URING")
    nested = _numbers(prog, "NETDEV_A_IO_URING_PROVIDER_INFO_", IO_URING_ATTRS)
    try:
        sock = _socket_in(netns)
    except OSError as e:
        raise NetlinkError(f"cannot open a generic netlink socket: {e.strerror}") from None
    try:
        answers = sock.request(sock.family("netdev"), cmd, dump=True)
    finally:
        sock.close()
    pools = []
    for answer in answers:
        pool: Dict[str, Any] = {}
        for kind, value in attrs(answer):
            if kind == io_uring:
                pool["io-uring"] = {nested[k]: uint(v) for k, v in attrs(value) if k in nested}
            elif kind in names:
                pool[names[kind]] = uint(value)
        pools.append(pool)
    return pools
