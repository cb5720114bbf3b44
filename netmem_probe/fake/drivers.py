"""
Fake driver rx rings: the private structures of a virtio_net or veth netdev
that :mod:`netmem_probe.kernel.drivers` walks, with the layouts of the
fixture's kernel (the linux-7.3 layout has them, from Debian's DWARF).
"""

from typing import TYPE_CHECKING, Dict, List, Tuple

from netmem_probe.fake.net import NetDevice

if TYPE_CHECKING:
    from netmem_probe.fake.net import NetNamespace
    from netmem_probe.fake.world import KObject

__all__ = ("FakeVeth", "FakeVirtioNet")


class FakeVirtioNet:
    """
    A virtio_net netdev: ``struct virtnet_info`` with ``queues`` receive
    queues, each with a split (or packed) ``struct vring_virtqueue`` of
    ``ring_size`` descriptors whose ``desc_state[id].data`` :meth:`post` sets.
    """

    def __init__(
        self,
        ns: "NetNamespace",
        name: str,
        *,
        queues: int = 1,
        ring_size: int = 256,
        packed: bool = False,
    ) -> None:
        world = ns.world
        self.dev: NetDevice = ns.netdev(
            name, driver="virtio_net", num_rx_queues=queues, priv="struct virtnet_info"
        )
        assert self.dev.priv is not None
        ring = "packed" if packed else "split"
        rqs = world.alloc("struct receive_queue", [{} for _ in range(queues)], count=queues)
        self.states: List["KObject"] = []
        for queue in range(queues):
            states = world.alloc(
                f"struct vring_desc_state_{ring}",
                [{"data": 0} for _ in range(ring_size)],
                count=ring_size,
            )
            layout = world.prog.constant("VQ_LAYOUT_PACKED" if packed else "VQ_LAYOUT_SPLIT")
            vvq = world.alloc(
                "struct vring_virtqueue",
                {
                    "vq": {"index": 2 * queue},
                    "layout": layout.value_(),
                    ring: {"vring": {"num": ring_size}, "desc_state": states.addr},
                },
            )
            rqs.value[queue]["vq"] = vvq.addr
            self.states.append(states)
        self.dev.priv.set("dev", self.dev.obj.addr)
        self.dev.priv.set("rq", rqs.addr)
        self.dev.priv.set("max_queue_pairs", queues)
        self.dev.priv.set("curr_queue_pairs", queues)

    def post(self, queue: int, slot: int, buffer: int) -> int:
        """Post ``buffer`` (in a pool page) at descriptor ``slot``; the address of the word."""
        states = self.states[queue]
        states.value[slot]["data"] = buffer
        return states.addr + slot * states.type.type.size


class FakeVeth:
    """
    A veth netdev in XDP mode: ``struct veth_priv`` with ``queues`` rx
    queues whose ``xdp_ring`` (``ring_size`` slots) :meth:`queue` fills.
    """

    def __init__(
        self, ns: "NetNamespace", name: str, *, queues: int = 1, ring_size: int = 256
    ) -> None:
        world = ns.world
        self.world = world
        self.dev: NetDevice = ns.netdev(
            name, kind="veth", num_rx_queues=queues, priv="struct veth_priv"
        )
        assert self.dev.priv is not None
        self.ring_size = ring_size
        self.rqs = world.alloc("struct veth_rq", [{} for _ in range(queues)], count=queues)
        self.slots: Dict[int, List[int]] = {}
        self.queues: List[Tuple["KObject", List[int]]] = []
        for queue in range(queues):
            slots = world.alloc("void *", None, count=ring_size)
            words = [0] * ring_size
            slots.value = words
            self.rqs.value[queue].update(
                {
                    "dev": self.dev.obj.addr,
                    "xdp_ring": {"queue": slots.addr, "size": ring_size, "batch": 16},
                }
            )
            self.queues.append((slots, words))
        self.dev.priv.set("rq", self.rqs.addr)

    def queue(self, queue: int, entry: int) -> int:
        """
        Produce ``entry`` (an skb address, or an xdp_frame address with
        ``VETH_XDP_FLAG``) into rx queue ``queue``'s ring; its slot.
        """
        slots, words = self.queues[queue]
        ring = self.rqs.value[queue]["xdp_ring"]
        producer = ring.get("producer", 0)
        words[producer] = entry
        ring["producer"] = (producer + 1) % self.ring_size
        return producer
