"""
Actors
------

Who can let go of what holds a page: the processes that have a socket open
(found through every process's file table: ``init_task.tasks``, each
``task->files->fdt->fd[]`` entry whose ``f_op`` is ``socket_file_ops``,
``file->private_data`` the ``struct socket`` and its ``sk``), and the
command that would release the socket's pages.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.structs import read_cstring
from netmem_probe.kernel.walk import Problems, list_nodes, read_words, wrap

__all__ = (
    "MAX_TASKS",
    "TCP_STATES",
    "Owner",
    "SocketOwners",
    "release_action",
    "task_files",
    "token_release",
    "task_owner",
)

#: ``include/net/tcp_states.h``.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN-SENT",
    3: "SYN-RECV",
    4: "FIN-WAIT-1",
    5: "FIN-WAIT-2",
    6: "TIME-WAIT",
    7: "CLOSE",
    8: "CLOSE-WAIT",
    9: "LAST-ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW-SYN-RECV",
}
#: File descriptors read per process before giving up (a corrupt max_fds).
MAX_FDS = 1 << 20
#: Processes walked before giving up (a corrupt tasks list).
MAX_TASKS = 1 << 22


@dataclass(frozen=True)
class Owner:
    """A process with a socket open."""

    pid: int
    comm: str
    fd: int
    cgroup: Optional[str]  # cgroup v2 path, None if not read
    netns: Optional[int]  # the process's network namespace inode number


class SocketOwners:
    """
    The processes that have each socket open, from one walk of every
    process's file table (on first use).  ``available`` is False, and
    :meth:`of` returns None, when the walk cannot be made (no
    ``socket_file_ops`` symbol, no task types).
    """

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.prog = prog
        self.problems = problems
        self._owners: Optional[Dict[int, List[Owner]]] = None
        self.available = True

    def of(self, sk: int) -> Optional[Tuple[Owner, ...]]:
        """The owners of the ``struct sock`` at ``sk`` (empty: none found), None if unknown."""
        if self._owners is None:
            self._owners = self._walk()
        if not self.available:
            return None
        return tuple(self._owners.get(sk, ()))

    def sockets(self) -> Tuple[int, ...]:
        """Every ``struct sock`` some process has open (none when the walk cannot be made)."""
        if self._owners is None:
            self._owners = self._walk()
        return tuple(self._owners)

    def any_pid_in(self, netns: int) -> Optional[int]:
        """A pid of some process in network namespace ``netns`` (for ``nsenter``)."""
        if self._owners is None:
            self._owners = self._walk()
        return self._netns_pid.get(netns)

    def _walk(self) -> Dict[int, List[Owner]]:
        prog = self.prog
        owners: Dict[int, List[Owner]] = {}
        self._netns_pid: Dict[int, int] = {}
        try:
            socket_ops = prog.object("socket_file_ops").address_
            task_type = prog.type("struct task_struct")
            tasks = drgn.offsetof(task_type, "tasks")
            pid_at = drgn.offsetof(task_type, "tgid")
            comm_at = drgn.offsetof(task_type, "comm")
            prog.type("struct fdtable")
            file_type = prog.type("struct file")
            f_op_at = drgn.offsetof(file_type, "f_op")
            private_at = drgn.offsetof(file_type, "private_data")
            sk_at = drgn.offsetof(prog.type("struct socket"), "sk")
            head = prog["init_task"].address_ + tasks
        except (LookupError, AttributeError):
            self.available = False
            return owners
        if socket_ops is None:
            self.available = False
            return owners
        for node in list_nodes(
            prog, head, limit=MAX_TASKS, what="task list", problems=self.problems
        ):
            task = node - tasks
            try:
                fds = task_files(prog, task)
                if not fds:
                    continue  # a kernel thread
                pid = prog.read_u32(wrap(task + pid_at))
                comm = read_cstring(prog, task + comm_at, 16) or ""
                netns = _task_netns(prog, task)
                if netns is not None:
                    self._netns_pid.setdefault(netns, pid)
            except drgn.FaultError as e:
                self.problems.fault("task file table", task, e)
                continue
            cgroup: Optional[str] = None
            cgroup_read = False
            for fd, file in enumerate(fds):
                if not file:
                    continue
                try:
                    if prog.read_word(wrap(file + f_op_at)) != socket_ops:
                        continue
                    sock = prog.read_word(wrap(file + private_at))
                    sk = prog.read_word(wrap(sock + sk_at)) if sock else 0
                except drgn.FaultError as e:
                    self.problems.fault("socket file", file, e)
                    continue
                if not sk:
                    continue
                if not cgroup_read:
                    cgroup, cgroup_read = _task_cgroup(prog, task), True
                owners.setdefault(sk, []).append(Owner(pid, comm, fd, cgroup, netns))
        return owners


def _task_netns(prog: Program, task: int) -> Optional[int]:
    """The inode number of the network namespace of the task at ``task``."""
    try:
        t = drgn.Object(prog, "struct task_struct *", task)
        return t.nsproxy.net_ns.ns.inum.value_()
    except (drgn.FaultError, LookupError, AttributeError):
        return None


def _task_cgroup(prog: Program, task: int) -> Optional[str]:
    """The cgroup v2 path of the task at ``task``, None if cgroups cannot be read."""
    try:
        from drgn.helpers.linux.cgroup import cgroup_path

        t = drgn.Object(prog, "struct task_struct *", task)
        return cgroup_path(t.cgroups.dfl_cgrp).decode(errors="replace")
    except (drgn.FaultError, LookupError, AttributeError, ValueError):
        return None


def task_files(prog: Program, task: int) -> Tuple[int, ...]:
    """
    The ``struct file *`` of each descriptor of the task at ``task``
    (``files->fdt->fd[0:max_fds]``, index = fd, 0 = not open), at most
    :data:`MAX_FDS`; empty for a kernel thread (no file table).

    :raises drgn.FaultError: if the file table cannot be read.
    """
    files = prog.read_word(wrap(task + drgn.offsetof(prog.type("struct task_struct"), "files")))
    if not files:
        return ()
    fdtable = prog.type("struct fdtable")
    fdt = prog.read_word(wrap(files + drgn.offsetof(prog.type("struct files_struct"), "fdt")))
    max_fds = min(prog.read_u32(wrap(fdt + drgn.offsetof(fdtable, "max_fds"))), MAX_FDS)
    return read_words(prog, prog.read_word(wrap(fdt + drgn.offsetof(fdtable, "fd"))), max_fds)


def task_owner(prog: Program, task: drgn.Object, fd: int) -> Owner:
    """
    The :class:`Owner` that descriptor ``fd`` of ``task`` (a ``struct
    task_struct *``) makes its process.
    :raises drgn.FaultError: if the task's pid or comm cannot be read.
    """
    address = task.value_()
    comm = task.comm.string_().decode(errors="replace")
    return Owner(
        task.tgid.value_(), comm, fd, _task_cgroup(prog, address), _task_netns(prog, address)
    )


def release_action(
    protocol: Optional[str],
    local: Optional[str],
    remote: Optional[str],
    netns: Optional[int],
    owners: Optional[Tuple[Owner, ...]],
    nsenter_pid: Optional[int],
    init_netns: Optional[int],
) -> Optional[str]:
    """
    The command that releases a socket's queued pages.

    A socket's queues are freed when it is destroyed: when the last
    descriptor of it closes.  ``ss -K`` does not do that for a socket a
    process holds open: it aborts it (``udp_abort()``, ``tcp_abort()``) and
    the queues stay until the owner closes it (measured on Debian 7.3.4: the
    skbs of a UDP sink and of a TCP out-of-order queue stayed, and the
    pages came back on close, tests/realkernel/test_real_holders.py; an
    unconnected UDP socket is not even matched without ``-a``).  So with
    known owners the action is closing their descriptors.  A TCP socket no
    process holds (orphaned, ``SOCK_DEAD``) is destroyed by ``tcp_abort()``:
    there ``ss -K`` with a filter naming exactly that socket, run with
    ``nsenter -t PID -n`` in the socket's namespace when it is not the
    initial one (``nsenter_pid``: a process in that namespace).  None when
    neither applies.
    """
    if owners:
        return "close " + ", ".join(f"fd {o.fd} of pid {o.pid} ({o.comm})" for o in owners)
    if protocol != "tcp" or not local:
        return None
    expression = f"src {local}" + (f" dst {remote}" if remote else "")
    command = f"ss -K -t '{expression}'"
    if netns is None or init_netns is None or netns == init_netns:
        return command
    if nsenter_pid is not None:
        return f"nsenter -t {nsenter_pid} -n {command}"
    return None  # no process lives in the socket's namespace: ss cannot reach it


def token_release(
    owners: Optional[Tuple[Owner, ...]], socket_release: Optional[str]
) -> Optional[str]:
    """
    What releases the net_iovs a devmem TCP socket holds through tokens
    (:class:`~netmem_probe.kernel.devmem.DevmemTokens`): the process
    returning them (``SO_DEVMEM_DONTNEED`` with the tokens, on its
    descriptor of the socket), or the socket's destruction, which drops the
    tokens left (``tcp_v4_destroy_sock()``), so what ``socket_release``
    (:func:`release_action`) says releases the socket.  Unbinding the
    dma-buf (closing the netlink socket that bound it) does not: it takes
    the provider off the rx queues, not the frags out of receivers' sockets.
    """
    if owners:
        first = owners[0]
        returning = (
            f"pid {first.pid} ({first.comm}) returning its tokens "
            f"(SO_DEVMEM_DONTNEED on fd {first.fd})"
        )
        return f"{returning}, or: {socket_release}" if socket_release else returning
    return socket_release
