"""Figures of one evaluation that stay readable and small at any number of classes (Kinetics' 400 too):
at most 1200 x 1200 pixels, confusion rows normalised to the true class's videos with a colour bar, and
beyond a few dozen classes the most confused pairs and the sorted per-class accuracy named instead of
every cell. Classes at zero accuracy are drawn in red (a zero-length bar would be invisible)."""
from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

NAMED_CELLS = 30  # up to this many classes the confusion matrix names every class
NAMED_BARS = 40  # up to this many classes every class is named in the per-class figure
WORST = 30  # beyond that, the worst classes named, and as many most confused pairs
DPI = 100
MAX_INCHES = 12.0  # figures never exceed 1200 x 1200 pixels
ZERO = "tab:red"


def _figure(width: float, height: float) -> Figure:
    """A figure of matplotlib's object API: no pyplot, so no global state and nothing to close."""
    return Figure(figsize=(min(width, MAX_INCHES), min(height, MAX_INCHES)), dpi=DPI, layout="constrained")


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its true class's videos (NaN for a class without videos)."""
    totals = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, confusion / np.maximum(totals, 1), np.nan)


def confusion_figure(confusion: np.ndarray, classes: tuple[str, ...], title: str) -> Figure:
    """The row-normalised confusion matrix with a colour bar; class names on the axes up to NAMED_CELLS
    classes, class indices beyond (an overview; the pairs figure names the confusions)."""
    count = len(classes)
    side = min(MAX_INCHES - 1.2, 4.0 + 0.25 * count)  # and 1.2 inches for the colour bar
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    image = ax.imshow(row_normalised(confusion), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class's videos")
    if count <= NAMED_CELLS:
        labels = [_short(c) for c in classes]
        ax.set_xticks(range(count), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(count), labels, fontsize=7)
        if count <= 15:  # counts in the cells while they fit
            for (i, j), n in np.ndenumerate(confusion):
                if n:
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=6,
                            color="white" if confusion[i, j] > 0.5 * confusion[i].sum() else "black")
    ax.set_xlabel("predicted class" + ("" if count <= NAMED_CELLS else " (index)"))
    ax.set_ylabel("true class" + ("" if count <= NAMED_CELLS else " (index)"))
    ax.set_title(title, fontsize=9)
    return fig


def confused_pairs_figure(confusion: np.ndarray, classes: tuple[str, ...], title: str) -> Figure:
    """The WORST most confused (true, predicted) pairs: the fraction of the true class's videos given to the
    predicted class, with the counts."""
    rates = row_normalised(confusion)
    off = np.where(np.eye(len(classes), dtype=bool) | np.isnan(rates), -1.0, rates)
    order = np.lexsort((-confusion.ravel(), -off.ravel()))[:WORST]
    pairs = [divmod(int(k), len(classes)) for k in order if off.flat[k] > 0]
    fig = _figure(10.0, 1.5 + 0.3 * max(len(pairs), 1))
    ax = fig.subplots()
    if pairs:
        y = np.arange(len(pairs))
        ax.barh(y, [rates[i, j] for i, j in pairs], color="tab:orange")
        ax.set_yticks(y, [f"{_short(classes[i])} → {_short(classes[j])}" for i, j in pairs], fontsize=7)
        for k, (i, j) in enumerate(pairs):
            ax.text(rates[i, j], k, f" {confusion[i, j]}/{confusion[i].sum()}", va="center", fontsize=6)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no confusions", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("fraction of the true class's videos predicted as the other class")
    ax.set_title(f"{title}\nmost confused pairs (true → predicted)", fontsize=9)
    return fig


def _named_bars(ax: Axes, names: list[str], accuracy: np.ndarray) -> None:
    """Horizontal bars, worst on top; a zero is a red 0 and a red name."""
    y = np.arange(len(names))
    zero = accuracy == 0
    ax.barh(y, accuracy, color=[ZERO if z else "tab:blue" for z in zero])
    for row in y[zero]:  # a bar of length 0 draws nothing: say it
        ax.text(0.005, row, "0", color=ZERO, va="center", fontsize=7, fontweight="bold")
    ax.set_yticks(y, [_short(n) for n in names], fontsize=7)
    for label, is_zero in zip(ax.get_yticklabels(), zero):
        if is_zero:
            label.set_color(ZERO)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy")


def per_class_figure(per_class: dict[str, float | None], title: str) -> Figure:
    """Per-class accuracy sorted from the worst: every class named up to NAMED_BARS classes; beyond, the
    sorted curve of all classes beside the WORST named."""
    scored = sorted(((a, c) for c, a in per_class.items() if a is not None), key=lambda pair: pair[0])
    accuracy = np.array([a for a, _ in scored])
    names = [c for _, c in scored]
    zeros, absent = int((accuracy == 0).sum()), len(per_class) - len(scored)
    caption = f"{title}\n{zeros} of {len(scored)} classes at accuracy 0 (red)" + \
        (f"; {absent} classes without videos not shown" if absent else "")
    if len(scored) <= NAMED_BARS:
        fig = _figure(8.0, 1.5 + 0.22 * max(len(scored), 1))
        ax = fig.subplots()
        _named_bars(ax, names, accuracy)
        ax.set_title(caption, fontsize=9)
    else:
        fig = _figure(MAX_INCHES, 8.0)
        curve, worst = fig.subplots(1, 2)
        rank = np.arange(len(scored))
        curve.plot(rank, accuracy, drawstyle="steps-mid", color="tab:blue")
        curve.scatter(rank[accuracy == 0], accuracy[accuracy == 0], color=ZERO, s=8, zorder=3)
        curve.set_xlabel("classes, sorted by accuracy")
        curve.set_ylabel("accuracy")
        curve.set_ylim(-0.03, 1.03)
        curve.set_title(caption, fontsize=9)
        _named_bars(worst, names[:WORST], accuracy[:WORST])
        worst.set_title(f"the {min(WORST, len(names))} worst classes", fontsize=9)
    return fig


def figures(confusion: np.ndarray, per_class: dict[str, float | None], title: str) -> dict[str, Figure]:
    """confusion.png and per_class.png, plus confused_pairs.png when the matrix is too large to name."""
    classes = tuple(per_class)
    drawn = {"confusion.png": confusion_figure(confusion, classes, title),
             "per_class.png": per_class_figure(per_class, title)}
    if len(classes) > NAMED_CELLS:
        drawn["confused_pairs.png"] = confused_pairs_figure(confusion, classes, title)
    return drawn
