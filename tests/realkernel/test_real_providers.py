"""
``providers``, ``niovs`` and niov ``decode`` on real Debian kernel dumps (the real-kernel tier).

Runs when ``NETMEM_PROBE_REALKERNEL`` names a series (``scripts/test`` sets it)
whose dumps ``scripts/realkernel/make-vmcore`` has cached.  On 7.1+ kernels the
scenario's ``zcrx-hold`` registers a device-less zcrx ifq (``ZCRX_REG_NODEV``),
receives into it and keeps some buffers: no page pool and no rx queue leads
to it, only the io_uring file the process has open.
"""

import json

import pytest
from conftest import run_cli
from realkernel_dumps import dumps, program, truth

pytestmark = pytest.mark.realkernel


@pytest.fixture(params=dumps(), ids=lambda d: "-".join(d))
def zcrx_dump(request):
    series, kind = request.param
    zcrx = truth(series).get("zcrx")
    if not zcrx:
        pytest.skip(f"{series}: the kernel has no ZCRX_REG_NODEV (7.1+), so no zcrx area")
    return zcrx, program(series, kind)


def test_the_device_less_area_is_found_through_the_process_files(zcrx_dump):
    ZCRX, prog = zcrx_dump
    result = run_cli("providers", "--json", program=prog)
    assert result.code == 0, result.err
    (area,) = [a for a in result.json() if a["kind"] == "io_uring"]
    assert (area["netdev"], area["queues"], area["pools"]) == (None, [], [])
    assert area["niovs"] == ZCRX["num_niovs"] and area["user"] == ZCRX["held"]
    # Returned buffers go straight back to the freelist (copy fallback).
    assert area["free"] == ZCRX["num_niovs"] - ZCRX["held"]
    assert area["niov-size"] == ZCRX["rx_buf_len"] and area["inconsistent"] == 0


def test_user_held_niovs_are_the_buffers_the_process_kept(zcrx_dump):
    ZCRX, prog = zcrx_dump
    result = run_cli("niovs", "--state", "user", "--json", program=prog)
    assert result.code == 0, result.err
    held = [json.loads(line) for line in result.out.splitlines()]
    assert sorted(n["offset"] for n in held) == sorted(ZCRX["held_offsets"])
    assert all(n["user-refs"] >= 1 and n["pool-id"] is None for n in held)
    decoded = run_cli("decode", "--json", held[0]["netmem"], program=prog).json()[0]
    assert (decoded["type"], decoded["index"], decoded["error"]) == (
        "io_uring",
        held[0]["index"],
        None,
    )


def test_the_area_names_the_process_and_ring_fd_holding_it(zcrx_dump):
    ZCRX, prog = zcrx_dump
    result = run_cli("providers", "--json", program=prog)
    (area,) = [a for a in result.json() if a["kind"] == "io_uring"]
    (owner,) = area["owners"]
    assert (owner["pid"], owner["fd"]) == (ZCRX["pid"], ZCRX["ring_fd"])
    assert owner["comm"].startswith("zcrx-hold")  # the binary, cut to TASK_COMM_LEN
