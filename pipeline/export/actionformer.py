"""`--format actionformer`: a dense store's features and segments in the layout ActionFormer and OpenTAD read, with
the dataset settings that put each feature at the time it was taken.

What those tools do with a feature file (happyharrycn/actionformer_release, read for this module):
- libs/datasets/thumos14.py and libs/datasets/anet.py, `__getitem__`: a segment's seconds x become positions on
  the feature grid, (x * fps - 0.5 * num_frames) / feat_stride, where fps is the config's `default_fps` when it
  is set and the video's `fps` in the JSON otherwise. The half-clip term centres a feature computed from
  num_frames video frames (I3D: 16 frames, stride 4) on its clip.
- libs/modeling/meta_archs.py, `postprocessing`: predictions go back to seconds by the inverse,
  (g * feat_stride + 0.5 * num_frames) / fps, clipped to [0, duration].
- libs/core/config.py: a key the config leaves out takes ActionFormer's default (feat_stride 16, num_frames 32,
  default_fps None), so every one of them is written here, none left to a default.
- libs/datasets/anet.py: feat_stride <= 0 declares fixed-length features, which are resampled to max_seq_len
  (force_upsampling): a feature's time would then depend on its video's length. So feat_stride stays positive.
- libs/datasets/thumos14.py drops every annotation whose label_id is 4 (THUMOS14's CliffDiving, also labelled
  Diving): its loader suits only THUMOS14's class list, so the snippet names it only for that list.

Row i of a clipcache dense video is the frame shown at i/F seconds (its own time within half a frame interval of
it). With feat_stride = 1, num_frames = 0 and fps = F, second x sits at grid position x * F: feature i at i/F,
with no offset. F goes both into default_fps and into every video's JSON `fps`, so either route gives it, and
`segment(frames)` is then the segment in feature rows. A store of every frame (--fps all) has a rate only where a
video's frames are evenly spaced; each other video is refused in one line.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from clipcache import InputError, __version__
from clipcache.cache.dense import sample_rate
from clipcache.cache.reader import CacheReader
from clipcache.cache.segments import SegmentTable, read_segments
from clipcache.pipeline.export.features import FeatureChoice, Series
from clipcache.pipeline.export.folder import save_json, save_npy, save_text
from clipcache.pipeline.extract.annotations import clip_table

FEATURES, ANNOTATIONS, AMBIGUOUS, SETTINGS, SNIPPET = "features", "annotations.json", "ambiguous.json", \
    "features.json", "actionformer.yaml"
SUBSETS = {"train": "training", "val": "validation", "test": "testing"}  # ActivityNet's spelling
EVEN = 0.1  # of a frame interval: how far a frame of a store of every frame may lie from i/R
MAX_SEQ_LEN = 2304  # ActionFormer's THUMOS14 value (configs/thumos_i3d.yaml): the training window, in features
THUMOS_CLASS_4 = "CliffDiving"


def even_rate(times: np.ndarray, where: str) -> Fraction:
    """The rate R of a video whose frames lie at i/R (within EVEN of an interval); InputError otherwise."""
    if len(times) < 2 or not times[-1] > times[0]:
        raise InputError(f"{where}: {len(times)} frame(s) stored, too few to measure a frame rate")
    rate = sample_rate((len(times) - 1) / float(times[-1] - times[0]))
    assert rate is not None
    spread = np.abs(times - times[0] - np.arange(len(times)) / float(rate)).max() * float(rate)
    if spread > EVEN:
        gaps = np.diff(times) * 1000
        raise InputError(f"{where}: its frames are not evenly spaced ({gaps.min():.1f} to {gaps.max():.1f} ms apart), "
                         "so in a store of every frame no single rate puts its features at i/F as ActionFormer's "
                         "settings need; extract the store with --fps F for that")
    return rate


class ActionFormerExport:
    """Writes features/<stem>.npy as videos come, and the annotation and settings files at the end."""

    def __init__(self, reader: CacheReader, choice: FeatureChoice, out: Path) -> None:
        if not reader.settings.dense:
            raise InputError(f"{reader.path}: a store of clips ({reader.settings.frames} frames per view) has no "
                             "features at a fixed rate; --format actionformer needs a dense store (extract --fps F); "
                             "--format npy exports this one")
        self.reader, self.choice, self.out = reader, choice, out
        self.rate = sample_rate(reader.settings.fps)  # None: every frame, a rate per video
        self.durations = reader.column("duration").astype(np.float64)
        self.splits = reader.column("split")
        self.videos: dict[int, tuple[str, Fraction, int]] = {}  # video -> stem, rate, rows

    @staticmethod
    def files(stems: Sequence[str]) -> list[str]:
        return [f"{FEATURES}/{stem}.npy" for stem in stems] + [ANNOTATIONS, AMBIGUOUS, SETTINGS, SNIPPET]

    def add(self, video: int, stem: str, series: Series, where: str) -> None:
        rate = self.rate or even_rate(series.times, where)
        save_npy(self.out / FEATURES / f"{stem}.npy", series.values)
        self.videos[video] = (stem, rate, len(series.values))

    def finish(self) -> list[str]:
        """Write the annotation, ambiguous-region and settings files; the lines to print."""
        found = read_segments(self.reader.path)
        lines = [] if found is not None else [f"{self.reader.path} holds no segments: every video's annotations "
                                              "are empty (features for inference only)"]
        table, problems = clip_table(found, {v: self.durations[v] for v in self.videos}) if found is not None \
            else (None, None)
        database, ambiguous, written, regions = self._database(table)
        classes = table.classes if table is not None else ()
        save_json(self.out / ANNOTATIONS, {"version": f"clipcache {__version__}", "database": database})
        save_json(self.out / AMBIGUOUS, ambiguous)
        rates = {rate for _, rate, _ in self.videos.values()}
        settings = self._settings(classes, rates.pop() if len(rates) == 1 else None)
        save_json(self.out / SETTINGS, settings)
        snippet = self._snippet(settings, sorted({entry["subset"] for entry in database.values()}))
        save_text(self.out / SNIPPET, snippet)
        lines.append(f"annotations: {written} segments of {len(classes)} classes, {regions} ambiguous regions "
                     f"in {AMBIGUOUS} (not annotations)")
        if problems is not None:
            lines += problems.lines()
        unused = sorted(set(range(len(classes))) - {int(v) for v in table.label[~table.ambiguous]}) \
            if table is not None else []
        if unused:
            lines.append(f"classes with no segment here: {', '.join(classes[i] for i in unused)} (ActionFormer "
                         "asserts that every class of num_classes has one)")
        return lines + [f"ActionFormer settings ({SETTINGS}, {SNIPPET}):", snippet.rstrip()]

    def _database(self, table: SegmentTable | None) -> tuple[dict, dict, int, int]:
        rows = {v: np.flatnonzero(table.video == v) for v in self.videos} if table is not None else {}
        database: dict[str, dict] = {}
        ambiguous: dict[str, list[list[float]]] = {}
        written = regions = 0
        for video, (stem, rate, _) in sorted(self.videos.items()):
            fps = float(rate)
            annotations = []
            for row in rows.get(video, ()):
                start, end = float(table.start[row]), float(table.end[row])
                if table.ambiguous[row]:
                    ambiguous.setdefault(stem, []).append([start, end])
                    regions += 1
                    continue
                label = int(table.label[row])
                annotations.append({"label": table.classes[label], "label_id": label, "segment": [start, end],
                                    "segment(frames)": [start * fps, end * fps]})
            written += len(annotations)
            split = str(self.splits[video])
            database[stem] = {"subset": SUBSETS.get(split, split or "none"),
                              "duration": round(float(self.durations[video]), 6), "fps": fps,
                              "annotations": annotations}
        return database, ambiguous, written, regions

    def _settings(self, classes: Sequence[str], rate: Fraction | None) -> dict:
        settings = self.reader.settings
        channels = self.choice.channels(self.reader)
        return {
            "store": str(self.reader.path.resolve()), "fingerprint": settings.fingerprint(), "model": settings.model,
            "pretrained": settings.pretrained, "features": self.choice.spec, "dtype": "float32", "channels": channels,
            "rate": float(rate) if rate is not None else None,
            "time_of_feature": "feature i of a video is the frame shown at i / fps seconds (fps: default_fps, else "
                               "the video's fps in annotations.json), within half a frame interval",
            "longest_video": max((rows for _, _, rows in self.videos.values()), default=0),
            "actionformer": {
                "json_file": str((self.out / ANNOTATIONS).resolve()),
                "feat_folder": str((self.out / FEATURES).resolve()),
                "file_prefix": None, "file_ext": ".npy", "num_classes": len(classes), "input_dim": channels,
                "feat_stride": 1, "num_frames": 0, "default_fps": float(rate) if rate is not None else None,
                "downsample_rate": 1, "force_upsampling": False, "max_seq_len": MAX_SEQ_LEN,
            },
            "dataset_name": "thumos" if len(classes) > 4 and classes[4] == THUMOS_CLASS_4 else "anet",
        }

    @staticmethod
    def _snippet(settings: dict, subsets: list[str]) -> str:
        """ActionFormer's dataset section as YAML text (its configs' flow style); JSON scalars are YAML."""
        train = "training" if "training" in subsets else "validation" if "validation" in subsets else \
            (subsets or ["training"])[0]
        evaluate = next((s for s in ("validation", "testing") if s in subsets and s != train), train)
        rate = settings["rate"]
        lines = [f"# clipcache export of {settings['store']} ({settings['features']}, "
                 f"{f'{rate:g} features per second' if rate else 'each video at its own fps'}): feature i at "
                 "i/fps s, no offset",
                 f"dataset_name: {settings['dataset_name']}  # thumos only for THUMOS14's class list: its loader "
                 "drops label_id 4",
                 f"train_split: [{json.dumps(train)}]", f"val_split: [{json.dumps(evaluate)}]", "dataset: {"]
        notes = {"feat_stride": "one feature per sample", "num_frames": "a feature is one frame: no 0.5*num_frames "
                 "offset", "default_fps": "the store's rate F" if rate else "null: each video's fps in the JSON",
                 "force_upsampling": "never resample: time per feature stays 1/F",
                 "max_seq_len": f"training window in features (longest video: {settings['longest_video']})"}
        for key, value in settings["actionformer"].items():
            note = f"  # {notes[key]}" if key in notes else ""
            lines.append(f"  {key}: {json.dumps(value)},{note}")
        return "\n".join([*lines, "  trunc_thresh: 0.5,", "  crop_ratio: [0.9, 1.0],", "}"]) + "\n"
