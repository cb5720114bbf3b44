"""
Holders on real Debian kernel dumps (the real-kernel tier): every in-flight
page of every pool has a holder, the virtio_net rx rings are named as such,
and an unknown reference's slab object is named with what points at it.
"""

import pytest
from realkernel_dumps import dumps, program, truth

from netmem_probe.kernel.drivers import RxRings
from netmem_probe.kernel.holders import search_words
from netmem_probe.kernel.slab import place_of, referrers, slab_place
from netmem_probe.kernel.walk import Problems

pytestmark = pytest.mark.realkernel


@pytest.fixture(params=dumps(), ids=lambda d: "-".join(d))
def dump(request):
    series, kind = request.param
    return truth(series), program(series, kind)


def test_virtio_net_rx_rings_are_walked_on_every_device(dump):
    truth, prog = dump
    rings = RxRings(prog, Problems())
    assert not rings.unwalked
    virtio = {s["ifname"] for s in truth["scenario"]
              if s["kind"] == "virtio_net" and not s.get("device_deleted")}
    walked = {name.split()[1] for name in rings.walked if name.startswith("virtio_net ")}
    assert virtio <= walked
    per_device = {}
    for slot in rings.by_address.values():
        per_device.setdefault(slot.netdev, set()).add((slot.queue, slot.slot))
    # Debian's virtio_net posts a full ring of mergeable buffers on each queue.
    assert all(len(slots) > 128 for slots in per_device.values()), per_device


def test_a_slab_object_is_named_with_the_member_pointing_at_it(dump):
    _, prog = dump
    rings = RxRings(prog, Problems())
    address = next(iter(rings.by_address))
    place = slab_place(prog, address)
    assert place is not None and place.allocated and place.cache.startswith("kmalloc-")
    # One step back: the vring_virtqueue's split.desc_state points at the array.
    found = referrers(prog, {place.object},
                      search_words(prog, {place.object}, (), Problems()))[place.object]
    assert found and any(p.startswith("kmalloc-") for p in found), found
    assert place_of(prog, prog.symbol("init_net").address + 8).startswith("init_net.")
