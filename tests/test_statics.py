"""
References in static data: a page pointer in the kernel image's ``.data`` or
``.bss`` (or a module's) is found by the RAM search at its direct-map alias
and named by the variable it lies in.
"""

import json

import drgn
import pytest
from conftest import run_cli
from test_drgn_snippets import project, run_snippet, snippet
from test_holders_snippet_places import _same_holders_and_problems

from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.holders import HolderSearch, page_target
from netmem_probe.kernel.statics import StaticData
from netmem_probe.kernel.walk import Problems
from netmem_probe.snippets import KEYS

# A struct timer_list in the kernel's .bss: entry.pprev is a pointer slot.
VARIABLE = "poll_spurious_irq_timer"


def _world_with_a_static_page(layout: str, detached: bool = False):
    """A pool whose one in-flight page only a kernel variable points at."""
    w = World(layout)
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    pool = FakePagePool(w, netdev=dev, napi_id=8300)
    (page,) = pool.alloc_pages(1)
    if detached:
        pool.detach(at=86000.0)
    prog = w.program()
    # written into the committed image, where the kernel code keeping it put it
    slot = w.global_(VARIABLE).addr + drgn.offsetof(prog.type("struct timer_list"), "entry.pprev")
    w.mem.write(slot, page.netmem.to_bytes(8, "little"))
    return w, prog, pool, page, slot


@pytest.mark.parametrize("layout", ["linux-7.3", "linux-7.3-arm64-16k", "linux-5.15"])
def test_a_page_in_the_kernels_static_data_is_named_by_its_variable(layout):
    w, prog, _, page, slot = _world_with_a_static_page(layout)
    result = run_cli("holders", "--json", hex(page.netmem), program=prog)
    assert result.code == 0, result.err  # held: not "held by nothing"
    (record,) = result.json()
    (holder,) = record["holders"]
    assert holder["kind"] == "static-data"
    assert holder["module"] is None and holder["symbol"] == f"{VARIABLE}.entry.pprev"
    assert holder["release"] == f"the kernel code that owns {VARIABLE} dropping it"
    assert f"(the kernel's bss at {slot:#x})" in holder["detail"]


def test_pool_holders_count_it_as_static_data_with_its_release():
    w, prog, pool, _, _ = _world_with_a_static_page("linux-7.3")
    holders = run_cli("pool", str(pool.id), "--holders", "--json", program=prog).json()["holders"]
    assert holders["holder-kinds"] == {"static-data": 1}
    assert holders["release"] == [
        {"action": f"the kernel code that owns {VARIABLE} dropping it", "pages": 1}
    ]


def test_leaks_calls_a_page_static_data_holds_parked():
    w, prog, pool, page, _ = _world_with_a_static_page("linux-7.3", detached=True)
    result = run_cli("leaks", "--json", program=prog)
    (verdict,) = [json.loads(line) for line in result.out.splitlines()]
    assert verdict["verdict"] == "parked" and verdict["holder-kind"] == "static-data"
    assert result.code == 0, result.err


def test_a_word_outside_static_data_is_not_named():
    w, prog, pool, page, slot = _world_with_a_static_page("linux-7.3")
    problems = Problems()
    statics = StaticData(prog, problems)
    target = page_target(prog, page.pfn, page.netmem, pool.obj.addr, pool.id, 0, problems)
    (hit,) = HolderSearch(prog, problems).find([target])[page.netmem]
    assert hit.static is not None and hit.static.address == slot
    assert statics.at(hit.address) == hit.static
    # the page's own memory, in the direct map: RAM outside the kernel image
    assert statics.at(w.page_virt(page.pfn)) is None
    assert not problems


@pytest.mark.parametrize("layout", ["linux-7.3", "linux-7.3-arm64-16k"])
def test_the_holders_script_names_static_data_as_json_does(layout):
    w, prog, _, page, _ = _world_with_a_static_page(layout)
    references, problems = _same_holders_and_problems(w, [page], prog)
    assert [h["kind"] for h in references] == ["static-data"] and problems == []


def test_the_leaks_script_calls_a_page_static_data_holds_parked_as_json_does():
    w, prog, _, _, _ = _world_with_a_static_page("linux-7.3", detached=True)
    mine = [json.loads(line) for line in run_cli("leaks", "--json", program=prog).out.splitlines()]
    theirs = run_snippet(snippet(prog, "leaks"), prog)
    assert [v["verdict"] for v in mine] == ["parked"]
    assert project(theirs, KEYS["leaks"]) == project(mine, KEYS["leaks"])
