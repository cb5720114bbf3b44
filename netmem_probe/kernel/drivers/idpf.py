"""
idpf
----

Receive buffers of Intel's Infrastructure Data Path Function driver
(``drivers/net/ethernet/intel/idpf/``, the driver ``idpf`` bound to the
netdev's parent PCI function).  ``netdev_priv(dev)`` is a
``struct idpf_netdev_priv`` whose ``vport`` keeps its rx queue groups in
``dflt_qv_rsrc`` (``struct idpf_q_vec_rsrc``): ``rxq_grps[0..num_rxq_grp)``.

In the split queue model (``rxq_model`` ``VIRTCHNL2_QUEUE_MODEL_SPLIT``,
the one Debian builds: ``CONFIG_IDPF_SINGLEQ`` is off) the rx queues of a
group only receive; the group's buffer queues
``splitq.bufq_sets[0..num_bufq_sets)`` post the buffers, libeth buffers
from the queue's page pool ``pp`` (``buf[buf_id]``, ``struct libeth_fqe``)
and, with header split, from ``hdr_pp`` (``hdr_buf[buf_id]``).  The
device returns a buffer by id on any rx queue of the group, which zeroes
the buffer's ``netmem`` as it takes it (``idpf_rx_splitq_clean()``) and
hands the id to the buffer queue through a refill queue, whose generation
bit tells the entries not yet refilled.  So every non-zero ``netmem`` of a
buffer queue is a posted buffer, whatever the refill queues hold.  The
slot is named by the group (rx queue N: idpf has one rx queue per group by
default), the buffer id and, but for buffer queue 0's payload buffers, the
ring (``bufq1``, ``hdr``, ``bufq1 hdr``).  AF_XDP buffer queues
(``__IDPF_Q_XSK``) post user memory and are not walked.
"""

from typing import Iterator

import drgn
from drgn import Object, Program, cast
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size, words_of

__all__ = ("rx_entries",)

#: A group has at most two buffer queues (IDPF_MAX_BUFQS_PER_RXQ_GRP).
MAX_BUFQS = 2


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every posted buffer of the idpf ``struct net_device *`` ``dev``: the rx
    queue group, the buffer id, the ring, and the ``netmem`` word of its
    ``struct libeth_fqe``.

    :raises LookupError: without idpf's and libeth's types (or a kernel
        whose vport has no ``dflt_qv_rsrc``).
    :raises ValueError: on impossible group, buffer queue or ring sizes.
    """
    np = cast("struct idpf_netdev_priv *", netdev_priv(dev))
    vport = np.vport
    if not vport:
        return  # not set up yet, or being reset
    rsrc = vport.dflt_qv_rsrc
    if rsrc.rxq_model != prog.constant("VIRTCHNL2_QUEUE_MODEL_SPLIT") or not rsrc.rxq_grps:
        return  # the single queue model (not in Debian's build), or no queues
    xsk = 1 << prog.constant("__IDPF_Q_XSK").value_()
    fqe = prog.type("struct libeth_fqe")
    stride = drgn.sizeof(fqe)
    netmem_at = drgn.offsetof(fqe, "netmem")
    groups = check_ring_size("idpf rx queue groups", rsrc.num_rxq_grp.value_())
    for group in range(groups):
        splitq = rsrc.rxq_grps[group].splitq
        bufqs = splitq.num_bufq_sets.value_()
        if bufqs > MAX_BUFQS:
            raise ValueError(f"idpf rx queue group {group}: {bufqs} buffer queues (corrupt?)")
        for j in range(bufqs if splitq.bufq_sets else 0):
            bufq = splitq.bufq_sets[j].bufq
            if bufq.flags[0] & xsk:
                continue
            count = check_ring_size(f"idpf rx queue {group} bufq {j}", bufq.desc_count.value_())
            rings = (
                (bufq.buf, bufq.pp, f"bufq{j}" if j else None),
                (bufq.hdr_buf, bufq.hdr_pp, f"bufq{j} hdr" if j else "hdr"),
            )
            for array, pool, ring in rings:
                if not array or not pool or not count:
                    continue
                base = array.value_()
                netmems = words_of(prog, prog.read(base, count * stride), netmem_at, stride, count)
                for slot, netmem in enumerate(netmems):
                    if netmem:
                        yield RingEntry(
                            group, slot, base + slot * stride + netmem_at, netmem, ring=ring
                        )
