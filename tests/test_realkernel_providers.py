"""
``providers``, ``niovs`` and niov ``decode`` on real Debian kernel dumps (the real-kernel tier).

Runs when ``NETMEM_PROBE_REALKERNEL`` names a series (``scripts/test`` sets it)
whose dumps ``scripts/realkernel/make-vmcore`` has cached.  On 7.1+ kernels the
scenario's ``zcrx-hold`` registers a device-less zcrx ifq (``ZCRX_REG_NODEV``),
receives into it and keeps some buffers: no page pool and no rx queue leads
to it, only the io_uring file the process has open.
"""

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from netmem_probe.target import open_program

SERIES = os.environ.get("NETMEM_PROBE_REALKERNEL")
CACHE = Path(os.environ.get("NETMEM_PROBE_CACHE",
                            Path.home() / ".cache" / "netmem-probe" / "realkernel"))
KERNEL = CACHE / f"latest-{SERIES}"
DUMPS = ("vmcore.elf", "vmcore.kdump")


def _zcrx_truth():
    try:
        return json.loads((KERNEL / "truth.json").read_text()).get("zcrx")
    except (OSError, ValueError):
        return None


ZCRX = _zcrx_truth() if SERIES else None

pytestmark = pytest.mark.skipif(
    not ZCRX or not all((KERNEL / f).exists() for f in DUMPS + ("vmlinux",)),
    reason="real-kernel tier: set NETMEM_PROBE_REALKERNEL to a 7.1+ series and run "
           "scripts/realkernel/make-vmcore")


@pytest.fixture(scope="module", params=DUMPS)
def prog(request):
    symbols = [str(p) for p in [KERNEL / "vmlinux", *sorted(KERNEL.glob("*.ko.debug"))]]
    return open_program(core=str(KERNEL / request.param), symbols=symbols)


def test_the_device_less_area_is_found_through_the_process_files(prog):
    result = run_cli("providers", "--json", program=prog)
    assert result.code == 0, result.err
    (area,) = [a for a in result.json() if a["kind"] == "io_uring"]
    assert (area["netdev"], area["queues"], area["pools"]) == (None, [], [])
    assert area["niovs"] == ZCRX["num_niovs"] and area["user"] == ZCRX["held"]
    # Returned buffers go straight back to the freelist (copy fallback).
    assert area["free"] == ZCRX["num_niovs"] - ZCRX["held"]
    assert area["niov-size"] == ZCRX["rx_buf_len"] and area["inconsistent"] == 0


def test_user_held_niovs_are_the_buffers_the_process_kept(prog):
    result = run_cli("niovs", "--state", "user", "--json", program=prog)
    assert result.code == 0, result.err
    held = [json.loads(line) for line in result.out.splitlines()]
    assert sorted(n["offset"] for n in held) == sorted(ZCRX["held_offsets"])
    assert all(n["user_refs"] >= 1 and n["pool-id"] is None for n in held)
    decoded = run_cli("decode", "--json", held[0]["netmem"], program=prog).json()[0]
    assert (decoded["type"], decoded["index"], decoded["error"]) == (
        "io_uring", held[0]["index"], None)
