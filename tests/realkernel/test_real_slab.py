"""
Slab lookups read once per cache (the real-kernel tier): ``SlabObjects``
answers as drgn's ``slab_object_info()`` does, call by call, for addresses
drawn from every slab page the memmap pass lists (allocated objects, free
ones on a slab's freelist or a CPU's sheaf, and slab padding alike).
"""

import random

import pytest
from drgn.helpers.linux.mm import phys_to_virt
from drgn.helpers.linux.slab import slab_object_info
from realkernel_dumps import dumps, program

from netmem_probe.kernel.skbs import find_skb_slabs
from netmem_probe.kernel.slab import SlabObjects
from netmem_probe.kernel.walk import Problems

pytestmark = pytest.mark.realkernel


@pytest.fixture(params=dumps(), ids=lambda d: "-".join(d))
def prog(request):
    return program(*request.param)


def _info(info):
    if info is None:
        return None
    return info.slab_cache.value_(), info.slab.value_(), info.address, info.allocated


def test_slab_objects_answer_as_drgns_slab_object_info(prog):
    slabs = find_skb_slabs(prog, Problems())
    assert slabs is not None and slabs.slab_ranges
    base = phys_to_virt(prog, 0).value_()
    rng = random.Random(14)
    ranges = list(slabs.slab_ranges)
    weights = [hi - lo for lo, hi in ranges]
    addresses = []
    for _ in range(400):
        lo, hi = rng.choices(ranges, weights)[0]
        addresses.append(base + rng.randrange(lo, hi))
    objects = SlabObjects(prog)
    ours = [_info(objects.info(a)) for a in addresses]
    drgns = [_info(slab_object_info(prog, a)) for a in addresses]
    assert ours == drgns
    states = {o[3] for o in ours if o is not None}
    assert True in states and False in states  # both kinds were compared
