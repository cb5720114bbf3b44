"""Fake network namespaces, netdevs and NAPI instances."""

from typing import TYPE_CHECKING, Any, Dict, List, Optional

import drgn

from netmem_probe.fake.objects import INIT_NET_INUM, NET_PTR_POISON, FakeList, KObject

if TYPE_CHECKING:
    from netmem_probe.fake.pools import FakePagePool
    from netmem_probe.fake.world import World

__all__ = ("NetDevice", "NetNamespace", "cstr")

NETREG_REGISTERED = 1
NETREG_UNREGISTERED = 2
IFF_UP = 0x1
GRO_HASH_BUCKETS = 8


def cstr(text: str, size: int) -> List[int]:
    raw = text.encode()[: size - 1]
    return list(raw) + [0]


class NetNamespace:
    """A ``struct net`` with its loopback device."""

    def __init__(self, world: "World", name: str, obj: Optional[KObject] = None) -> None:
        self.world = world
        self.name = name
        self.obj = obj if obj is not None else world.alloc("struct net")
        self.inum = INIT_NET_INUM if obj is not None else world.next_inum()
        self.obj.set("ns.inum", self.inum)
        self.alive = True
        world.netns_list.add(self.obj, "list")
        self.dev_list = world.list(self.obj, "dev_base_head")
        self.netdevs: List[NetDevice] = []
        self._ifindex = 0
        world.namespaces.append(self)
        self.lo = self.netdev("lo")
        self.obj.set("loopback_dev", self.lo.obj.addr)

    def netdev(
        self,
        name: str,
        *,
        driver: Optional[str] = None,
        kind: Optional[str] = None,
        num_rx_queues: int = 1,
        ifindex: Optional[int] = None,
        priv: Optional[str] = None,
    ) -> "NetDevice":
        """
        Register a netdev in this namespace (ifindex allocated if not given),
        with a ``priv`` struct (type name) where ``netdev_priv()`` finds it.
        """
        if ifindex is None:
            ifindex = self._ifindex + 1
        self._ifindex = max(self._ifindex, ifindex)
        if self.world.has_member("struct net", "ifindex"):
            self.obj.set("ifindex", self._ifindex)
        dev = NetDevice(self, name, ifindex, driver, kind, num_rx_queues, priv)
        self.netdevs.append(dev)
        return dev

    def dismantle(self) -> None:
        """
        The namespace dies: its netdevs unregister, their pools move to lo,
        and lo's pools are wiped (``page_pool_unreg_netdev_wipe``): unlisted,
        with ``slow.netdev = NET_PTR_POISON``.  The namespace leaves
        ``net_namespace_list``.
        """
        for dev in list(self.netdevs):
            if dev is not self.lo:
                dev.unregister()
        for pool in list(self.lo.pools):
            pool.unlist(netdev_value=NET_PTR_POISON)
        self.lo.registered = False
        self.netdevs.clear()
        self.world.netns_list.remove(self.obj)
        self.alive = False


class NetDevice:
    """A registered ``struct net_device``."""

    def __init__(
        self,
        ns: NetNamespace,
        name: str,
        ifindex: int,
        driver: Optional[str],
        kind: Optional[str],
        num_rx_queues: int,
        priv: Optional[str] = None,
    ) -> None:
        world = ns.world
        self.world = world
        self.ns = ns
        self.name = name
        self.ifindex = ifindex
        self.driver = driver
        self.kind = kind
        self.registered = True
        self.pools: List["FakePagePool"] = []
        self.obj = world.alloc(
            "struct net_device",
            {
                "name": cstr(name, 16),
                "ifindex": ifindex,
                "flags": IFF_UP,
                "reg_state": NETREG_REGISTERED,
                "nd_net": {"net": ns.obj.addr},
                "num_rx_queues": num_rx_queues,
                "real_num_rx_queues": num_rx_queues,
            },
        )
        self.priv: Optional[KObject] = None
        if priv is not None:
            # netdev_priv(): right after the net_device, NETDEV_ALIGN (32) aligned.
            self.priv = world.alloc(priv, align=32)
            size = drgn.sizeof(world.type("struct net_device"))
            assert self.priv.addr == self.obj.addr + (-(-size // 32) * 32)
        self.rx = world.alloc(
            "struct netdev_rx_queue",
            [{"dev": self.obj.addr} for _ in range(num_rx_queues)],
            count=num_rx_queues,
        )
        self.obj.set("_rx", self.rx.addr)
        if driver is not None:
            drv = world.alloc("struct device_driver", {"name": world.string(driver)})
            parent = world.alloc("struct device", {"driver": drv.addr})
            self.obj.set("dev.parent", parent.addr)
        if kind is not None:
            ops = world.alloc("struct rtnl_link_ops", {"kind": world.string(kind)})
            self.obj.set("rtnl_link_ops", ops.addr)
        # netdevs list their pools since v6.8 (the page_pools registry);
        # before, the list is never wired (nor in the layout).
        self.page_pools = (
            world.list(self.obj, "page_pools", hlist=True)
            if world.has_registry
            else FakeList(self.obj, "page_pools", hlist=True)
        )
        self.napi_list = world.list(self.obj, "napi_list")
        ns.dev_list.add(self.obj, "dev_list")

    @property
    def driver_name(self) -> Optional[str]:
        """What netmem-probe reports as the netdev's driver."""
        return self.driver if self.driver is not None else self.kind

    def napi(self, napi_id: int, index: int = 0) -> KObject:
        value = {"dev": self.obj.addr, "napi_id": napi_id}
        # Debian's 6.12 has no napi->index (the rx queue of a NAPI instance).
        if self.world.has_member("struct napi_struct", "index"):
            value["index"] = index
        napi = self.world.alloc("struct napi_struct", value)
        self.napi_list.add(napi, "dev_list")
        # Empty GRO lists point at themselves: in napi->gro on newer kernels,
        # napi->gro_hash and napi->rx_list on older ones (the 6.x LTS lines).
        for gro, hash_, rx in (("gro", "hash", "rx_list"), (None, "gro_hash", "rx_list")):
            prefix = f"{gro}." if gro else ""
            if not self.world.has_member("struct napi_struct", prefix + hash_):
                continue
            buckets: List[Dict[str, Dict[str, int]]] = []
            for path in [f"{prefix}{hash_}[{b}].list" for b in range(GRO_HASH_BUCKETS)]:
                at = napi.addr_of(path)
                buckets.append({"list": {"next": at, "prev": at}})
            at = napi.addr_of(prefix + rx)
            lists: Dict[str, Any] = {hash_: buckets, rx: {"next": at, "prev": at}}
            if gro:
                napi.set(gro, lists)
            else:
                for member, value in lists.items():
                    napi.set(member, value)
            break
        return napi

    def gro_hold(self, napi: KObject, bucket: int, skb: KObject) -> None:
        """Put ``skb`` alone on GRO list ``bucket`` of ``napi`` (either layout)."""
        gro = "gro" in napi.value
        head = napi.addr_of(f"gro.hash[{bucket}].list" if gro else f"gro_hash[{bucket}].list")
        buckets = napi.value["gro"]["hash"] if gro else napi.value["gro_hash"]
        buckets[bucket]["list"] = {"next": skb.addr, "prev": skb.addr}
        skb.set("next", head)
        skb.set("prev", head)

    def rx_queue(self, index: int) -> KObject:
        """The ``struct netdev_rx_queue`` of queue ``index`` (a view into ``_rx``)."""
        return _ArrayElement(self.rx, index)

    def unregister(self) -> None:
        """
        Unregister the netdev: like ``page_pool_unreg_netdev()``, its pools
        move to the namespace's loopback device.
        """
        lo = self.ns.lo
        for pool in list(self.pools):
            pool.move_to(lo)
        self.ns.dev_list.remove(self.obj)
        self.obj.set("reg_state", NETREG_UNREGISTERED)
        self.registered = False
        if self in self.ns.netdevs:
            self.ns.netdevs.remove(self)


class _ArrayElement(KObject):
    """A KObject that edits one element of an array KObject's value."""

    def __init__(self, array: KObject, index: int) -> None:
        elem_type = array.type.type
        super().__init__(
            array.world, array.addr + index * elem_type.size, elem_type, array.value[index]
        )
