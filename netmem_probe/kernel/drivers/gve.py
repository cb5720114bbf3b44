"""
gve
---

Receive buffers of Google's virtual NIC (``drivers/net/ethernet/google/gve/``,
the driver ``gve`` bound to the netdev's parent PCI function).
``netdev_priv(dev)`` is a ``struct gve_priv`` whose
``rx[0..rx_cfg.num_queues)`` are the rx rings.

Only the DQO RDA queue format takes its buffers from a page pool: since
Linux kernel commit ebdfae0d377b ("gve: adopt page pool for DQ RDA mode")
(in v6.14) a ring with ``dqo.page_pool`` keeps each posted buffer in a
buffer state ``dqo.buf_states[id]`` (``id`` is the buffer id the device
returns), whose ``page_info.netmem`` names the pool page (netmem in the
``page`` union since the same series; 0 once given back).  A buffer state
is in use when its ``next`` is its own id (``gve_buf_state_is_allocated()``);
free ones are chained through ``next``.  The GQI formats and DQO QPL use
pages of their own (no pool) and are not walked.
"""

from typing import Iterator

import drgn
from drgn import Object, Program, cast
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size, words_of
from netmem_probe.kernel.structs import member_exists

__all__ = ("rx_entries",)


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every buffer a page-pool (DQO RDA) rx ring of the gve
    ``struct net_device *`` ``dev`` has posted: the ring's queue, the buffer
    id and the ``page_info.netmem`` word.

    :raises LookupError: without gve's types, or before v6.14.
    :raises ValueError: on an impossible queue or buffer-state count.
    """
    if not member_exists(prog.type("struct gve_rx_ring"), "dqo.page_pool"):
        raise LookupError("gve_rx_ring has no dqo.page_pool (a kernel before v6.14)")
    priv = cast("struct gve_priv *", netdev_priv(dev))
    if priv.queue_format.value_() != prog.constant("GVE_DQO_RDA_FORMAT").value_():
        return  # no page pool behind this format
    if not priv.rx:
        return  # closed: the rings are freed
    queues = check_ring_size("gve rx queues", priv.rx_cfg.num_queues.value_())
    state_type = prog.type("struct gve_rx_buf_state_dqo")
    stride = drgn.sizeof(state_type)
    netmem_at = drgn.offsetof(state_type, "page_info.netmem")
    next_at = drgn.offsetof(state_type, "next")
    next_size = drgn.sizeof(state_type.member("next").type)
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    for queue in range(queues):
        dqo = priv.rx[queue].dqo
        if not dqo.page_pool or not dqo.buf_states:
            continue
        count = check_ring_size(f"gve rx queue {queue}", dqo.num_buf_states.value_())
        base = dqo.buf_states.value_()
        raw = prog.read(base, count * stride)
        netmems = words_of(prog, raw, netmem_at, stride, count)
        for buffer_id, netmem in enumerate(netmems):
            at = buffer_id * stride + next_at
            next_id = int.from_bytes(
                raw[at : at + next_size], "little" if little else "big", signed=True
            )
            if next_id == buffer_id and netmem:
                yield RingEntry(queue, buffer_id, base + buffer_id * stride + netmem_at, netmem)
