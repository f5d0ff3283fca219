"""Class-name text embeddings: the store's own model and tokenizer, template sets, class-name files,
and the store's text group as a cache (heads and zero-shot never load CLIP twice)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from clipcache.cache.reader import CacheReader
from clipcache.cache.text import read_text_embeddings, text_key, write_text_embeddings
from clipcache.pipeline.models import load_model
from clipcache.pipeline.train.text_embeddings import TEMPLATE_SETS, class_names, resolve_templates, text_embeddings
from conftest import TINY_CONFIG


def _reference(names: list[str], templates: list[str]) -> np.ndarray:
    """Computed independently: the extraction model rebuilt from the test config, open_clip's tokenizer."""
    model = load_model("", None, TINY_CONFIG).model
    tokenizer = open_clip.get_tokenizer("tiny-vit")
    rows = []
    with torch.no_grad():
        for name in names:
            emb = model.encode_text(tokenizer([t.format(name) for t in templates]))
            rows.append(torch.nn.functional.normalize(torch.nn.functional.normalize(emb, dim=-1).mean(0), dim=0))
    return torch.stack(rows).numpy()


def test_text4vis_embeddings_come_from_the_stores_model(appearance_store: Path) -> None:
    reader = CacheReader(appearance_store)
    names = class_names(reader)
    assert names == [c.replace("_", " ") for c in reader.classes]
    embeddings = text_embeddings(reader, "text4vis")
    assert TEMPLATE_SETS["text4vis"] == ["a video of a person {}."]
    assert embeddings.shape == (len(reader.classes), reader.settings.embed_dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, _reference(names, TEMPLATE_SETS["text4vis"]), atol=1e-5)


def test_ensemble_is_the_normalised_mean_and_is_cached_in_the_store(appearance_store: Path) -> None:
    reader = CacheReader(appearance_store)
    templates = TEMPLATE_SETS["ensemble"]
    assert len(templates) >= 8 and all("{}" in t for t in templates)
    first = text_embeddings(reader, "ensemble")
    np.testing.assert_allclose(first, _reference(class_names(reader), templates), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-6)
    key = text_key("ensemble", templates, class_names(reader))
    np.testing.assert_array_equal(read_text_embeddings(appearance_store, key, len(first))[0], first)
    assert reader.root[f"text/{key}"].attrs["templates"] == templates
    # what is cached is what later runs get: other unit vectors stored under the key come back as they are
    other = np.roll(np.eye(*first.shape, dtype=np.float32), 1, axis=1)
    write_text_embeddings(appearance_store, key, other, templates, class_names(reader))
    try:
        np.testing.assert_array_equal(text_embeddings(reader, "ensemble"), other)
    finally:  # the store is shared by other tests
        write_text_embeddings(appearance_store, key, first, templates, class_names(reader))


def test_own_templates_and_class_names(appearance_store: Path, tmp_path: Path) -> None:
    reader = CacheReader(appearance_store)
    own = tmp_path / "mine.txt"
    own.write_text("\ufeffa clip showing {}.\n\nsomething {} happening\n")
    assert resolve_templates(str(own)) == ("mine", ["a clip showing {}.", "something {} happening"])
    renamed = tmp_path / "names.csv"
    renamed.write_text("\ufeffred_square\ta red square\ngreen_circle,a green disc\n")  # with a BOM
    names = class_names(reader, renamed)
    assert names[reader.classes.index("red_square")] == "a red square"
    assert names[reader.classes.index("green_circle")] == "a green disc"
    assert names[reader.classes.index("blue_stripes")] == "blue stripes"
    embeddings = text_embeddings(reader, str(own), renamed)
    np.testing.assert_allclose(embeddings, _reference(names, ["a clip showing {}.", "something {} happening"]),
                               atol=1e-5)
    assert f"text/{text_key('mine', resolve_templates(str(own))[1], names)}" in reader.root


def test_bad_templates_and_names_are_refused(appearance_store: Path, tmp_path: Path) -> None:
    reader = CacheReader(appearance_store)
    with pytest.raises(ValueError, match="--templates nosuch: neither text4vis nor ensemble nor a file"):
        resolve_templates("nosuch")
    bad = tmp_path / "bad.txt"
    bad.write_text("a video of {}\nno placeholder here\n")
    with pytest.raises(ValueError, match=r"bad.txt: every template needs a \{\} .*'no placeholder here'"):
        resolve_templates(str(bad))
    names = tmp_path / "names.csv"
    names.write_text("juggling_balls,juggling balls\n")
    with pytest.raises(ValueError, match="names.csv: 'juggling_balls' is not a class of"):
        class_names(reader, names)
