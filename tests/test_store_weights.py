"""What a store records about its weights and what `info` says agree: random weights are recorded as pretrained ""
(the value every store has held, part of its fingerprint) and info shows that value and what it means."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import zarr

from clipcache.cache.reader import CacheReader
from conftest import run_cli, synthetic_store


def test_random_weights_are_recorded_and_shown_as_the_same_value(appearance_store: Path) -> None:
    attrs = dict(zarr.open_group(str(appearance_store), mode="r").attrs)
    assert attrs["pretrained"] == "" and attrs["pretrained_sha256"] == ""
    assert attrs["extras"]["random_init_seed"] == 0

    info = json.loads(run_cli("info", appearance_store, "--json").stdout)
    assert (info["pretrained"], info["weights"], info["random_init_seed"]) == ("", "random", 0)
    text = run_cli("info", appearance_store).stdout
    assert 'pretrained: "" (random weights, torch seed 0)' in text


def test_the_seed_is_provenance_outside_the_fingerprint(appearance_store: Path, tmp_path: Path) -> None:
    settings = CacheReader(appearance_store).settings
    extras = {key: value for key, value in settings.extras.items() if key != "random_init_seed"}
    without = dataclasses.replace(settings, extras=extras)
    assert settings.fingerprint() == without.fingerprint() == CacheReader(appearance_store).attrs["fingerprint"]

    older = synthetic_store(tmp_path / "older.zarr")  # written without the seed, as stores made before it
    info = json.loads(run_cli("info", older, "--json").stdout)
    assert (info["pretrained"], info["weights"], info["random_init_seed"]) == ("", "random", None)
    assert 'pretrained: "" (random weights)' in run_cli("info", older).stdout
