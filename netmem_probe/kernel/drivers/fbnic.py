"""
fbnic
-----

Receive buffers of Meta's Host Network Interface driver
(``drivers/net/ethernet/meta/fbnic/``, the driver ``fbnic`` bound to the
netdev's parent PCI function; rx since Linux kernel commit a29b8eb6e533
("eth: fbnic: Add basic Rx handling") (in v6.11)).  ``netdev_priv(dev)`` is
a ``struct fbnic_net`` whose ``rx[q]`` is rx queue q's completion ring, the
``cmpl`` of a ``struct fbnic_q_triad`` (the driver finds the triad the same
way, by ``container_of``).  The triad's other two rings post the pages: the
header page queue ``sub0`` (hpq) and the payload page queue ``sub1`` (ppq),
each with ``size_mask + 1`` entries of ``rx_buf[]`` (``struct
fbnic_rx_buf``, one per page whatever the page size).  The driver sets an
entry when it posts a page (``fbnic_page_pool_init()``) and clears it when
it takes the page back (``fbnic_page_pool_drain()``), so every non-zero
entry is a page the ring holds.  The entry is a ``struct page *`` until
Linux kernel commit 426e13db369c ("eth: fbnic: use netmem_ref where
applicable") (in v6.18), a ``netmem_ref`` ``netmem`` since; the walker reads
whichever member the type has.
"""

from typing import Iterator

import drgn
from drgn import Object, Program, cast, container_of
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size, words_of
from netmem_probe.kernel.platform import word_size

__all__ = ("rx_entries",)

#: The two page queues of an rx queue, by their member in the triad.
PAGE_QUEUES = (("sub0", "hpq"), ("sub1", "ppq"))


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every posted page of the fbnic ``struct net_device *`` ``dev``: the rx
    queue, the entry of its header (``hpq``) or payload (``ppq``) page
    queue, and the ``page``/``netmem`` word of its ``struct fbnic_rx_buf``.

    :raises LookupError: without fbnic's types.
    :raises ValueError: on a ring size that is not a power of two, or a
        completion ring that names another queue than the one it is in.
    """
    fbn = cast("struct fbnic_net *", netdev_priv(dev))
    buf = prog.type("struct fbnic_rx_buf")
    stride = drgn.sizeof(buf)
    member = "netmem" if any(m.name == "netmem" for m in buf.members) else "page"
    word_at = drgn.offsetof(buf, member)
    rings = fbn.rx
    count, size = len(rings), word_size(prog)
    words = words_of(prog, prog.read(rings.address_, count * size), 0, size, count)
    for queue, cmpl in enumerate(words):
        if not cmpl:
            continue  # no such queue, or its rings are freed
        triad = container_of(
            Object(prog, "struct fbnic_ring *", cmpl), "struct fbnic_q_triad", "cmpl"
        )
        if triad.cmpl.q_idx != queue:
            raise ValueError(
                f"fbnic rx queue {queue}: its completion ring is queue "
                f"{triad.cmpl.q_idx.value_()} (corrupt?)"
            )
        for sub, ring in PAGE_QUEUES:
            bdq = getattr(triad, sub)
            base = bdq.rx_buf.value_()
            if not base:
                continue  # freed (fbnic_free_ring_resources()) or not allocated yet
            # the driver sizes a page queue in powers of two: size_mask masks its indexes
            what = f"fbnic rx queue {queue} {ring}"
            slots = check_ring_size(what, bdq.size_mask.value_() + 1)
            if slots & (slots - 1):
                raise ValueError(f"{what}: ring size {slots} is impossible (corrupt?)")
            values = words_of(prog, prog.read(base, slots * stride), word_at, stride, slots)
            for slot, value in enumerate(values):
                if value:
                    yield RingEntry(queue, slot, base + slot * stride + word_at, value, ring=ring)
