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

In the single queue model (``CONFIG_IDPF_SINGLEQ``) one group holds every
rx queue, ``singleq.rxqs[0..num_rxq)``, and each rx queue posts its own
libeth buffers (``rx_buf[0..desc_count)`` from its ``pp``), zeroing a
buffer's ``netmem`` as it takes it (``idpf_rx_singleq_clean()``): every
non-zero one is posted, named by the queue's ``idx`` and the descriptor.

Either way an rx queue keeps the frame it has not finished at the end of a
NAPI poll, a multi-buffer frame whose last buffer has not come yet: since
Linux kernel commit a4d755d1040a ("idpf: use generic functions to build
xdp_buff and skb") (in v6.18; the id net-next carried, as pushed to
wireless-next on 2025-09-12) in its stash ``xdp`` (``struct
libeth_xdp_buff_stash``): ``data`` points into the head buffer, whose shared
info lists the frame's other buffers (``frags``) when its ``flags`` have
``XDP_FLAGS_HAS_FRAGS``; named ring ``stash`` (slot 0) and ``stash frag``
(slot i).  Before, the queue kept an sk_buff, ``skb``, whose pages the
holders of an skb find (an skb on no queue).
"""

from typing import Iterator, Optional

import drgn
from drgn import Object, Program, cast
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size, words_of

__all__ = ("rx_entries",)

#: A group has at most two buffer queues (IDPF_MAX_BUFQS_PER_RXQ_GRP).
MAX_BUFQS = 2

#: SMP_CACHE_BYTES, which SKB_DATA_ALIGN() rounds the shared info to: the L1
#: cache line of x86-64 (CONFIG_X86_L1_CACHE_SHIFT 6) and arm64 (L1_CACHE_SHIFT 6).
CACHE_LINE = 64


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every posted buffer of the idpf ``struct net_device *`` ``dev``: the rx
    queue (group), the buffer id, the ring, and the ``netmem`` word of its
    ``struct libeth_fqe``; and what each rx queue's stash holds.

    :raises LookupError: without idpf's and libeth's types (or a kernel
        whose vport has no ``dflt_qv_rsrc``).
    :raises ValueError: on impossible group, queue or ring sizes, or a stash
        whose shared info lies outside its frame.
    """
    np = cast("struct idpf_netdev_priv *", netdev_priv(dev))
    vport = np.vport
    if not vport:
        return  # not set up yet, or being reset
    rsrc = vport.dflt_qv_rsrc
    if not rsrc.rxq_grps:
        return  # no queues
    split = rsrc.rxq_model == prog.constant("VIRTCHNL2_QUEUE_MODEL_SPLIT")
    xsk = 1 << prog.constant("__IDPF_Q_XSK").value_()
    groups = check_ring_size("idpf rx queue groups", rsrc.num_rxq_grp.value_())
    for group in range(groups):
        grp = rsrc.rxq_grps[group]
        if split:
            yield from _buffer_queues(prog, grp.splitq, group, xsk)
            rxqs = grp.splitq.rxq_sets
            count = grp.splitq.num_rxq_sets.value_()
        else:
            rxqs = grp.singleq.rxqs
            count = grp.singleq.num_rxq.value_()
        if count > len(rxqs):
            raise ValueError(f"idpf rx queue group {group}: {count} rx queues (corrupt?)")
        for j in range(count):
            if not rxqs[j]:
                continue
            rxq = rxqs[j].rxq if split else rxqs[j]
            if rxq.flags[0] & xsk:
                continue  # AF_XDP: user memory, and no stash
            queue = rxq.idx.value_()
            if not split and rxq.rx_buf and rxq.pp:
                slots = check_ring_size(f"idpf rx queue {queue}", rxq.desc_count.value_())
                yield from _posted(prog, rxq.rx_buf, slots, queue, None)
            yield from _stash(prog, rxq, queue)


def _buffer_queues(prog: Program, splitq: Object, group: int, xsk: int) -> Iterator[RingEntry]:
    """The posted buffers of a split-queue group's buffer queues."""
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
            if array and pool and count:
                yield from _posted(prog, array, count, group, ring)


def _posted(
    prog: Program, array: Object, count: int, queue: int, ring: Optional[str]
) -> Iterator[RingEntry]:
    """The buffers of ``count`` libeth buffers at ``array`` whose netmem is not 0."""
    fqe = prog.type("struct libeth_fqe")
    stride = drgn.sizeof(fqe)
    netmem_at = drgn.offsetof(fqe, "netmem")
    base = array.value_()
    netmems = words_of(prog, prog.read(base, count * stride), netmem_at, stride, count)
    for slot, netmem in enumerate(netmems):
        if netmem:
            yield RingEntry(queue, slot, base + slot * stride + netmem_at, netmem, ring=ring)


def _stash(prog: Program, rxq: Object, queue: int) -> Iterator[RingEntry]:
    """What rx queue ``rxq`` keeps of the frame it has not finished."""
    if not prog.type("struct idpf_rx_queue").has_member("xdp"):
        return  # before a4d755d1040a: an sk_buff, found by its pages' skb holders
    stash = rxq.xdp
    data = stash.data.value_()
    if not data:
        return
    yield RingEntry(queue, 0, stash.data.address_, data, ring="stash")
    if not stash.flags & prog.constant("XDP_FLAGS_HAS_FRAGS"):
        return
    # xdp_get_shared_info_from_buff(): at the frame's hard end, data_hard_start
    # + frame_sz less SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
    shinfo_type = prog.type("struct skb_shared_info")
    start = data - stash.headroom.value_()
    end = start + stash.frame_sz.value_()
    shinfo_size = -(-drgn.sizeof(shinfo_type) // CACHE_LINE) * CACHE_LINE
    if end - shinfo_size < start:
        raise ValueError(
            f"idpf rx queue {queue} stash: a {end - start}-byte frame cannot hold "
            f"its shared info (corrupt?)"
        )
    shinfo = Object(prog, shinfo_type, address=end - shinfo_size)
    nr_frags = shinfo.nr_frags.value_()
    if nr_frags > len(shinfo.frags):
        raise ValueError(f"idpf rx queue {queue} stash: {nr_frags} frags (corrupt?)")
    for i in range(nr_frags):
        netmem = shinfo.frags[i].netmem
        yield RingEntry(queue, i, netmem.address_, netmem.value_(), ring="stash frag")
