"""
Platform facts come from the target: arm64 with 4 and 16 KiB pages reads as
x86-64 does, with the page size, word size and byte order of the target.
"""

import struct

import drgn
import pytest
from conftest import FIXTURES, expected, run_cli, target_at

from netmem_probe.fake.fixture import write_fixture
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.world import World
from netmem_probe.kernel.holders import HolderSearch
from netmem_probe.kernel.platform import platform_facts, word_format
from netmem_probe.kernel.walk import Problems
from netmem_probe.target import open_program

ARM64 = {"linux-7.3-arm64": 4096, "linux-7.3-arm64-16k": 16384}


@pytest.mark.parametrize("layout, page_size", [("linux-7.3", 4096), *ARM64.items()])
def test_platform_facts_are_the_targets(layout, page_size):
    prog = World(layout).program()
    facts = platform_facts(prog)
    assert (facts.page_size, facts.page_shift) == (page_size, page_size.bit_length() - 1)
    assert (facts.byte_order, facts.word_size, word_format(prog, 2)) == ("little", 8, "<2Q")
    arch = drgn.Architecture.X86_64 if layout == "linux-7.3" else drgn.Architecture.AARCH64
    assert prog.platform.arch == arch


@pytest.mark.parametrize("layout, page_size", ARM64.items())
def test_an_arm64_fixture_is_an_aarch64_core_with_the_kernels_vmcoreinfo(layout, page_size):
    core = FIXTURES / f"{layout}-mixed" / "vmcore"
    assert struct.unpack_from("<H", core.read_bytes(), 18)[0] == 183  # EM_AARCH64
    prog = open_program(fixture=str(core.parent))
    info = dict(line.split("=", 1) for line in prog["VMCOREINFO"].string_().decode().splitlines())
    assert info["PAGESIZE"] == str(page_size)
    # arch_crash_save_vmcoreinfo() of Debian's VA_BITS=52 kernels, run with
    # 48-bit (4k) or 47-bit (16k) virtual addresses
    assert info["NUMBER(VA_BITS)"] == "52"
    assert int(info["NUMBER(TCR_EL1_T1SZ)"], 16) == (16 if page_size == 4096 else 17)
    assert {"NUMBER(kimage_voffset)", "NUMBER(PHYS_OFFSET)", "KERNELOFFSET"} <= set(info)
    assert prog.platform.arch == drgn.Architecture.AARCH64
    assert prog["PAGE_SIZE"].value_() == page_size


@pytest.mark.parametrize("layout, page_size", ARM64.items())
def test_inflight_mem_is_inflight_times_the_kernels_pages_of_the_pools_order(layout, page_size):
    name = f"{layout}-mixed"
    result = run_cli("-f", str(FIXTURES / name), "pools", "--json")
    orders = {p["id"]: p["order"] for p in expected(name)["pools"]}
    records = result.json()
    assert records and any(orders[r["id"]] for r in records)
    for record in records:
        assert record["inflight-mem"] == record["inflight"] * (page_size << orders[record["id"]])


def _world_with_one_skb(layout):
    w = World(layout)
    dev = w.init_net.netdev("eth0")
    pool = FakePagePool(w, netdev=dev, order=1)
    head, frag = pool.alloc_pages(2)
    sock = FakeSocket(w, w.init_net, local=("10.1.1.1", 443), remote=("10.1.1.2", 5555))
    skb = sock.queue(FakeSkb(w, [frag], head_page=head, dev=dev))
    return w, head, skb


@pytest.mark.parametrize("layout, page_size", ARM64.items())
def test_a_direct_map_address_names_the_page_of_its_pool_order(layout, page_size):
    w, head, skb = _world_with_one_skb(layout)
    prog = w.program()
    # the head page's last bytes: past the first 4 KiB of a 16 KiB page
    start = w.page_virt(head.pfn)
    target = target_at(prog, start + page_size - 0x10)
    assert target.netmem == head.netmem and target.kind == "page"
    assert target.span == (start, start + 2 * page_size)  # the pool's order-1 compound
    found = HolderSearch(prog, Problems()).find([target])[head.netmem]
    assert [(h.kind, h.skb) for h in found] == [("skb-head", skb.obj.addr)]
    sock = found[0].sock
    assert sock is not None and (sock.local, sock.remote) == ("10.1.1.1:443", "10.1.1.2:5555")


@pytest.mark.parametrize("layout", ARM64)
def test_decode_gives_the_pfn_and_physical_address_of_arm64_ram(layout, tmp_path):
    w, head, _ = _world_with_one_skb(layout)
    write_fixture(w, str(tmp_path / "fx"), "one skb")
    result = run_cli("-f", str(tmp_path / "fx"), "decode", hex(head.netmem), "--json")
    record = result.json()[0]
    ram = w.machine.ram_base
    assert int(str(record["pfn"]), 0) == head.pfn and head.pfn >= ram >> w.page_shift
    assert int(record["phys"], 16) == head.pfn << w.page_shift
