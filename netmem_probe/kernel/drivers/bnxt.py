"""
bnxt
----

Receive buffers of ``drivers/net/ethernet/broadcom/bnxt/`` (the driver
``bnxt_en``, bound to the netdev's parent PCI function).
``netdev_priv(dev)`` is a ``struct bnxt`` whose ``rx_ring[0..rx_nr_rings)``
are the rx rings (ring ``i`` is rx queue ``i``).  Each ring keeps, per
descriptor, the buffer the driver posted (pages from its ``page_pool``
since Linux kernel commit 322b87ca55f2 ("bnxt_en: add page_pool support")
(in v5.5); head buffers from ``head_pool`` when it has one):

- ``rx_buf_ring[0..rx_ring_mask]``: the head buffers, ``data`` being the
  buffer's address in its page (or, in page mode, the page), NULL once the
  driver took the buffer;
- ``rx_agg_ring[0..rx_agg_ring_mask]``: the aggregation (jumbo, LRO/GRO-HW,
  header-split payload) buffers, whose ``page`` word became a ``netmem``
  in Linux kernel commit cd1fafe7da1f ("eth: bnxt: add support rx side
  device memory TCP") (in v6.16); 0 once taken (``rx_agg_bmap`` clears the
  same slot).

Buffers parked in ``rx_tpa[]`` during a hardware GRO aggregation are not
walked.
"""

from typing import Iterator, Optional

import drgn
from drgn import Object, Program, cast
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size, words_of
from netmem_probe.kernel.structs import member_exists

__all__ = ("rx_entries",)


def _ring(
    prog: Program,
    base: int,
    element: str,
    member: str,
    size: int,
    queue: int,
    ring: Optional[str] = None,
) -> Iterator[RingEntry]:
    """The non-zero ``member`` words of ``size`` ``element`` structs at ``base``."""
    type_ = prog.type(element)
    stride = drgn.sizeof(type_)
    at = drgn.offsetof(type_, member)
    for slot, value in enumerate(words_of(prog, prog.read(base, size * stride), at, stride, size)):
        if value:
            yield RingEntry(queue, slot, base + slot * stride + at, value, ring=ring)


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every posted buffer of the bnxt ``struct net_device *`` ``dev``: the rx
    ring, the descriptor index (the aggregation ring's slots as ring
    ``agg``) and the word naming the buffer.

    :raises LookupError: without bnxt_en's types.
    :raises ValueError: on an impossible ring size.
    """
    bp = cast("struct bnxt *", netdev_priv(dev))
    if not bp.rx_ring:
        return  # closed: the rings are freed
    rings = check_ring_size("bnxt rx rings", bp.rx_nr_rings.value_())
    heads = check_ring_size("bnxt rx ring", bp.rx_ring_mask.value_() + 1)
    aggs = check_ring_size("bnxt rx agg ring", bp.rx_agg_ring_mask.value_() + 1)
    agg_bd = prog.type("struct bnxt_sw_rx_agg_bd")
    agg_word = "netmem" if member_exists(agg_bd, "netmem") else "page"
    for queue in range(rings):
        rxr = bp.rx_ring[queue]
        if rxr.rx_buf_ring:
            yield from _ring(
                prog, rxr.rx_buf_ring.value_(), "struct bnxt_sw_rx_bd", "data", heads, queue
            )
        if rxr.rx_agg_ring:
            yield from _ring(
                prog,
                rxr.rx_agg_ring.value_(),
                "struct bnxt_sw_rx_agg_bd",
                agg_word,
                aggs,
                queue,
                "agg",
            )
