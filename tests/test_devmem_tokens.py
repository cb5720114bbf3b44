"""
Devmem TCP tokens: a receiver holds net_iovs through the tokens in its
socket's ``sk_user_frags``; ``leaks`` and ``holders`` name the socket, its
process, and what returns them.
"""

import json

from conftest import run_cli
from test_drgn_snippets import project, run_snippet, snippet

from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.providers import FakeBinding
from netmem_probe.fake.sockets import FakeSocket
from netmem_probe.fake.tasks import FakeTask
from netmem_probe.fake.world import World
from netmem_probe.snippets import KEYS

RELEASE = (
    "pid 4242 (ncdevmem) returning its tokens (SO_DEVMEM_DONTNEED on fd 7), "
    "or: close fd 7 of pid 4242 (ncdevmem)"
)


def _receiver(count: int = 3):
    """
    A devmem binding (bound by pid 900's netlink socket) whose detached pool
    has ``count`` niovs out with a TCP receiver, pid 4242, under tokens.
    """
    w = World("linux-7.3")
    nic = w.init_net.netdev("eth4", driver="bnxt_en", num_rx_queues=2)
    binding = FakeBinding(w, nic, [0], [8], binding_id=3, napi_base=8300)
    held = binding.alloc(binding.pools[0], count, "stack")
    rx = FakeSocket(w, w.init_net, local=("10.0.0.1", 5201), remote=("10.0.0.2", 40000))
    tokens = rx.hold_tokens(held)
    FakeTask(w, 1, "init", w.init_net)
    FakeTask(w, 4242, "ncdevmem", w.init_net).open(rx, 7)
    binding.bound_by(FakeTask(w, 900, "bindd", w.init_net), 5)
    binding.pools[0].detach(w.boottime_ns / 1e9 - 60)
    return w, rx, held, tokens


def _lines(result):
    return [json.loads(line) for line in result.out.splitlines()]


def test_leaks_says_which_receiver_holds_a_devmem_token_and_what_returns_it():
    w, rx, held, tokens = _receiver()
    prog = w.program()
    result = run_cli("leaks", "--json", program=prog)
    rows = {r["net-iov"]: r for r in _lines(result)}
    assert result.code == 0, result.err  # held, not leaked
    receiver = {"pid": 4242, "comm": "ncdevmem", "fd": 7, "cgroup": None, "netns": w.init_net.inum}
    for niov, token in zip(held, tokens):
        row = rows[hex(niov.addr)]
        assert (row["verdict"], row["holder-kind"], row["release"]) == (
            "parked",
            "user-token",
            RELEASE,
        )
        (evidence,) = row["evidence"]
        assert evidence["kind"] == "devmem-token" and evidence["token"] == token
        assert evidence["sock"] == hex(rx.obj.addr) and evidence["state"] == "ESTABLISHED"
        assert (evidence["local"], evidence["remote"]) == ("10.0.0.1:5201", "10.0.0.2:40000")
        assert evidence["owners"] == [receiver]
        # The verdict's owners stay the binding's: the netlink socket that bound it.
        assert [o["pid"] for o in row["owners"]] == [900]
    table = run_cli("leaks", program=prog).out
    assert "devmem token 1 of tcp socket 10.0.0.1:5201 from 10.0.0.2:40000 (ESTABLISHED)" in table
    assert "holders: user-token 3" in table
    assert f"to release 3 pages: {RELEASE}" in table


def test_holders_names_the_token_slot_it_finds_in_ram():
    w, rx, held, tokens = _receiver(1)
    result = run_cli("holders", "--json", hex(held[0].netmem), program=w.program())
    (record,) = result.json()
    (token,) = [h for h in record["holders"] if h["kind"] == "devmem-token"]
    assert (token["token"], token["sock"], token["release"]) == (
        tokens[0],
        hex(rx.obj.addr),
        RELEASE,
    )
    assert result.code == 0


def test_a_corrupt_token_xarray_is_reported_not_followed():
    w, rx, held, _ = _receiver()
    w.program()
    fm = FaultyMemory(w)
    xa_head = rx.obj.addr_of("sk_user_frags.xa_head")
    node = fm.peek_word(xa_head) - 2
    shift = w.type("struct xa_node").member("shift").offset
    fm.write(node + shift, bytes([7]))  # not a multiple of XA_CHUNK_SHIFT
    result = run_cli("leaks", "--json", program=fm.program())
    assert "Traceback" not in result.err
    assert "TCP socket sk_user_frags" in result.err and "bad node shift 7" in result.err
    assert result.code == 4
    assert {r["verdict"] for r in _lines(result)} == {"leaked"}
    assert all(r["holder-kind"] != "user-token" for r in _lines(result))


def test_a_receiver_no_process_holds_is_released_by_killing_its_socket():
    w = World("linux-7.3")
    nic = w.init_net.netdev("eth4", driver="bnxt_en", num_rx_queues=2)
    binding = FakeBinding(w, nic, [0], [8], binding_id=3, napi_base=8300)
    held = binding.alloc(binding.pools[0], 1, "stack")
    # Closed by its process in ESTABLISHED: an orphan, its tokens kept until destroyed.
    orphan = FakeSocket(w, w.init_net, local=("10.0.0.1", 5202), remote=("10.0.0.2", 40001))
    (token,) = orphan.hold_tokens(held)
    FakeTask(w, 1, "init", w.init_net)
    binding.pools[0].detach(w.boottime_ns / 1e9 - 60)
    (row,) = _lines(run_cli("leaks", "--json", program=w.program()))
    (evidence,) = row["evidence"]
    assert (evidence["kind"], evidence["token"], evidence["sock"]) == (
        "devmem-token",
        token,
        hex(orphan.obj.addr),
    )
    assert evidence["owners"] == [] and row["verdict"] == "parked"
    assert row["release"] == "ss -K -t 'src 10.0.0.1:5202 dst 10.0.0.2:40001'"


def test_the_holders_and_leaks_scripts_find_the_tokens_json_finds():
    w, rx, held, _ = _receiver()
    prog = w.program()
    values = [hex(n.netmem) for n in held]
    mine = run_cli("holders", *values, "--json", program=prog).json()
    theirs = run_snippet(snippet(prog, "holders", *values), prog)
    assert project(theirs, KEYS["holders"]) == project(mine, KEYS["holders"])
    assert {h["sock"] for r in theirs for h in r["holders"] if h["kind"] == "devmem-token"} == {
        hex(rx.obj.addr)
    }
    mine = _lines(run_cli("leaks", "--json", program=prog))
    theirs = run_snippet(snippet(prog, "leaks"), prog)
    assert project(theirs, KEYS["leaks"]) == project(mine, KEYS["leaks"])
    assert {r["verdict"] for r in theirs} == {"parked"}


def test_niovs_and_providers_count_a_token_held_niov_as_with_user_space():
    # Devmem keeps no per-niov user count (zcrx's user_refs): the tokens are
    # the record of user space's hold, so such a niov is "user", not "stack".
    w, rx, held, _ = _receiver()
    prog = w.program()
    mine = _lines(run_cli("niovs", "--json", program=prog))
    assert {r["net-iov"] for r in mine if r["state"] == "user"} == {hex(n.addr) for n in held}
    assert {r["state"] for r in mine} == {"user", "free"}
    (area,) = run_cli("providers", "--json", program=prog).json()
    assert (area["user"], area["stack"], area["free"]) == (3, 0, 5)
    theirs = run_snippet(snippet(prog, "niovs"), prog)
    assert project(theirs, KEYS["niovs"]) == project(mine, KEYS["niovs"])
    theirs = run_snippet(snippet(prog, "providers"), prog)
    assert project(theirs, KEYS["providers"]) == project([area], KEYS["providers"])
