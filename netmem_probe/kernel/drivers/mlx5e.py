"""
mlx5e
-----

Receive buffers of the Ethernet part of ``mlx5_core``
(``drivers/net/ethernet/mellanox/mlx5/core/``).  The netdev's parent device
is the one ``mlx5e_build_nic_netdev()`` passes to ``SET_NETDEV_DEV()``:
``mdev->device``, the PCI function bound to the driver ``mlx5_core`` (or,
for a sub-function, its auxiliary device bound to ``mlx5_core.sf``).
``netdev_priv(dev)`` is a ``struct mlx5e_priv`` whose
``channels.c[0..channels.num)`` each have an ``rq`` (rx queue ``rq.ix``).

Since Linux kernel commits 3f93f82988bc ("net/mlx5e: RX, Defer page release
in legacy rq for better recycling") and 4c2a13236807 ("net/mlx5e: RX, Defer
page release in striding rq for better recycling") (in v6.4), an rq keeps
the pool page of each WQE until the WQE is refilled, in a
``struct mlx5e_frag_page`` whose first word is the page (``page``; since
Linux kernel commit d1668f119943 ("net/mlx5e: Convert over to netmem") (in
v6.17), the ``netmem``):

- a legacy (cyclic) rq: ``wqe.frags[ix << log_num_frags ..]`` describe the
  ``num_frags`` buffers of WQE ``ix``; a buffer whose ``flags`` have
  ``MLX5E_WQE_FRAG_LAST_IN_PAGE`` and not ``MLX5E_WQE_FRAG_SKIP_RELEASE``
  (Linux kernel commit 625dff29df39 ("net/mlx5e: RX, Change wqe last_in_page
  field from bool to bit flags") (in v6.4)) holds its ``frag_page``, one of
  ``wqe.alloc_units->frag_pages[]`` (buffers sharing a page name it once,
  at the WQE of the page's last buffer);
- a striding rq: WQE ``ix``'s ``struct mlx5e_mpw_info`` (the WQEs are
  ``sizeof(mpw_info) + pages_per_wqe`` frag pages apart) holds
  ``alloc_units.frag_pages[i]`` unless bit ``i`` of its
  ``skip_release_bitmap`` is set (all set before the first fill and after a
  release).

Kernels before v6.4 (no ``struct mlx5e_frag_page``) are not walked.  The
linear-XDP page (``mpwqe.linear_info``) and AF_XDP rqs (``xsk_pool``, buffers
from user memory) are not rx-ring pool pages here.
"""

from typing import Iterator

import drgn
from drgn import Object, Program, cast
from drgn.helpers.linux.net import netdev_priv

from netmem_probe.kernel.drivers.common import RingEntry, check_ring_size, words_of
from netmem_probe.kernel.structs import member_exists

__all__ = ("rx_entries",)

# MLX5_WQ_TYPE_* of include/linux/mlx5/mlx5_ifc.h: the device interface's
# values for rq->wq_type (an anonymous enum, so by value).
MLX5_WQ_TYPE_CYCLIC = 1
MLX5_WQ_TYPE_LINKED_LIST_STRIDING_RQ = 2


def _frag_page_word(prog: Program) -> int:
    """Offset of the page word in ``struct mlx5e_frag_page``."""
    frag_page = prog.type("struct mlx5e_frag_page")
    name = "netmem" if member_exists(frag_page, "netmem") else "page"
    return drgn.offsetof(frag_page, name)


def _legacy(prog: Program, rq: Object, queue: int, word_at: int) -> Iterator[RingEntry]:
    """The held frag pages of a cyclic rq, by WQE index."""
    info_type = prog.type("struct mlx5e_wqe_frag_info")
    if not member_exists(info_type, "flags"):
        raise LookupError("mlx5e_wqe_frag_info has no flags (a kernel before v6.4)")
    wqe = rq.wqe
    size = check_ring_size(f"mlx5e rx queue {queue}", wqe.wq.fbc.sz_m1.value_() + 1)
    log_frags = wqe.info.log_num_frags.value_()
    num_frags = wqe.info.num_frags.value_()
    max_frags = len(wqe.info.arr)
    if not 0 < num_frags <= min(max_frags, 1 << log_frags):
        raise ValueError(
            f"mlx5e rx queue {queue}: {num_frags} frags of {1 << log_frags} (corrupt?)"
        )
    count = check_ring_size(f"mlx5e rx queue {queue} frags", size << log_frags)
    last = 1 << prog.constant("MLX5E_WQE_FRAG_LAST_IN_PAGE").value_()
    skip = 1 << prog.constant("MLX5E_WQE_FRAG_SKIP_RELEASE").value_()
    stride = drgn.sizeof(info_type)
    flags_at = drgn.offsetof(info_type, "flags")
    page_at = drgn.offsetof(info_type, "frag_page")
    raw = prog.read(wqe.frags.value_(), count * stride)
    frag_pages = words_of(prog, raw, page_at, stride, count)
    units = wqe.alloc_units.value_()
    unit_size = drgn.sizeof(prog.type("struct mlx5e_frag_page"))
    netmems = words_of(prog, prog.read(units, count * unit_size), word_at, unit_size, count)
    for i, frag_page in enumerate(frag_pages):
        ix, frag = divmod(i, 1 << log_frags)
        if frag >= num_frags or raw[i * stride + flags_at] & (last | skip) != last:
            continue
        unit, misplaced = divmod(frag_page - units, unit_size)
        if misplaced or not 0 <= unit < count:
            raise ValueError(
                f"mlx5e rx queue {queue} slot {ix}: frag_page {frag_page:#x} is not one "
                f"of its alloc_units (corrupt?)"
            )
        yield RingEntry(queue, ix, frag_page + word_at, netmems[unit])


def _striding(prog: Program, rq: Object, queue: int, word_at: int) -> Iterator[RingEntry]:
    """The held frag pages of a striding rq, by WQE index."""
    mpwqe = rq.mpwqe
    size = check_ring_size(f"mlx5e rx queue {queue}", mpwqe.wq.fbc.sz_m1.value_() + 1)
    info_type = prog.type("struct mlx5e_mpw_info")
    per_wqe = mpwqe.pages_per_wqe.value_()
    bitmap_at = drgn.offsetof(info_type, "skip_release_bitmap")
    bitmap = info_type.member("skip_release_bitmap").type
    bitmap_bytes = drgn.sizeof(bitmap)
    if not 0 < per_wqe <= 8 * bitmap_bytes:
        raise ValueError(f"mlx5e rx queue {queue}: {per_wqe} pages per WQE (corrupt?)")
    page_size = drgn.sizeof(prog.type("struct mlx5e_frag_page"))
    units_at = drgn.offsetof(info_type, "alloc_units")
    stride = drgn.sizeof(info_type) + per_wqe * page_size
    base = mpwqe.info.value_()
    word = prog.type("unsigned long").size
    if stride % word or (units_at + word_at) % word or bitmap_at % word:
        raise LookupError("mlx5e_mpw_info: fields not word-aligned")
    words = words_of(prog, prog.read(base, size * stride), 0, word, size * stride // word)
    per_page = page_size // word
    for ix in range(size):
        at = ix * stride // word
        bits = words[at + bitmap_at // word : at + (bitmap_at + bitmap_bytes) // word]
        skipped = sum(bit << (8 * word * k) for k, bit in enumerate(bits))
        first = at + (units_at + word_at) // word
        for i in range(per_wqe):
            if not skipped >> i & 1:
                netmem = words[first + i * per_page]
                yield RingEntry(queue, ix, base + (first + i * per_page) * word, netmem)


def rx_entries(prog: Program, dev: Object) -> Iterator[RingEntry]:
    """
    Every pool page (netmem) held by an rx queue of the mlx5e
    ``struct net_device *`` ``dev``: the channel's ``rq.ix``, the WQE index
    and the ``struct mlx5e_frag_page`` word naming the page.

    :raises LookupError: without mlx5_core's types, or before v6.4.
    :raises ValueError: on a ring whose bounds or pointers make no sense.
    """
    word_at = _frag_page_word(prog)  # LookupError before v6.4
    priv = cast("struct mlx5e_priv *", netdev_priv(dev))
    channels = priv.channels
    if not channels.c:
        return  # closed: the channels are freed
    count = check_ring_size("mlx5e channels", channels.num.value_())
    for i in range(count):
        rq = channels.c[i].rq
        if rq.xsk_pool:
            continue
        queue = rq.ix.value_()
        wq_type = rq.wq_type.value_()
        if wq_type == MLX5_WQ_TYPE_CYCLIC:
            yield from _legacy(prog, rq, queue, word_at)
        elif wq_type == MLX5_WQ_TYPE_LINKED_LIST_STRIDING_RQ:
            yield from _striding(prog, rq, queue, word_at)
        else:
            raise ValueError(f"mlx5e rx queue {queue}: unknown wq_type {wq_type} (corrupt?)")
