"""Training curves of one run folder as a PNG: ``progress.png`` beside ``metrics.jsonl``.

Drawn with Pillow alone (already a dependency; a plotting stack would cost more to import
than the drawing takes). The picture is rewritten after every epoch, so it must be cheap:
a few thousand line segments and a few dozen labels, about 10 ms for 500 epochs.

Layout (900 x 600 by default): the training losses across the top (``loss`` and every
``loss_<head>`` / ``loss_<kind>``, with ``val_loss`` when present) with the legend on the
right; below, three panels: the validation score (``val_mean``), the learning rate
(``lr``) and the epoch time (``seconds``). The x axis is the epoch counted over the whole
run: a run of several phases (records with a ``phase`` key, each counting its epochs from
1) is drawn on one axis with a dashed line and the phase's name where a phase starts. The
selected epoch -- the last record with ``"best": true``, whose weights are
``weights_best.pt`` -- is a red vertical line through every panel, labelled.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from flarecli.core.errors import InputError

WIDTH, HEIGHT = 900, 600

BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (232, 232, 232)
TEXT = (30, 30, 30)
PHASE = (150, 150, 150)
#: The selected epoch (red: no series takes it).
SELECTED = (220, 30, 30)
#: The total training loss and the validation loss.
LOSS = (31, 119, 180)
VAL_LOSS = (20, 20, 20)
#: The other loss terms (per head, per data kind), in order of first appearance.
PALETTE = ((255, 127, 14), (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207),
           (188, 189, 34), (90, 90, 170), (255, 187, 120), (152, 223, 138), (197, 176, 213))
VAL_SCORE = (44, 160, 44)
LR = (0, 128, 128)
SECONDS = (160, 100, 20)

#: Below this many epochs each value also gets a dot, so one epoch is visible at all.
DOTS_BELOW = 40


@dataclass(frozen=True)
class Box:
    """A plot area in pixels: x in [left, right], y in [top, bottom] (bottom is larger)."""

    left: int
    top: int
    right: int
    bottom: int


@dataclass(frozen=True)
class Layout:
    """Where the panels of a ``width`` x ``height`` picture lie, and how epochs map to x.

    ``n`` records are drawn at x positions 0..n-1 (the run's epoch counted over all phases,
    minus one); each panel maps that range onto its own width.
    """

    width: int
    height: int
    n: int
    losses: Box
    score: Box
    lr: Box
    seconds: Box

    @property
    def panels(self) -> tuple[Box, ...]:
        return (self.losses, self.score, self.lr, self.seconds)

    def x_pixel(self, box: Box, index: float) -> float:
        """The x pixel of record ``index`` (0-based) in ``box``."""
        lo, hi = _x_range(self.n)
        return box.left + (index - lo) / (hi - lo) * (box.right - box.left)


def layout(n: int, width: int = WIDTH, height: int = HEIGHT) -> Layout:
    """The panel boxes of a picture of ``n`` records (see the module docstring)."""
    legend = max(130, width // 7)
    top_h = int(height * 0.46)
    losses = Box(62, 50, width - legend - 14, top_h)
    row_top = top_h + 62
    bottom = height - 38
    third = (width - 20) // 3
    boxes = [Box(20 + k * third + 48, row_top, 20 + (k + 1) * third - 14, bottom)
             for k in range(3)]
    return Layout(width, height, n, losses, *boxes)


def selected_index(records: list[dict[str, Any]]) -> int | None:
    """The index of the selected epoch: the last record marked ``"best": true``, or None."""
    chosen = None
    for i, r in enumerate(records):
        if r.get("best") is True:
            chosen = i
    return chosen


def phase_starts(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """``(index, phase name)`` where each phase begins; empty for a run without phases."""
    starts, previous = [], None
    for i, r in enumerate(records):
        phase = r.get("phase")
        if phase is not None and phase != previous:
            starts.append((i, str(phase)))
        previous = phase
    return starts


def loss_keys(records: list[dict[str, Any]]) -> list[str]:
    """The training-loss series of the records: ``loss`` first, then every other
    ``loss_*`` key in order of first appearance, then ``val_loss``."""
    keys: list[str] = []
    for r in records:
        for k in r:
            if k.startswith("loss_") and k not in keys:
                keys.append(k)
    head = ["loss"] if any("loss" in r for r in records) else []
    tail = ["val_loss"] if any("val_loss" in r for r in records) else []
    return head + keys + tail


def series_colours(records: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """The colour of every series drawn for these records (the legend's)."""
    colours: dict[str, tuple[int, int, int]] = {}
    k = 0
    for key in loss_keys(records):
        if key == "loss":
            colours[key] = LOSS
        elif key == "val_loss":
            colours[key] = VAL_LOSS
        else:
            colours[key] = PALETTE[k % len(PALETTE)]
            k += 1
    colours.update(val_mean=VAL_SCORE, lr=LR, seconds=SECONDS)
    return colours


def draw_progress(records: list[dict[str, Any]], title: str | None = None,
                  width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """Draw the curves of ``records`` (the lines of ``metrics.jsonl``, in order) as an RGB
    image of ``width`` x ``height`` pixels.

    Values that are missing, not numbers or not finite leave a gap in their line. An empty
    list gives the axes and "no epochs yet". Pure: no I/O.
    """
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    n = len(records)
    lay = layout(n, width, height)
    colours = series_colours(records)
    if title:
        draw.text((lay.losses.left, 6), title, fill=TEXT, font=_font(15))
    xs = list(range(n))
    losses = {k: _values(records, k) for k in loss_keys(records)}
    panels = (
        (lay.losses, "training loss" + (" (val_loss: validation)" if "val_loss" in losses
                                        else ""), losses),
        (lay.score, "validation score (val_mean)", {"val_mean": _values(records, "val_mean")}),
        (lay.lr, "learning rate (lr)", {"lr": _values(records, "lr")}),
        (lay.seconds, "epoch time (s)", {"seconds": _values(records, "seconds")}),
    )
    phases = phase_starts(records)
    chosen = selected_index(records)
    for box, label, series in panels:
        present = [v for values in series.values() for v in values if v is not None]
        lo, hi = _y_range(present, unit=box is lay.score)
        _axes(draw, lay, box, lo, hi, label, font, small, multi_phase=len(phases) > 1)
        for k, (i, name) in enumerate(phases):
            if k == 0 and i == 0:
                if len(phases) > 1 and box is lay.losses:
                    draw.text((box.left + 3, box.top + 2), name, fill=PHASE, font=small)
                continue
            x = round(lay.x_pixel(box, i - 0.5))
            _dashed(draw, x, box.top, box.bottom, PHASE)
            if box is lay.losses:
                draw.text((x + 3, box.top + 2), name, fill=PHASE, font=small)
        if chosen is not None:
            x = round(lay.x_pixel(box, chosen))
            draw.line([(x, box.top), (x, box.bottom)], fill=SELECTED, width=1)
        for key, values in series.items():
            _curve(draw, lay, box, xs, values, lo, hi, colours[key])
        if not present:
            draw.text((box.left + 8, (box.top + box.bottom) // 2 - 6),
                      "no epochs yet" if n == 0 else "not recorded", fill=PHASE, font=font)
    if chosen is not None:
        r = records[chosen]
        where = f"epoch {r.get('epoch', chosen + 1)}"
        if r.get("phase") is not None:
            where += f" of phase {r['phase']}"
        text = f"selected: {where}"
        if isinstance(r.get("val_mean"), (int, float)):
            text += f" (val_mean {r['val_mean']:.3f})"
        x = round(lay.x_pixel(lay.losses, chosen))
        w = draw.textlength(text, font=small)
        tx = x + 4 if x + 4 + w < lay.losses.right else x - 4 - w
        draw.text((tx, lay.losses.top + 16), text, fill=SELECTED, font=small)
    _legend(draw, lay, records, colours, small)
    return img


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, in order; a line that is not a JSON object (one
    cut short by a kill) is skipped. Raises InputError when the file cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such metrics file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable metrics file ({e})") from None
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_progress(run_dir: Path, title: str | None = None) -> Path:
    """Read ``run_dir/metrics.jsonl`` and write ``run_dir/progress.png`` atomically (whole or
    absent, permissions from the umask); returns the PNG's path.

    ``title`` defaults to the run folder's last two parts (``MODEL/STAGE``). Raises
    InputError when the metrics file cannot be read, WriteFailed (DiskFull) when the PNG
    cannot be written.
    """
    from flarecli.core.io.files import atomic_path

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if title is None:
        title = "/".join(run_dir.resolve().parts[-2:])
    picture = draw_progress(records, title=title)
    target = run_dir / "progress.png"
    with atomic_path(target) as tmp:
        # the fastest zlib level: a third larger, half the time, and it is redrawn each epoch
        picture.save(tmp, format="PNG", compress_level=1)
    return target


# ---------------------------------------------------------------------------------------------
# drawing helpers
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _values(records: list[dict[str, Any]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for r in records:
        v = r.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        out.append(float(v) if ok else None)
    return out


def _x_range(n: int) -> tuple[float, float]:
    return (-0.5, 0.5) if n <= 1 else (0.0, float(n - 1))


def _y_range(values: list[float], unit: bool = False) -> tuple[float, float]:
    if unit:  # a Dice score: 0..1 unless it strays outside
        return min([0.0, *values]), max([1.0, *values])
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo >= 0 and lo < 0.2 * hi:
        lo = 0.0  # start at zero when it costs little room
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return (lo if lo == 0.0 else lo - pad), hi + pad


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) inside [lo, hi], at most
    ``most`` + 1 of them."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return [lo]
    raw = span / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [first + k * step for k in range(max(count, 0))]


def _label(v: float, step: float) -> str:
    if v == 0:
        return "0"
    if abs(v) < 1e-3 or abs(v) >= 1e5:
        return f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and round(step * 10 ** decimals, 6) % 1:  # 0.25 needs one more place
        decimals += 1
    return f"{v:.{decimals}f}"


def _axes(draw: ImageDraw.ImageDraw, lay: Layout, box: Box, lo: float, hi: float, label: str,
          font, small, multi_phase: bool) -> None:
    ticks = nice_ticks(lo, hi, 5 if box is lay.losses else 4)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for t in ticks:
        y = round(_y(box, t, lo, hi))
        draw.line([(box.left, y), (box.right, y)], fill=GRID)
        text = _label(t, step)
        draw.text((box.left - 6 - draw.textlength(text, font=small), y - 6), text, fill=TEXT,
                  font=small)
    n = lay.n
    if n:
        xticks = [t for t in nice_ticks(1, max(n, 1), 8 if box is lay.losses else 4)
                  if float(t).is_integer()] or [1]
        for t in xticks:
            x = round(lay.x_pixel(box, t - 1))
            draw.line([(x, box.bottom), (x, box.bottom + 4)], fill=AXIS)
            text = str(int(t))
            draw.text((x - draw.textlength(text, font=small) / 2, box.bottom + 6), text,
                      fill=TEXT, font=small)
    draw.rectangle([box.left, box.top, box.right, box.bottom], outline=AXIS)
    draw.text((box.left, box.top - 18), label, fill=TEXT, font=font)
    xlabel = "epoch (all phases)" if multi_phase else "epoch"
    draw.text((box.right - draw.textlength(xlabel, font=small), box.bottom + 20), xlabel,
              fill=PHASE, font=small)


def _y(box: Box, v: float, lo: float, hi: float) -> float:
    return box.bottom - (v - lo) / (hi - lo) * (box.bottom - box.top)


def _curve(draw: ImageDraw.ImageDraw, lay: Layout, box: Box, xs: list[int],
           values: list[float | None], lo: float, hi: float, colour) -> None:
    run: list[tuple[float, float]] = []
    dots = len(values) < DOTS_BELOW
    for x, v in zip(xs, values, strict=True):
        if v is None:
            _polyline(draw, run, colour)
            run = []
            continue
        p = (lay.x_pixel(box, x), _y(box, v, lo, hi))
        run.append(p)
        if dots:
            draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)
    _polyline(draw, run, colour)


def _polyline(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], colour) -> None:
    if len(points) > 1:
        draw.line(points, fill=colour, width=2)


def _dashed(draw: ImageDraw.ImageDraw, x: int, top: int, bottom: int, colour) -> None:
    for y in range(top, bottom, 8):
        draw.line([(x, y), (x, min(y + 4, bottom))], fill=colour)


def _legend(draw: ImageDraw.ImageDraw, lay: Layout, records: list[dict[str, Any]],
            colours: dict[str, tuple[int, int, int]], small) -> None:
    x = lay.losses.right + 14
    y = lay.losses.top
    entries = [(k, colours[k]) for k in loss_keys(records)]
    if selected_index(records) is not None:
        entries.append(("selected epoch", SELECTED))
    if len(phase_starts(records)) > 1:
        entries.append(("phase start", PHASE))
    for name, colour in entries:
        draw.line([(x, y + 7), (x + 18, y + 7)], fill=colour, width=3)
        draw.text((x + 24, y), name, fill=TEXT, font=small)
        y += 17
