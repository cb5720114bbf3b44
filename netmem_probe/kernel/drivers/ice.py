"""
ice
---

Receive buffers of Intel's E800 driver (``drivers/net/ethernet/intel/ice/``,
the driver ``ice`` bound to the netdev's parent PCI function).
``netdev_priv(dev)`` is a ``struct ice_netdev_priv`` whose ``vsi`` has the
rx rings ``rx_rings[0..num_rxq)`` (ring ``q_index``); a port representor
(``repr`` set) shares its uplink's rings and is not walked.

Since Linux kernel commit 93f53db9f9dc ("ice: switch to Page Pool") (in
v6.18) a ring posts libeth buffers from its page pool ``pp``: ``rx_fqes[i]``
(``struct libeth_fqe``, ``drivers/net/ethernet/intel/libeth/``) names the
``netmem`` of descriptor ``i``, and with header split ``hdr_fqes[i]`` the
header buffer from ``hdr_pp``.  The driver fills descriptors at
``next_to_use`` and takes them back at ``next_to_clean``, so the posted
ones are ``[next_to_clean, next_to_use)`` around the ring of ``count``; the
``netmem`` of a taken descriptor stays behind and is not a holder.  AF_XDP
rings (``xsk_pool``) post user memory and are not walked.
"""

from typing import Iterator

import drgn
from drgn import Object, Program, cast
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size, words_of
from netmem_probe.kernel.structs import member_exists

__all__ = ("rx_entries", "posted_slots")


def posted_slots(next_to_clean: int, next_to_use: int, count: int) -> range:
    """
    The ring positions (unwrapped: take each modulo ``count``) of the
    descriptors posted between the two indices; ValueError if they are not
    in the ring.
    """
    if not (0 <= next_to_clean < count and 0 <= next_to_use < count):
        raise ValueError(
            f"indices {next_to_clean}, {next_to_use} outside a ring of {count} (corrupt?)"
        )
    return range(next_to_clean, next_to_use + (count if next_to_use < next_to_clean else 0))


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every posted buffer of the ice ``struct net_device *`` ``dev``: the
    ring's ``q_index``, the descriptor index and the ``netmem`` word of its
    ``struct libeth_fqe`` (and of its header buffer's).

    :raises LookupError: without ice's and libeth's types (before v6.18).
    :raises ValueError: on ring indices or sizes that make no sense.
    """
    if not member_exists(prog.type("struct ice_rx_ring"), "rx_fqes"):
        raise LookupError("ice_rx_ring has no rx_fqes (a kernel before v6.18)")
    np = cast("struct ice_netdev_priv *", netdev_priv(dev))
    vsi = np.vsi
    if np.repr or not vsi or not vsi.rx_rings:
        return
    fqe = prog.type("struct libeth_fqe")
    stride = drgn.sizeof(fqe)
    netmem_at = drgn.offsetof(fqe, "netmem")
    rings = check_ring_size("ice rx rings", vsi.num_rxq.value_())
    for i in range(rings):
        ring = vsi.rx_rings[i]
        if not ring or ring.xsk_pool:
            continue
        queue = ring.q_index.value_()
        count = check_ring_size(f"ice rx queue {queue}", ring.count.value_())
        if not count:
            continue
        try:
            slots = posted_slots(ring.next_to_clean.value_(), ring.next_to_use.value_(), count)
        except ValueError as e:
            raise ValueError(f"ice rx queue {queue}: {e}") from None
        for array, pool in ((ring.rx_fqes, ring.pp), (ring.hdr_fqes, ring.hdr_pp)):
            if not array or not pool:
                continue
            base = array.value_()
            netmems = words_of(prog, prog.read(base, count * stride), netmem_at, stride, count)
            for position in slots:
                slot = position % count
                if netmems[slot]:
                    yield RingEntry(queue, slot, base + slot * stride + netmem_at, netmems[slot])
