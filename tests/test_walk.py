"""The bounded walks of kernel/walk.py over real drgn Objects of fake kernels."""

from netmem_probe.fake.world import World
from netmem_probe.kernel.walk import Problems, xa_entries


def test_an_xarray_indexed_by_kernel_addresses_is_walked_from_its_shift_60_root():
    # An XArray keyed by a pointer (netdev_nl_family.sock_privs is keyed by a
    # struct sock address) has a root node of shift 60 on a 64-bit kernel.
    w = World("linux-7.3")
    assert w.page_pools_xa is not None
    index = 0xFFFF888012345678
    entry = w.alloc("struct page_pool").addr
    w.page_pools_xa.entries[index] = entry
    prog = w.program()
    problems = Problems()
    found = list(xa_entries(prog, prog["page_pools"].address_, problems=problems))
    assert not problems, [str(p) for p in problems.items]
    assert found[-1] == (index, entry)
    assert dict(found) == {i: e for i, e in w.page_pools_xa.entries.items() if e}
