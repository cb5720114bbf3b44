"""
Fake processes: a ``struct task_struct`` on ``init_task.tasks`` with a file
table whose descriptors can be sockets (``struct file`` with ``f_op =
&socket_file_ops`` and a ``struct socket``), as kernel/actors.py reads them.
"""

from typing import TYPE_CHECKING

from netmem_probe.fake.net import cstr

if TYPE_CHECKING:
    from netmem_probe.fake.net import NetNamespace
    from netmem_probe.fake.providers import FakeRing
    from netmem_probe.fake.sockets import FakeSocket
    from netmem_probe.fake.world import World

__all__ = ("FakeTask",)


class FakeTask:
    """A process (thread group leader) in namespace ``ns`` with ``max_fds`` descriptors."""

    def __init__(
        self, world: "World", pid: int, comm: str, ns: "NetNamespace", *, max_fds: int = 64
    ) -> None:
        assert world.tasks is not None, "this layout has no task types"
        self.world = world
        self.pid = pid
        self.comm = comm
        self.ns = ns
        self.fds = world.alloc("void *", count=max_fds, align=8)
        self.fds.value = [0] * max_fds
        fdt = world.alloc("struct fdtable", {"max_fds": max_fds, "fd": self.fds.addr})
        files = world.alloc("struct files_struct", {"fdt": fdt.addr})
        nsproxy = world.alloc("struct nsproxy", {"net_ns": ns.obj.addr})
        self.obj = world.alloc(
            "struct task_struct",
            {"tgid": pid, "comm": cstr(comm, 16), "files": files.addr, "nsproxy": nsproxy.addr},
        )
        world.tasks.add(self.obj, "tasks")

    def open_ring(self, ring: "FakeRing", fd: int) -> None:
        """Have the io_uring ``ring`` open as descriptor ``fd`` (``f_op = &io_uring_fops``)."""
        file = self.world.alloc(
            "struct file",
            {"f_op": self.world.prog["io_uring_fops"].address_, "private_data": ring.obj.addr},
        )
        self.fds.value[fd] = file.addr
        ring.owners.append((self, fd))

    def open(self, sock: "FakeSocket", fd: int) -> None:
        """Have ``sock`` open as descriptor ``fd``."""
        self.open_sk(sock.obj.addr, fd)

    def open_sk(self, sk: int, fd: int) -> None:
        """Have the socket whose ``struct sock`` is at ``sk`` open as descriptor ``fd``."""
        socket = self.world.alloc("struct socket", {"sk": sk})
        file = self.world.alloc(
            "struct file",
            {
                "f_op": self.world.prog["socket_file_ops"].address_,
                "private_data": socket.addr,
            },
        )
        self.fds.value[fd] = file.addr
