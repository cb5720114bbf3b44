"""
virtio_net
----------

Receive buffers of ``drivers/net/virtio_net.c``: ``netdev_priv(dev)`` is a
``struct virtnet_info`` whose ``rq[0..max_queue_pairs)`` are the receive
queues; each queue's ``vq`` is embedded in a ``struct vring_virtqueue``
(``drivers/virtio/virtio_ring.c``) that keeps, per descriptor, the
driver's token for a posted buffer in ``desc_state[id].data`` (NULL when
free).  With mergeable buffers from a page pool (Debian 7.x) the token is
the buffer's address inside a pool page, with big packets the first
``struct page *`` of the chain, so the slot is where a page pool page
is held while the device owns it.
"""

from typing import Iterator

import drgn
from drgn import Object, Program, cast, container_of
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size
from netmem_probe.kernel.structs import member_exists

__all__ = ("rx_entries",)


def _is_packed(vvq: Object) -> bool:
    """Whether a ``struct vring_virtqueue`` uses the packed layout."""
    if member_exists(vvq.type_.type, "packed_ring"):
        # The packed layout: "virtio_ring: introduce packed ring support" (v5.0).
        return bool(vvq.packed_ring)
    # Since Linux kernel commit 1208473f9b5e ("virtio_ring: introduce
    # virtqueue ops") (posted December 2025; in Debian 7.3.4) enum vq_layout
    # replaces packed_ring (SPLIT, PACKED, and since the in-order support
    # SPLIT_IN_ORDER, PACKED_IN_ORDER): told by the enumerator's name.
    layout = vvq.layout.value_()
    names = {value: name for name, value in vvq.layout.type_.enumerators or ()}
    return "PACKED" in names.get(layout, "")


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every posted receive buffer of the virtio_net ``struct net_device *``
    ``dev``: queue index, descriptor id and ``desc_state[id].data``.

    :raises LookupError: without virtio_net's and virtio_ring's types.
    """
    vi = cast("struct virtnet_info *", netdev_priv(dev))
    queues = vi.max_queue_pairs.value_()
    word = prog.type("void *").size
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    for queue in range(queues):
        vvq = container_of(vi.rq[queue].vq, "struct vring_virtqueue", "vq")
        ring = vvq.packed if _is_packed(vvq) else vvq.split
        size = check_ring_size(f"virtio_net rx queue {queue}", ring.vring.num.value_())
        states = ring.desc_state
        stride = drgn.sizeof(states.type_.type)
        offset = drgn.offsetof(states.type_.type, "data")
        raw = prog.read(states.value_(), size * stride)
        for slot in range(size):
            at = slot * stride + offset
            value = int.from_bytes(raw[at : at + word], "little" if little else "big")
            if value:
                yield RingEntry(queue, slot, states.value_() + at, value)
