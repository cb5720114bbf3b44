"""
Network namespaces and netdevs, as far as page pools need them.

Walks ``net_namespace_list``, each namespace's ``dev_base_head`` and each
netdev's ``page_pools`` hlist with the bounded walkers of
:mod:`netmem_probe.kernel.walk`, and decodes the few netdev facts a pool
report shows (name, ifindex, namespace, driver).
"""

from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.structs import StructReader, read_cstring
from netmem_probe.kernel.walk import Problems, hlist_nodes, list_nodes, read_pointer, wrap

__all__ = ("NetdevInfo", "NetdevReader", "for_each_net_address", "namespace_page_pool_lists")

LOOPBACK_IFINDEX = 1


@dataclass(frozen=True)
class NetdevInfo:
    address: int
    name: str
    ifindex: int
    netns: Optional[int]  # namespace inode number
    driver: Optional[str]
    is_loopback: bool


def for_each_net_address(prog: Program, problems: Optional[Problems] = None) -> Iterator[int]:
    """Addresses of every ``struct net`` on ``net_namespace_list``."""
    offset = drgn.offsetof(prog.type("struct net"), "list")
    head = prog["net_namespace_list"].address_
    for node in list_nodes(prog, head, what="net_namespace_list", problems=problems):
        yield node - offset


def for_each_netdev_address(prog: Program, problems: Optional[Problems] = None) -> Iterator[int]:
    """Addresses of every ``struct net_device`` on every namespace's ``dev_base_head``."""
    dev_list = drgn.offsetof(prog.type("struct net"), "dev_base_head")
    dev_node = drgn.offsetof(prog.type("struct net_device"), "dev_list")
    for net in for_each_net_address(prog, problems):
        for node in list_nodes(prog, net + dev_list, what="dev_base_head", problems=problems):
            yield node - dev_node


def namespace_page_pool_lists(
    prog: Program, problems: Optional[Problems] = None
) -> Iterator[Tuple[int, int]]:
    """
    ``(netdev address, hlist node address)`` for every pool linked on a
    netdev's ``page_pools`` hlist, in every namespace (what netlink dumps).
    """
    pools_head = drgn.offsetof(prog.type("struct net_device"), "page_pools")
    for netdev in for_each_netdev_address(prog, problems):
        for pool_node in hlist_nodes(
            prog, netdev + pools_head, what="netdev page_pools hlist", problems=problems
        ):
            yield netdev, pool_node


class NetdevReader:
    """Decodes netdevs on demand, once per address."""

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.prog = prog
        self.problems = problems
        self.reader = StructReader(
            prog,
            "struct net_device",
            {
                "name": "name",
                "ifindex": "ifindex",
                "net": "nd_net.net",
                "parent": "dev.parent",
                "link_ops": "rtnl_link_ops",
            },
        )
        net = prog.type("struct net")
        self.inum_offset = drgn.offsetof(net, "ns.inum")
        self.loopback_offset = drgn.offsetof(net, "loopback_dev")
        device = prog.type("struct device")
        self.driver_offset = drgn.offsetof(device, "driver")
        self.driver_name_offset = drgn.offsetof(prog.type("struct device_driver"), "name")
        self.kind_offset = drgn.offsetof(prog.type("struct rtnl_link_ops"), "kind")
        self._cache: Dict[int, Optional[NetdevInfo]] = {}

    def info(self, address: int) -> Optional[NetdevInfo]:
        try:
            return self._cache[address]
        except KeyError:
            pass
        try:
            raw = self.reader.read(address)
            netns = self.prog.read_u32(wrap(raw["net"] + self.inum_offset)) if raw["net"] else None
            loopback = raw["net"] and read_pointer(self.prog, raw["net"] + self.loopback_offset)
            info: Optional[NetdevInfo] = NetdevInfo(
                address=address,
                name=raw["name"],
                ifindex=raw["ifindex"],
                netns=netns,
                driver=self._driver(raw),
                is_loopback=loopback == address,
            )
        except drgn.FaultError as e:
            self.problems.fault("net_device", address, e)
            info = None
        self._cache[address] = info
        return info

    def _driver(self, raw: Dict[str, int]) -> Optional[str]:
        """The bound driver of the netdev's parent device, else its link kind (veth)."""
        try:
            if raw["parent"]:
                driver = read_pointer(self.prog, raw["parent"] + self.driver_offset)
                if driver:
                    name = read_pointer(self.prog, driver + self.driver_name_offset)
                    return read_cstring(self.prog, name)
            if raw["link_ops"]:
                kind = read_pointer(self.prog, raw["link_ops"] + self.kind_offset)
                return read_cstring(self.prog, kind)
        except drgn.FaultError:
            pass
        return None
