"""Of sk_buffs sharing one skb_shared_info, the holder is one the slab holds, not a freed one."""

import pytest
from conftest import target_at
from drgn.helpers.linux.slab import slab_object_info

from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.world import World
from netmem_probe.kernel.holders import HolderSearch
from netmem_probe.kernel.skbs import find_skb_slabs
from netmem_probe.kernel.walk import Problems


def _freed_clone_below_the_queued_one():
    """
    skb ``freed`` and its clone ``queued`` share one skb_shared_info holding
    a pool page; ``freed`` (the lower address) went back to the slab with
    its head and end intact (in a slab of its own, its free pointer is
    NULL), ``queued`` waits on a UDP socket.
    """
    w = World("linux-7.3")
    page = FakePagePool(w).alloc_pages(1)[0]
    freed = FakeSkb(w, [page])
    assert w.skb_caches is not None  # the 7.3 layout models the skb slabs
    cache = w.skb_caches.head
    while cache.used < cache.per_slab:  # the rest of freed's slab, in use
        FakeSkb(w)
    queued = FakeSkb(w)
    for field in ("head", "data", "end"):
        queued.obj.set(field, freed.obj.value[field])
    freed.shinfo.set("dataref", {"counter": 2})
    sock = FakeSocket(w, w.init_net, local=("10.99.0.2", 7000), owns_skbs=False)
    sock.queue(queued)
    cache.free(freed.obj)  # the only free object of its slab
    assert freed.obj.addr < queued.obj.addr
    return w, page, freed, queued, sock


def test_the_fake_slab_records_a_freed_skb_as_free():
    w, _, freed, queued, _ = _freed_clone_below_the_queued_one()
    prog = w.program()
    infos = [slab_object_info(prog, skb.obj.addr) for skb in (freed, queued)]
    assert [info.allocated if info else None for info in infos] == [False, True]


@pytest.mark.parametrize("from_slabs", [False, True], ids=["ram-search", "slabs"])
def test_a_freed_clone_below_the_queued_skb_is_not_the_holder(from_slabs):
    w, page, _, queued, sock = _freed_clone_below_the_queued_one()
    prog = w.program()
    slabs = find_skb_slabs(prog, Problems()) if from_slabs else None
    found = HolderSearch(prog, Problems()).find([target_at(prog, page.netmem)], slabs)
    (frag,) = [h for h in found[page.netmem] if h.kind == "skb-frag"]
    assert frag.skb == queued.obj.addr
    assert frag.sock is not None and frag.sock.address == sock.obj.addr
    assert frag.queue == "receive"
