"""``pages``: the memmap scan finds every page-pool page where its scenario put it."""

import io
import json

import drgn
import pytest
from conftest import expected, fixtures_with, run_cli

from netmem_probe.fake.objects import PAGE_SHIFT, RAM_SIZE
from netmem_probe.fake.pools import PP_FLAG_DMA_MAP, FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.netmem import pp_scheme
from netmem_probe.kernel.pages import PpPageScanner, SignatureMatcher
from netmem_probe.kernel.walk import Problems

PAGE_FIXTURES = fixtures_with("pages")
POOL_FIXTURES = fixtures_with("pools")


def _lines(result):
    return [json.loads(line) for line in result.out.splitlines()]


@pytest.mark.parametrize("name", PAGE_FIXTURES)
def test_every_pp_page_is_found_where_the_scenario_put_it(name):
    result = run_cli("-f", f"fixtures/vmcore-stubs/{name}", "pages", "--all-pools", "--json")
    assert result.code == 0, result.err
    assert _lines(result) == expected(name)["pages"]


@pytest.mark.parametrize("name", POOL_FIXTURES)
def test_count_equals_each_pools_inflight(name):
    result = run_cli(
        "-f", f"fixtures/vmcore-stubs/{name}", "pages", "--all-pools", "--count", "--json"
    )
    assert result.code == 0, result.err
    counts = {r["address"]: r for r in result.json()}
    for pool in expected(name)["pools"]:
        record = counts[pool["address"]]
        assert record["inflight"] == pool["inflight"]
        if "dmabuf" in pool or "io-uring" in pool:
            assert record["found"] is None  # a provider's net_iovs are not in the memmap
        else:
            assert record["found"] == pool["inflight"] and record["difference"] == 0


@pytest.mark.parametrize("name", PAGE_FIXTURES)
def test_default_is_the_pages_of_detached_pools_with_pages_in_flight(name):
    truth = expected(name)
    stalled = {p["address"] for p in truth["pools"] if p["detached"] and p["inflight"]}
    result = run_cli("-f", f"fixtures/vmcore-stubs/{name}", "pages", "--json")
    assert _lines(result) == [p for p in truth["pages"] if p["pool"] in stalled]


def test_pool_filter_and_table():
    truth = expected("linux-7.3-mixed")
    pool = truth["pages"][0]["pool-id"]
    want = [p for p in truth["pages"] if p["pool-id"] == pool]
    result = run_cli("-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "pages", "--pool", str(pool))
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "PFN",
        "PAGE",
        "POOL-ID",
        "PP-REFS",
        "REFCOUNT",
        "DMA-INDEX",
        "WHERE",
    ]
    assert [line.split()[1] for line in lines[2:-1]] == [p["page"] for p in want]
    assert lines[-1].startswith(f"{len(want)} page-pool pages of 1 pool;")


def test_an_unknown_pool_is_a_usage_error():
    result = run_cli("-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "pages", "--pool", "999")
    assert result.code == 2 and len(result.err.splitlines()) == 1


def test_count_reports_a_pool_whose_pages_are_missing():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    pool.alloc_pages(3)
    pool.hold += 2  # two pages the pool counts as out but that left the memmap
    result = run_cli("pages", "--all-pools", "--count", "--json", program=w.program())
    record = next(r for r in result.json() if r["id"] == pool.id)
    assert record["found"] == 3 and record["inflight"] == 5 and record["difference"] == -2
    assert result.code == 1 and f"pool {pool.id}: 3 pages found, 5 in flight" in result.err


def test_scan_finds_the_dma_indexed_pages_drgns_loop_misses():
    from drgn.helpers.linux.mm import for_each_page
    from drgn.helpers.linux.net import is_pp_page

    w = World("linux-7.3")
    pool = FakePagePool(w, flags=PP_FLAG_DMA_MAP)
    pages = pool.alloc_pages(4)
    prog = w.program()
    found = [p.page for p in PpPageScanner(prog).pages()]
    assert found == [p.netmem for p in pages] and all(p.dma_index for p in pages)
    assert not any(is_pp_page(page) for page in for_each_page(prog))


def _matcher(layout):
    w = World(layout)
    prog = w.program()
    return w, SignatureMatcher(prog, prog.type("struct page"), pp_scheme(prog))


def test_matcher_checks_the_whole_signature_word():
    w, matcher = _matcher("linux-7.3")
    delta = 0xDEAD000000000000

    def page(pp_magic):
        return drgn.Object(w.prog, "struct page", value={"pp_magic": pp_magic}).to_bytes_()

    records = [
        page(delta + 0x40),  # PP_SIGNATURE
        page(delta + 0x100),  # LIST_POISON1: the same top bytes
        page(delta + 0x40 | 3 | (0xFFFFFFFF << 7)),  # low bits and a full DMA index
        page(delta + 0x40 | 1 << 39),  # a bit above the DMA index
        page(0),
        page(delta + 0x40 | 0x80),
    ]
    assert matcher.matches(b"".join(records)) == [0, 2, 5]


def test_matcher_uses_the_page_type_on_pgty_netpp_kernels():
    w, matcher = _matcher("linux-7.1-rc")
    pages = [
        drgn.Object(w.prog, "struct page", value=v).to_bytes_()
        for v in (
            {"pp_magic": 0xDEAD000000000040},  # no longer the signature there
            {"page_type": 0xF9 << 24},
            {"page_type": 0xF0 << 24},  # PGTY_buddy
        )
    ]
    assert matcher.matches(b"".join(pages)) == [1]


def test_unreadable_memmap_is_skipped_and_reported():
    base = RAM_SIZE >> PAGE_SHIFT  # the first generated pfn
    hole = (base + 1024, base + 4096)

    def memmap(offset, count):
        first = base + offset // 64
        if first < hole[1] and first + count // 64 > hole[0]:
            raise drgn.FaultError("fake hole", 0)
        return bytes(count)

    w = World("linux-7.3", ram_size=2 * RAM_SIZE, memmap_fn=memmap)
    pool = FakePagePool(w)
    pool.alloc_pages(2)
    prog = w.program()
    problems = Problems()
    scanner = PpPageScanner(prog, problems, chunk_bytes=1 << 20)
    assert len(list(scanner.pages())) == 2
    assert [(h.start, h.end) for h in scanner.holes] == [hole]
    assert any("unreadable" in p.reason for p in problems.items)
    assert run_cli("pages", "--all-pools", "--count", program=prog).code == 4


def test_a_signature_without_a_registered_pool_is_reported():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    page = pool.alloc_pages(1)[0]
    assert w.page_pools_xa is not None and pool.id is not None
    del w.page_pools_xa.entries[pool.id]  # the pool is gone, its page is not
    prog = w.program()
    problems = Problems()
    assert list(PpPageScanner(prog, problems).pages()) == []
    assert [p.address for p in problems.items] == [page.netmem]


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    @property
    def text(self) -> str:
        return self.getvalue()


@pytest.mark.parametrize("tty", [True, False])
def test_progress_shows_on_a_terminal_only_and_is_erased(tty):
    from netmem_probe.report.progress import Progress

    stream = _Terminal(tty)
    progress = Progress("scanning the memmap", "struct pages", delay=0, stream=stream)
    progress(2_000_000, 4_000_000)
    shown = stream.text
    progress.close()
    if tty:
        assert "scanning the memmap: 50% (2.0M of 4.0M struct pages, " in shown
        assert "struct pages/s, " in shown and " left)" in shown
        assert stream.text.endswith("\r\033[K")
    else:
        assert stream.text == ""
