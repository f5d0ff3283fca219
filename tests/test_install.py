"""`pip install .` (a wheel, not an editable checkout) gives one import name and a working `clipcache demo`."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import HANG_S, REPO


def test_the_wheel_installs_one_package_and_runs_the_demo(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info/ beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "*.zarr"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("clipcache-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"clipcache", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "clipcache/pipeline/model_configs/clipcache-demo.json" in names
    assert not any(name.startswith(("clipcache/tests", "clipcache/benchmarks")) for name in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # the dependencies come from this environment (no downloads); its editable clipcache is not on that path
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    found = subprocess.run([python, "-c", "import clipcache; print(clipcache.__file__)"], cwd=work, check=True,
                           capture_output=True, text=True).stdout
    assert found.startswith(site)
    demo = subprocess.run([venv / "bin" / "clipcache", "demo", "--out", "demo", "--quiet"], cwd=work,
                          capture_output=True, text=True, timeout=HANG_S)
    assert demo.returncode == 0, demo.stderr
    assert "zero-shot" in demo.stdout and "head text" in demo.stdout
    version = subprocess.run([venv / "bin" / "clipcache", "--version"], cwd=work, capture_output=True, text=True)
    assert version.stdout.strip().startswith("clipcache ") and version.returncode == 0
