"""The README's Python example runs as written (on a real store, in a temporary folder)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from conftest import REPO


def test_the_python_api_example_runs(appearance_store: Path, tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    code = re.search(r"<!-- api-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    shutil.copytree(appearance_store, tmp_path / "features.zarr")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    finally:
        os.chdir(cwd)
    assert namespace["clip_embedding"].shape == (len(namespace["done"]), 32)
    assert (tmp_path / "runs" / "linear" / "run.json").is_file()
    assert namespace["report"]["top1"] >= 0.9
