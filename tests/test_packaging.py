"""The wheel and sdist install into a clean venv and run on a bundled fixture."""

import json
import subprocess
import sys
import venv

import pytest
from conftest import ROOT, expected


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_dist_installs_in_a_clean_venv_and_runs_a_bundled_fixture(kind, dists, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    subprocess.run(
        [str(env / "bin/pip"), "install", "-q", str(dists[kind])], check=True, capture_output=True
    )
    # Run from elsewhere: the fixture comes from the installed package.
    result = subprocess.run(
        [str(env / "bin/netmem-probe"), "-f", "linux-7.3-mixed", "pools", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr  # detached pools wait for pages
    assert json.loads(result.stdout) == expected("linux-7.3-mixed")["pools"]
    layouts = subprocess.run(
        [
            str(env / "bin/python"),
            "-c",
            "from netmem_probe.fake.types_elf import available_layouts; print(available_layouts())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "linux-7.3" in layouts.stdout
