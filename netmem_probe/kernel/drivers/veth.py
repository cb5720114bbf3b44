"""
veth
----

Frames queued to a veth peer in XDP mode (``drivers/net/veth.c``):
``netdev_priv(dev)`` is a ``struct veth_priv`` whose ``rq[0..real_num_rx_queues)``
each have a ``struct ptr_ring xdp_ring`` of frames waiting for the rq's
NAPI poll.  An entry with bit 0 (``VETH_XDP_FLAG``) set is a
``struct xdp_frame *``, which lives in the head of its page; otherwise it is
a ``struct sk_buff *``, whose head and frags hold the pages.
"""

from typing import Iterator

from drgn import Object, Program, cast
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size
from netmem_probe.kernel.page_pool import ptr_ring_slots
from netmem_probe.kernel.walk import read_words

__all__ = ("VETH_XDP_FLAG", "rx_entries")

#: ``VETH_XDP_FLAG``: BIT(0) of an xdp_ring entry marks an xdp_frame.
VETH_XDP_FLAG = 1


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    The live entries of each rx queue's ``xdp_ring`` of the veth
    ``struct net_device *`` ``dev``, oldest first.

    :raises LookupError: without veth's types.
    """
    priv = cast("struct veth_priv *", netdev_priv(dev))
    if not priv.rq:
        return  # no rx queues allocated yet
    queues = check_ring_size("veth rx queues", dev.real_num_rx_queues.value_())
    for queue in range(queues):
        ring = priv.rq[queue].xdp_ring
        size = check_ring_size(f"veth rx queue {queue}", ring.size.value_())
        if not ring.queue or not size:
            continue  # XDP off: the ring was never allocated
        base = ring.queue.value_()
        slots = ptr_ring_slots(
            ring.producer.value_(), ring.consumer_head.value_(), size, base, prog
        )
        words = read_words(prog, base, size)
        for slot in slots:
            value = words[slot]
            yield RingEntry(queue, slot, base + 8 * slot, value, skb=not value & VETH_XDP_FLAG)
