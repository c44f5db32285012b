"""Pictures of runs: loss.png for one run, an overlay of several (summary.png, ``runs plot``).

Drawn from the events (trainer/run/history.py) with matplotlib's object API on the Agg
canvas: no pyplot, no window, no global backend switched, so drawing works in a sweep's
worker or on a headless node. Each file is written beside its final name and renamed into
place, so a reader never sees half a picture. matplotlib is an optional extra ("plots").
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import MissingExtraError
from trainer.extras import import_extra
from trainer.run.history import RunHistory, load_history
from trainer.training.hooks import Hook

if TYPE_CHECKING:
    from trainer.training.loop import Trainer

log = logging.getLogger("lmrunner")

LOSS_PNG = "loss.png"
# Inches at 100 dots per inch: loss.png is 1000 x 600 pixels, an overlay 1200 x 600.
DPI = 100
LOSS_SIZE = (10, 6)
OVERLAY_SIZE = (12, 6)
_LEGEND_WIDTH = 48  # characters of a run's label per legend line, beside the plot
_X_LABELS = {"step": "step", "tokens": "tokens seen", "time": "training time (s)"}


def smoothed(values: list[float]) -> list[float]:
    """An exponential moving average over about 2% of the points, corrected for its start
    (as TensorBoard's smoothing is), so the first points are not pulled towards zero."""
    weight = 1.0 - 1.0 / max(1.0, len(values) / 50)
    average, out = 0.0, []
    for n, value in enumerate(values, 1):
        average = weight * average + (1.0 - weight) * value
        out.append(average / (1.0 - weight**n) if weight else value)
    return out


def draw_loss(history: RunHistory, path: Path) -> Path:
    """Training loss (raw and smoothed) and validation loss against step, the learning rate
    on a second axis."""
    figure = _figure(LOSS_SIZE)
    axes = figure.add_subplot()
    steps, losses = history.train("loss")
    axes.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train loss")
    axes.plot(steps, smoothed(losses), color="tab:blue", linewidth=1.8, label="train loss (smoothed)")
    val_steps, val_losses = history.val()
    if val_steps:
        axes.plot(val_steps, val_losses, "o-", color="tab:orange", markersize=4, label="validation loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    lr_steps, lrs = history.train("lr")
    lines = axes.get_legend_handles_labels()
    if lr_steps:
        lr_axes = axes.twinx()
        lr_axes.plot(lr_steps, lrs, "--", color="tab:gray", linewidth=1.0, label="learning rate")
        lr_axes.set_ylabel("learning rate")
        lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        lines = [a + b for a, b in zip(lines, lr_axes.get_legend_handles_labels(), strict=True)]
    axes.legend(*lines, loc="upper right")
    axes.set_title(_title(history))
    return _save(figure, path)


def draw_overlay(runs: list[tuple[str, RunHistory]], path: Path, x: str = "step") -> Path:
    """Each run's smoothed training loss (solid) and validation loss (dashed, dots) in a
    colour of its own, labelled; ``x``: step, tokens or time."""
    figure = _figure(OVERLAY_SIZE)  # first: without matplotlib, the error that names the extra
    from matplotlib.lines import Line2D

    axes = figure.add_subplot()
    colours = _colours(len(runs))
    # One legend entry per run (its colour), and one per line style.
    legend = [
        Line2D([], [], color="black", linewidth=1.5, label="train loss (smoothed)"),
        Line2D([], [], color="black", linestyle="--", marker="o", markersize=3, linewidth=1.0, label="validation loss"),
    ]
    for (label, history), colour in zip(runs, colours, strict=True):
        steps, losses = history.train("loss")
        if steps:
            axes.plot(history.x_values(steps, x), smoothed(losses), color=colour, linewidth=1.5)
        val_steps, val_losses = history.val()
        if val_steps:
            axes.plot(history.x_values(val_steps, x), val_losses, "o--", color=colour, markersize=3, linewidth=1.0)
        legend.append(Line2D([], [], color=colour, linewidth=4, label=textwrap.fill(label, _LEGEND_WIDTH)))
    axes.set_xlabel(_X_LABELS[x])
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    figure.subplots_adjust(left=0.07, right=0.66)
    return _save(figure, path)


def _title(history: RunHistory) -> str:
    steps, losses = history.train("loss")
    text = f"{history.run_dir}: {len(steps)} steps"
    if losses:
        text += f", final loss {losses[-1]:.4f}"
    _, val_losses = history.val()
    if val_losses:
        text += f", val {val_losses[-1]:.4f}"
    return text


def _figure(size: tuple[float, float]):
    figure_module = import_extra("matplotlib.figure", "plots", "drawing loss curves")
    import_extra("matplotlib.backends.backend_agg", "plots", "drawing loss curves")
    return figure_module.Figure(figsize=size, dpi=DPI, layout=None)


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "viridis"]
    return [palette(i if count <= 10 else i / max(1, count - 1)) for i in range(count)]


def _save(figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        figure.savefig(partial, format="png", dpi=DPI)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class LossPlotHook(Hook):
    """Draws loss.png in the run directory when the run ends: completed, interrupted, or
    failed after a step. At the end, not during training: drawing never slows a step. A
    picture is not worth failing a run for, so any problem is one console line."""

    name = "loss_plot"

    def on_event(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["event"] == "run_end":
            # After a failure its error is the one line to read (a full disk fails loss.png too).
            plot_run_quietly(trainer.run.run_dir, say=log.debug if record["status"] == "failed" else log.warning)


def plot_run_quietly(run_dir: Path, say: Callable[..., None] = log.warning) -> Path | None:
    """Draw ``run_dir``/loss.png if the run took a step; say why in one line if it cannot."""

    def draw() -> Path | None:
        history = load_history(run_dir)
        return draw_loss(history, run_dir / LOSS_PNG) if history.steps else None

    return draw_quietly(draw, run_dir / LOSS_PNG, say)


def draw_quietly(draw: Callable[[], Path | None], path: Path, say: Callable[..., None] = log.warning) -> Path | None:
    """``draw()``, with a missing matplotlib, a failed write or an unreadable events.jsonl
    turned into one line (``say``): a picture is never worth failing a run or a sweep for."""
    try:
        return draw()
    except MissingExtraError as err:
        say("%s not drawn: matplotlib is not installed (%s)", path, err.hint)
    except (OSError, ValueError) as err:
        say("%s not drawn: %s", path, err)
    return None
