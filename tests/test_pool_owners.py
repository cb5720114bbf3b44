"""Pools found from the structures that own them: veth's and virtio_net's rx queues."""

from conftest import run_cli

from netmem_probe.fake.drivers import FakeVeth, FakeVirtioNet
from netmem_probe.fake.net import NetNamespace
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.pool_discovery import discover_pools, pools_from_owners
from netmem_probe.kernel.walk import Problems


def _owned_world():
    """A veth pair's rx queue 1 and a virtio_net NIC's queue 0 each hold a pool."""
    w = World("linux-7.3")
    nic = FakeVirtioNet(w.init_net, "eth0", queues=2)
    rx = FakePagePool(w, netdev=nic.dev, napi_id=8300, queue=0)
    rx.alloc_pages(3)
    nic.own(0, rx)
    veth = FakeVeth(NetNamespace(w, "nsA"), "veth0", queues=2)
    idle = FakePagePool(w)  # XDP on, nothing received yet: no page names it
    veth.own(1, idle)
    loose = FakePagePool(w)  # no owner: its pages alone name it
    loose.alloc_pages(2)
    return w, nic, rx, veth, idle, loose


def test_each_rx_queues_pool_is_found_from_its_netdev_in_any_namespace():
    w, _, rx, _, idle, loose = _owned_world()
    problems = Problems()
    found = pools_from_owners(w.program(), problems)
    assert found == {rx.obj.addr: "virtio-net-rq", idle.obj.addr: "veth-rq"}
    assert not problems.items and loose.obj.addr not in found


def test_without_a_registry_an_idle_pool_is_found_by_its_owner_alone():
    w, _, rx, _, idle, loose = _owned_world()
    found = dict(discover_pools(w.program(), Problems()))
    assert found[rx.obj.addr][:2] == ("virtio-net-rq", "pages")
    assert found[idle.obj.addr][0] == "veth-rq" and "pages" not in found[idle.obj.addr]
    assert found[loose.obj.addr][0] == "pages"


def test_pools_json_names_the_owner_beside_the_registry():
    w, _, rx, _, idle, loose = _owned_world()
    pools = {p["address"]: p for p in run_cli("pools", "--json", program=w.program()).json()}
    assert pools[hex(rx.obj.addr)]["found-by"] == ["registry", "virtio-net-rq"]
    assert pools[hex(idle.obj.addr)]["found-by"] == ["registry", "veth-rq"]
    assert pools[hex(loose.obj.addr)]["found-by"] == ["registry"]
