"""
``pools --ynl`` and ``pool --ynl`` on dumps of real Debian kernels print the
objects the kernel's own netlink answered just before the dump (every
namespace's ``page-pool-get`` dump, and ``page-pool-stats-get``).
"""

import json

import pytest

from conftest import run_cli
from realkernel_dumps import dumps, program, truth

pytestmark = pytest.mark.realkernel


def _key(obj):
    return json.dumps(obj, sort_keys=True)


@pytest.mark.parametrize("series,kind", dumps())
def test_pools_ynl_prints_the_objects_of_netlinks_dump(series, kind):
    t = truth(series)
    theirs = [p for ns in t["netns"] for p in (ns["page-pool-get"] or [])]
    result = run_cli("pools", "--ynl", program=program(series, kind))
    assert result.code in (0, 1), result.err
    assert sorted(map(_key, json.loads(result.out))) == sorted(map(_key, theirs))


@pytest.mark.parametrize("series,kind", dumps())
def test_pool_ynl_prints_netlinks_stats_object(series, kind):
    stats = [s for ns in truth(series)["netns"] for s in (ns.get("page-pool-stats-get") or [])]
    prog = program(series, kind)
    for theirs in stats:
        result = run_cli("pool", str(theirs["info"]["id"]), "--ynl", program=prog)
        assert json.loads(result.out) == theirs
