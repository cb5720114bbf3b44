"""``decode``: netmem_ref values against what each fixture's scenario put there."""

import pytest
from conftest import expected, fixtures_with, run_cli

from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.decode import decode_netmem
from netmem_probe.kernel.netmem import PageInfo, is_pp_page, netmem_to_page, pp_scheme

DECODE_FIXTURES = fixtures_with("decode")


@pytest.mark.parametrize("name", DECODE_FIXTURES)
def test_decode_reports_what_the_scenario_built(name):
    cases = expected(name)["decode"]
    result = run_cli(
        "-f",
        f"fixtures/vmcore-stubs/{name}",
        "decode",
        "--json",
        *[case["netmem"] for case in cases],
    )
    got = result.json()
    assert len(got) == len(cases)
    for want, have in zip(cases, got):
        if want.get("error") is True:
            assert have["error"], have
        else:
            assert have == want
    assert result.code == (1 if any(c.get("error") for c in cases) else 0)


def test_decode_reads_values_from_stdin():
    case = next(c for c in expected("linux-7.3-mixed")["decode"] if not c["error"])
    result = run_cli(
        "-f",
        "fixtures/vmcore-stubs/linux-7.3-mixed",
        "decode",
        "--json",
        "-",
        stdin=f"{case['netmem']}\n",
    )
    assert result.json() == [case] and result.code == 0


def test_decimal_and_hex_name_the_same_netmem():
    case = next(c for c in expected("linux-7.3-mixed")["decode"] if not c["error"])
    as_hex = run_cli(
        "-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "decode", "--json", case["netmem"]
    ).json()
    as_dec = run_cli(
        "-f",
        "fixtures/vmcore-stubs/linux-7.3-mixed",
        "decode",
        "--json",
        str(int(case["netmem"], 16)),
    ).json()
    assert as_hex == as_dec


def test_dma_indexed_pages_are_pp_pages_where_drgns_helper_says_no():
    from drgn.helpers.linux.net import is_pp_page as drgn_is_pp_page

    w = World("linux-7.3")
    pool = FakePagePool(w, flags=1)  # PP_FLAG_DMA_MAP: pages get a DMA index
    page = pool.alloc_pages(1)[0]
    prog = w.program()
    obj = netmem_to_page(prog, page.netmem)
    assert (obj.pp_magic.value_() >> 7) & 0xFFFFFFFF == page.dma_index > 0
    assert is_pp_page(obj)
    assert not drgn_is_pp_page(obj)  # drgn 0.3.0 does not mask the DMA index


def test_pp_signature_comes_from_the_targets_poison_delta():
    prog = World("linux-6.18").program()
    assert (
        pp_scheme(prog).signature
        == prog["poll_spurious_irq_timer"].entry.next.value_() - 0x300 + 0x40
    )


def test_pgty_netpp_kernels_mark_pp_pages_by_page_type():
    w = World("linux-7.1-rc")
    pool = FakePagePool(w)
    page = pool.alloc_pages(1)[0]
    prog = w.program()
    info = decode_netmem(prog, page.netmem)
    assert isinstance(info, PageInfo)
    assert info.is_pp and info.scheme == "page_type" and info.pool_id == pool.id
    assert netmem_to_page(prog, page.netmem).pp_magic.value_() == 0
