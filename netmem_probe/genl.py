"""
Generic netlink
---------------

A small generic-netlink client, standard library only: requests and dumps to
a family found by name through ``nlctrl``, and the attributes of the answers.
:mod:`netmem_probe.netlink` asks the ``netdev`` family for its page pools with
it, and so does the real-kernel scenario in the QEMU guest
(``scripts/realkernel/guest/nlpp.py``), whose Python has no drgn: this module
imports nothing but the standard library.
"""

import os
import socket
import struct
import sys
from typing import List, Optional, Tuple

__all__ = ("GenlSocket", "NetlinkError", "attr", "attrs", "uint")

NETLINK_GENERIC = 16
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


class NetlinkError(Exception):
    """
    The kernel refused a request (:attr:`errno` its error), or has no such
    family (:attr:`errno` is None).
    """

    def __init__(self, message: str, errno: Optional[int] = None) -> None:
        super().__init__(message)
        self.errno = errno


def attrs(data: bytes) -> List[Tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in ``data``, in order."""
    out = []
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out.append((kind & NLA_TYPE_MASK, data[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return out


def uint(raw: bytes) -> int:
    """A netlink integer attribute: ``uint`` (4 or 8 bytes), ``u32``... in host order."""
    return int.from_bytes(raw, sys.byteorder)


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


class GenlSocket:
    """A generic netlink socket in the network namespace it was made in."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.seq = 0

    def request(
        self, family: int, cmd: int, attributes: bytes = b"", dump: bool = False, version: int = 1
    ) -> List[bytes]:
        """
        The payloads (after the genl header) of the kernel's answers to one
        request or dump.

        :raises NetlinkError: with the kernel's errno if it refused.
        """
        self.seq += 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        payload = struct.pack("=BBH", cmd, version, 0) + attributes
        self.sock.send(
            struct.pack("=LHHLL", 16 + len(payload), family, flags, self.seq, 0) + payload
        )
        answers: List[bytes] = []
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("=LHHLL", data, offset)
                body = data[offset + 16 : offset + length]
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    error = struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
                    if error < 0:
                        raise NetlinkError(
                            f"netlink command {cmd}: {os.strerror(-error)}", errno=-error
                        )
                    return answers
                answers.append(body[4:])

    def family(self, name: str) -> int:
        """The id of generic netlink family ``name`` (``"netdev"``)."""
        answers = self.request(
            GENL_ID_CTRL, CTRL_CMD_GETFAMILY, attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
        )
        for answer in answers:
            for kind, value in attrs(answer):
                if kind == CTRL_ATTR_FAMILY_ID:
                    return struct.unpack("=H", value[:2])[0]
        raise NetlinkError(f"no generic netlink family {name!r}")

    def close(self) -> None:
        self.sock.close()
