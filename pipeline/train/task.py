"""What a training run learns, as the loop sees it: which videos train and validate, the loss of a batch, the
validation numbers of an epoch and which epoch is best. The loop knows a task only through `Task`, as it knows
a head only through `Head`.

- Classification: a class label per video, cross-entropy (with the recipe's label smoothing), validation top-1
  (multi-view), ties going to the lower validation loss.
- Retrieval (`--captions`): each training video draws one of its captions per pass over the training set, from
  (seed, pass) only, so `--resume` repeats the draws; the loss is the symmetric InfoNCE of Efficient-Prompt and
  CLIP over the batch's video-caption pairs, with the store's frozen CLIP logit scale. Two videos of a batch that
  drew the same sentence are both positives of it (their text columns are identical, so a one-hot target would
  ask the impossible); different sentences stay negatives. Validation: text-to-video R@1 over every validation
  caption, ties going to the lower mean rank.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads import LOCALISATION_HEADS, RETRIEVAL_HEADS
from clipcache.heads.base import Batch, Head
from clipcache.heads.prompt_text import PromptLayout
from clipcache.pipeline.common import autocast, note
from clipcache.pipeline.evaluate.metrics import classification_metrics
from clipcache.pipeline.evaluate.predict import predict, view_sums
from clipcache.pipeline.evaluate.retrieval import ranks_from_embeddings
from clipcache.pipeline.train.captions import Captions, match_captions, read_captions
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import Drawn, split_videos, store_splits, stratified_holdout, train_val_test

MIN_CONTRASTIVE_BATCH = 2  # a pair's negatives are the batch's other pairs: one pair alone has a loss of 0
SENTENCE_BLOCK = 256  # sentences through the prompted text tower at a time, when evaluating
CAPTION_STREAM = 1  # tells the caption draws' random stream from the dataset's views, seeded by (seed, pass) too


class Task(ABC):
    """One kind of training. `splits` resolves the videos; `attach` is called once the head and datasets exist;
    `set_pass` before each pass over the training set; `loss` per batch; `validate` per epoch gives the metrics
    row's validation fields, and `score` orders rows (higher is better; its first element alone decides
    `--patience`)."""

    name: ClassVar[str]
    selected_by: ClassVar[dict[str, str]]  # the field of `score` that comes first, and how lines name it
    split_drawn: Drawn | None = None  # how the splits of a store without splits were drawn (run.json records it)
    drawn: Drawn | None = None  # how `splits` drew the splits of a store without splits (set by `splits`)

    @abstractmethod
    def splits(self) -> dict[str, np.ndarray]: ...

    def frames(self) -> int:
        """Frames per sample the head sees: --frames, else every frame a clip store holds per view."""
        return self.cfg.frames or self.reader.settings.frames

    def datasets(self, head: Head, splits: dict[str, np.ndarray], frames: int, cfg: TrainConfig,
                 device: torch.device) -> tuple[CacheDataset, CacheDataset]:
        """The training and validation sets: by default the head's requested features of each split's videos."""
        reader = self.reader
        return (CacheDataset(reader, head.request, splits["train"], frames, train=True, preload=cfg.preload,
                             device=device, seed=cfg.seed, classes=cfg.classes),
                CacheDataset(reader, head.request, splits["val"], frames, train=False, preload=cfg.preload,
                             device=device, classes=cfg.classes))

    def attach(self, head: Head, train_set: CacheDataset, val_set: CacheDataset, quiet: bool) -> None:
        """Nothing by default."""

    def set_pass(self, index: int) -> None:
        """Nothing by default."""

    @abstractmethod
    def loss(self, head: Head, batch: Batch) -> torch.Tensor: ...

    @abstractmethod
    def validate(self, head: Head, val_set: CacheDataset, device: torch.device, batch_size: int, workers: int,
                 quiet: bool) -> dict[str, float]: ...

    @abstractmethod
    def score(self, row: dict[str, Any]) -> tuple[float, ...]: ...

    def describe(self, row: dict[str, Any]) -> str:
        """The validation part of an epoch's line."""
        field = self.selected_by["field"]
        return f"{self.selected_by['label']} {row[field]:.3f}"

    def run_fields(self) -> dict[str, Any]:
        """What run.json records about the task."""
        return {"task": self.name, "selected_by": self.selected_by,
                "split_drawn": self.split_drawn.to_json() if self.split_drawn else None}


class ClassificationTask(Task):
    name = "classification"
    selected_by = {"field": "val_top1", "label": "val top-1"}

    def __init__(self, cfg: TrainConfig, reader: CacheReader) -> None:
        self.cfg, self.reader = cfg, reader
        self.classes = cfg.classes or reader.classes
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def splits(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        self.split_drawn = drawn_splits(self.reader, (cfg.train_split, cfg.val_split, cfg.test_split),
                                        cfg.split_fractions)
        return train_val_test(self.reader, cfg.train_split, cfg.val_split, cfg.test_split, cfg.shots, cfg.seed,
                              cfg.split_fractions)

    def loss(self, head: Head, batch: Batch) -> torch.Tensor:
        return self.criterion(head(batch).float(), batch["label"])

    def validate(self, head: Head, val_set: CacheDataset, device: torch.device, batch_size: int, workers: int,
                 quiet: bool) -> dict[str, float]:
        probs, labels = predict(head, val_set, device, batch_size, workers, quiet)
        metrics = classification_metrics(probs, labels, self.classes)
        return {"val_top1": metrics["top1"], "val_top5": metrics["top5"],
                "val_mean_class_accuracy": metrics["mean_class_accuracy"],
                "val_loss": float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())}

    def score(self, row: dict[str, Any]) -> tuple[float, ...]:
        """Higher validation top-1, or the same with a lower validation loss: small validation sets tie often,
        and the tie then goes to the better fitted epoch rather than the first one."""
        return row["val_top1"], -row.get("val_loss", np.inf)

    def describe(self, row: dict[str, Any]) -> str:
        return f"{super().describe(row)}  val loss {row['val_loss']:.4f}"


def retrieval_splits(reader: CacheReader, captions: Captions, train: str, val: str, test: str, seed: int
                     ) -> dict[str, np.ndarray]:
    """The captioned done videos of each split (the caption file's splits when it gives them, else the store's);
    without a validation split, a seeded 10% of the training videos is held out."""
    named = captions.splits
    train_videos = captions.captioned(split_videos(reader, train, named))
    if len(train_videos) == 0:
        raise InputError(f"{captions.file.path}: no caption names a done video of training split {train!r} of "
                         f"{reader.path}")
    val_videos = captions.captioned(split_videos(reader, val, named))
    if len(val_videos) == 0:
        keep, held = stratified_holdout(np.zeros(len(train_videos), np.int64), 0.1, seed)
        train_videos, val_videos = train_videos[keep], train_videos[held]
    if len(val_videos) == 0:
        raise InputError(f"{captions.file.path}: no captioned videos in validation split {val!r} and too few "
                         "training videos to hold some out; name one with --val-split")
    if len(train_videos) < MIN_CONTRASTIVE_BATCH:
        raise InputError(f"{captions.file.path}: {len(train_videos)} captioned training video; contrastive training "
                         f"needs at least {MIN_CONTRASTIVE_BATCH} (each pair's negatives are the others)")
    return {"train": train_videos, "val": val_videos, "test": captions.captioned(split_videos(reader, test, named))}


class RetrievalTask(Task):
    name = "retrieval"
    selected_by = {"field": "val_t2v_r1", "label": "val t2v R@1"}

    def __init__(self, cfg: TrainConfig, reader: CacheReader) -> None:
        self.cfg, self.reader = cfg, reader
        self.captions = match_captions(read_captions(cfg.captions), reader)
        note(self.captions.repeated_note(), cfg.quiet)

    def splits(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        if self.captions.splits is None:
            self.split_drawn = drawn_splits(self.reader, (cfg.train_split, cfg.val_split, cfg.test_split))
        return retrieval_splits(self.reader, self.captions, cfg.train_split, cfg.val_split, cfg.test_split, cfg.seed)

    def attach(self, head: Head, train_set: CacheDataset, val_set: CacheDataset, quiet: bool) -> None:
        """Lay out the distinct training sentences once (a batch gathers its drawn ones), and every validation
        caption; group the training captions by video for the draws."""
        rows, owner = self.captions.of(train_set.videos)
        order = np.argsort(owner, kind="stable")
        self.counts = np.bincount(owner, minlength=len(train_set.videos))
        self.starts = np.cumsum(self.counts) - self.counts
        sentences = [self.captions.file.sentences[r] for r in rows[order]]
        self.sentences = list(dict.fromkeys(sentences))  # the distinct training sentences, laid out in `layout`
        index = {sentence: i for i, sentence in enumerate(self.sentences)}
        self.sentence_of = np.array([index[s] for s in sentences], np.int64)  # per caption, grouped by video
        self.layout = head.sentences(self.sentences)
        val_rows, self.val_owner = self.captions.of(val_set.videos)
        self.val_layout = head.sentences([self.captions.file.sentences[r] for r in val_rows])
        self.used = {"train": len(rows), "val": len(val_rows)}
        note(truncation_note(self.layout, self.val_layout, path=self.captions.file.path), quiet)
        self.set_pass(0)

    def set_pass(self, index: int) -> None:
        """Each training video's caption for this pass (`drawn`: positions in `sentences`, per training video):
        uniform over its captions, from (seed, pass) only."""
        rng = np.random.default_rng([self.cfg.seed, index, CAPTION_STREAM])
        self.drawn = self.sentence_of[self.starts + (rng.random(len(self.counts)) * self.counts).astype(np.int64)]

    def loss(self, head: Head, batch: Batch) -> torch.Tensor:
        sentence = torch.from_numpy(self.drawn)[batch["video"].cpu()]
        distinct, inverse = torch.unique(sentence, return_inverse=True)
        device = batch["video"].device
        text = F.normalize(head.encode_text(self.layout[distinct]).float(), dim=-1)[inverse.to(device)]
        video = F.normalize(head.encode_video(batch).float(), dim=-1)
        logits = head.retrieval_scale * video @ text.T
        same = (sentence[:, None] == sentence[None]).float().to(device)
        target = same / same.sum(dim=1, keepdim=True)  # symmetric: the same target for both directions
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def validate(self, head: Head, val_set: CacheDataset, device: torch.device, batch_size: int, workers: int,
                 quiet: bool) -> dict[str, float]:
        video, text = retrieval_embeddings(head, val_set, self.val_layout, device, batch_size, workers, quiet)
        return {f"val_{key}": value for key, value in ranks_from_embeddings(text, video, self.val_owner)
                .metrics().items()}

    def score(self, row: dict[str, Any]) -> tuple[float, ...]:
        return row["val_t2v_r1"], -row["val_t2v_mean_rank"]

    def describe(self, row: dict[str, Any]) -> str:
        return (f"{super().describe(row)}  val v2t R@1 {row['val_v2t_r1']:.3f}  "
                f"val t2v MnR {row['val_t2v_mean_rank']:.2f}")

    def run_fields(self) -> dict[str, Any]:
        return {**super().run_fields(), "captions": self.captions.file.source, "captions_used": self.used,
                "unknown_captions": self.captions.unknown_captions,
                "repeated_captions": self.captions.repeated_captions}


def drawn_splits(reader: CacheReader, specs: tuple[str, ...], fractions: tuple[float, float, float] | None = None
                 ) -> Drawn | None:
    """How the splits named in `specs` are drawn for a store without splits; None where the store has splits or
    every spec is a file of video paths."""
    if all(Path(spec).is_file() for spec in specs):
        return None
    return store_splits(reader, fractions)[1]


def make_task(cfg: TrainConfig, reader: CacheReader) -> Task:
    if cfg.head in LOCALISATION_HEADS:
        from clipcache.pipeline.localize.task import LocalisationTask  # it imports this module
        return LocalisationTask(cfg, reader)
    if reader.settings.dense and cfg.captions is None:
        from clipcache.pipeline.localize.segment_task import SegmentTask  # it imports this module
        return SegmentTask(cfg, reader)
    return RetrievalTask(cfg, reader) if cfg.captions is not None else ClassificationTask(cfg, reader)


def check_retrieval_options(cfg: TrainConfig) -> None:
    """Refuse `--captions` with a head, protocol or batch that cannot train retrieval, before anything is
    loaded."""
    if cfg.captions is None:
        return
    if cfg.batch_size is not None and cfg.batch_size < MIN_CONTRASTIVE_BATCH:
        raise InputError(f"--batch-size {cfg.batch_size}: a contrastive batch needs at least {MIN_CONTRASTIVE_BATCH} "
                         "video-caption pairs (each pair's negatives are the others; alone its loss is always 0)")
    if cfg.head not in RETRIEVAL_HEADS:
        raise InputError(f"--captions trains text-video retrieval, which the {cfg.head} head cannot; heads that "
                         f"can: {', '.join(RETRIEVAL_HEADS)}")
    for name, value in (("--shots", cfg.shots), ("--base-to-novel", cfg.base_to_novel or cfg.classes)):
        if value:
            raise InputError(f"{name} is a classification protocol: not with --captions")
    if cfg.split_fractions is not None:  # eval scores a retrieval run on the splits drawn at the default fractions
        raise InputError("--split-fractions draws the splits of classification runs; retrieval on a store without "
                         "splits draws 0.7,0.1,0.2 (or give the caption file's splits)")


def truncation_note(*layouts: PromptLayout, path: Path) -> str | None:
    """The one line that says how many captions were cut to fit the text context beside the prompts."""
    truncated = sum(layout.truncated for layout in layouts)
    if not truncated:
        return None
    return (f"{path}: {truncated} of {sum(map(len, layouts))} captions are longer than the {layouts[0].room} tokens "
            "the text context leaves beside the prompt vectors; cut to fit")


@torch.no_grad()
def retrieval_embeddings(head: Head, dataset: CacheDataset, layout: PromptLayout, device: torch.device,
                         batch_size: int = 256, workers: int = 0, quiet: bool = True
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(videos (V, E), sentences (N, E)) unit embeddings: a video's is the mean of its test views' unit
    embeddings, normalised again (the views averaged as classification averages them); the sentences go
    through the prompted text tower SENTENCE_BLOCK at a time."""
    head.eval()
    totals, _ = view_sums(lambda batch: F.normalize(head.encode_video(batch).float(), dim=-1), dataset, device,
                          batch_size, workers, quiet)
    video = totals / np.linalg.norm(totals, axis=1, keepdims=True)
    text = []
    for start in range(0, len(layout), SENTENCE_BLOCK):
        with autocast(device):
            text.append(F.normalize(head.encode_text(layout[start:start + SENTENCE_BLOCK]).float(), dim=-1).cpu())
    return video.astype(np.float32), torch.cat(text).numpy()
