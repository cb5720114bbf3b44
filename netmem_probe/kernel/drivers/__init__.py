"""
Driver rx rings
---------------

Where a driver keeps the buffers it posted for receive.  A page a pool has
handed out and no skb holds usually sits in one of these rings, so a
reference found in one is named "``<driver> <netdev> rx queue N, slot S``".

:data:`WALKERS` maps a driver name (the bound driver of the netdev's parent
device, or its rtnl link kind, as :class:`~netmem_probe.kernel.netdev.NetdevReader`
reports it) to a module-level function ``rx_entries(prog, dev)`` yielding
:class:`RingEntry` for each posted buffer of the ``struct net_device *``
``dev``.  Each walker lives in its own module with the layout it reads and
the kernel commits behind it; it reads what the driver's types say, so a
kernel without the driver's debug info (or BTF) has its ring reported as not
walked, never guessed.
"""

from typing import Callable, Dict, Iterator, List, NamedTuple, Optional

import drgn
from drgn import Object, Program

from netmem_probe.kernel.drivers import bnxt, fbnic, gve, ice, idpf, mlx5e, veth, virtio_net
from netmem_probe.kernel.drivers.common import RingEntry
from netmem_probe.kernel.netdev import NetdevReader, for_each_net_address
from netmem_probe.kernel.walk import Problems, list_nodes

__all__ = ("RELEASE", "WALKERS", "RingEntry", "RxRings", "RxSlot")

Walker = Callable[[Program, Object], Iterator[RingEntry]]

#: Ring walker by driver name.
WALKERS: Dict[str, Walker] = {
    "virtio_net": virtio_net.rx_entries,
    "veth": veth.rx_entries,
    # a PCI function's driver; a sub-function's auxiliary driver
    "mlx5_core": mlx5e.rx_entries,
    "mlx5_core.sf": mlx5e.rx_entries,
    "bnxt_en": bnxt.rx_entries,
    "gve": gve.rx_entries,
    "ice": ice.rx_entries,
    "idpf": idpf.rx_entries,
    "fbnic": fbnic.rx_entries,
}


#: What makes a driver give back the buffers posted in its rx rings.
RELEASE: Dict[str, str] = {
    # remove_vq_common() -> free_unused_bufs(): only when the device goes
    # (unbind, removal, suspend); virtnet_close() leaves the buffers posted.
    "virtio_net": "unbinding its virtio device ({netdev} down keeps the posted buffers)",
    # veth_napi_del() -> ptr_ring_cleanup() purges the xdp_ring.
    "veth": "ip link set {netdev} down (veth purges its xdp_ring)",
}


class RxSlot(NamedTuple):
    """One posted receive buffer: where a driver's ring holds a word."""

    driver: str
    netdev: str
    queue: int
    slot: int
    #: The ring of the queue, when it has more than one (bnxt's "agg").
    ring: Optional[str] = None

    def __str__(self) -> str:
        ring = f"{self.ring} " if self.ring else ""
        return f"{self.driver} {self.netdev} rx queue {self.queue}, {ring}slot {self.slot}"

    @property
    def release(self) -> str:
        """What would make the driver give the buffer back."""
        hint = RELEASE.get(self.driver, "ip link set {netdev} down (the driver frees its rings)")
        return hint.format(netdev=self.netdev)


class RxRings:
    """
    The rx ring slots of every netdev (in every namespace on
    ``net_namespace_list``) whose driver has a walker, read once.

    ``by_address`` maps the address of each slot's word to its
    :class:`RxSlot`; ``by_value`` maps the words that are ``struct sk_buff``
    pointers (veth's ``xdp_ring``) to theirs, so an skb found holding a page
    is placed in the ring.  ``unwalked`` says, per netdev, why a ring that
    has a walker was not read (no type information for the driver, or a
    fault: the latter is also recorded in ``problems``).
    """

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.by_address: Dict[int, RxSlot] = {}
        self.by_value: Dict[int, RxSlot] = {}
        self.unwalked: Dict[str, str] = {}
        self.walked: List[str] = []
        netdevs = NetdevReader(prog, Problems())
        try:
            dev_type = prog.type("struct net_device")
        except LookupError:
            return
        dev_list = drgn.offsetof(prog.type("struct net"), "dev_base_head")
        dev_node = drgn.offsetof(dev_type, "dev_list")
        for net in for_each_net_address(prog, problems):
            for node in list_nodes(prog, net + dev_list, what="dev_base_head", problems=problems):
                info = netdevs.info(node - dev_node)
                if info is None or info.driver not in WALKERS:
                    continue
                self._walk(prog, problems, info.driver, info.name, node - dev_node)

    def _walk(self, prog: Program, problems: Problems, driver: str, name: str, dev: int) -> None:
        what = f"{driver} {name}"
        try:
            for entry in WALKERS[driver](prog, Object(prog, "struct net_device *", dev)):
                slot = RxSlot(driver, name, entry.queue, entry.slot, entry.ring)
                self.by_address[entry.address] = slot
                if entry.skb:
                    self.by_value[entry.value] = slot
        except LookupError as e:
            self.unwalked[what] = f"rx ring not walked: no type information ({e})"
            return
        except drgn.FaultError as e:
            self.unwalked[what] = f"rx ring walk stopped: {e}"
            problems.fault(f"{what} rx ring", e.address, e)
            return
        except ValueError as e:  # a ring whose bounds make no sense
            self.unwalked[what] = f"rx ring not walked: {e}"
            problems.add(f"{what} rx ring", dev, str(e))
            return
        self.walked.append(what)

    def at(self, address: int) -> Optional[RxSlot]:
        """The slot whose word is at ``address``, if any."""
        return self.by_address.get(address)

    def of_skb(self, skb: int) -> Optional[RxSlot]:
        """The slot holding the ``struct sk_buff`` at ``skb``, if any."""
        return self.by_value.get(skb)
