"""
Write a world out as a vmcore stub fixture directory:

- ``vmcore``: an ELF core of the world's memory with a VMCOREINFO note;
- ``types.elf``: the layout's types ELF (its build ID is in VMCOREINFO);
- ``expected.json``: the world's truth, from the scenario, not from the tool.

The output is deterministic: the same scenario on the same layout writes the
same bytes.
"""

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

from netmem_probe.fake.elfcore import write_core
from netmem_probe.fake.world import World

__all__ = ("write_fixture",)


def write_fixture(
    world: World,
    directory: Union[str, Path],
    description: str,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Commit ``world`` and write it as a fixture in ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    world.commit()
    with open(out / "vmcore", "wb") as f:
        write_core(f, world.mem, world.vmcoreinfo(), world.machine.e_machine)
    shutil.copyfile(world.types_elf, out / "types.elf")
    expected = {
        "description": description,
        "layout": world.layout,
        "osrelease": world.osrelease,
        **world.expected_all(),
        **(extra or {}),
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return out
