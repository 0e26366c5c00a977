"""The training-curve renderer: known records, known pixels."""

import json
import time

import numpy as np
import pytest

from flarecli.core.errors import InputError
from flarecli.core.io import files
from flarecli.core.report import curves
from flarecli.core.report.curves import (
    LOSS,
    PHASE,
    SELECTED,
    VAL_SCORE,
    draw_progress,
    layout,
    nice_ticks,
    read_metrics,
    series_colours,
    write_progress,
)


def records(n, best=(), phase=None, **extra):
    out = []
    for k in range(1, n + 1):
        r = {"epoch": k, "lr": 0.01 * (1 - k / (n + 1)), "loss": 2.0 / k, "loss_FL": 1.5 / k,
             "loss_organs": 1.0 / k + 0.1, "val_mean": 0.9 * k / n, "val_loss": 1.8 / k,
             "seconds": 2.0 + k % 3, "best": k in best, **extra}
        if phase:
            r = {"phase": phase, **r}
        out.append(r)
    return out


def pixels(img):
    return np.asarray(img)


def has_colour(arr, colour, box=None):
    if box is not None:
        arr = arr[box.top:box.bottom + 1, box.left:box.right + 1]
    return bool(np.all(arr == np.array(colour, np.uint8), axis=-1).any())


def columns_of(arr, colour, box):
    """The x pixels of ``box`` that are ``colour`` over at least 80 % of its inner height."""
    inner = arr[box.top + 1:box.bottom, box.left:box.right + 1]
    hit = np.all(inner == np.array(colour, np.uint8), axis=-1).mean(axis=0)
    return [box.left + int(x) for x in np.nonzero(hit > 0.8)[0]]


def test_x_mapping_puts_the_first_epoch_left_and_the_last_right():
    lay = layout(10)
    for box in lay.panels:
        assert lay.x_pixel(box, 0) == box.left
        assert lay.x_pixel(box, 9) == box.right
        assert lay.x_pixel(box, 4.5) == pytest.approx((box.left + box.right) / 2)


def test_the_selected_epoch_is_the_last_best_one_and_drawn_where_it_belongs():
    recs = records(10, best=(2, 5, 7))
    arr = pixels(draw_progress(recs))
    lay = layout(10)
    for box in lay.panels:
        # epoch 7 is record 6 of 0..9: six ninths of the way across
        expected = box.left + 6 / 9 * (box.right - box.left)
        assert columns_of(arr, SELECTED, box) == [round(expected)]


def test_every_series_is_drawn_in_its_colour():
    recs = records(30, best=(30,))
    arr = pixels(draw_progress(recs))
    colours = series_colours(recs)
    assert set(colours) == {"loss", "loss_FL", "loss_organs", "val_loss", "val_mean", "lr",
                            "seconds"}
    lay = layout(30)
    inside = {"val_mean": lay.score, "lr": lay.lr, "seconds": lay.seconds}
    for key, colour in colours.items():
        assert has_colour(arr, colour, inside.get(key, lay.losses)), key
    # the legend names the loss series, in their colours, right of the loss panel
    legend = arr[:, lay.losses.right + 5:]
    for key in ("loss", "loss_FL", "loss_organs", "val_loss"):
        assert has_colour(legend, colours[key]), key


def test_a_run_without_validation_leaves_the_score_panel_empty():
    recs = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in records(5)]
    arr = pixels(draw_progress(recs))
    assert not has_colour(arr, VAL_SCORE)
    assert has_colour(arr, LOSS)
    assert "val_loss" not in series_colours(recs)


def test_no_records_give_empty_axes_and_one_record_a_visible_dot():
    empty = draw_progress([])
    assert empty.size == (900, 600)
    arr = pixels(empty)
    for colour in (LOSS, VAL_SCORE, SELECTED):
        assert not has_colour(arr, colour)
    assert has_colour(arr, curves.AXIS)
    one = pixels(draw_progress(records(1, best=(1,))))
    lay = layout(1)
    for box in lay.panels:  # a single epoch sits in the middle
        assert columns_of(one, SELECTED, box) == [round((box.left + box.right) / 2)]
    for colour in (LOSS, VAL_SCORE, curves.LR, curves.SECONDS):
        assert has_colour(one, colour)


def test_phases_share_one_axis_with_a_boundary_where_each_starts():
    recs = records(6, best=(2,), phase="all") + records(4, best=(1, 3), phase="decoder")
    arr = pixels(draw_progress(recs))
    lay = layout(10)
    box = lay.score
    # the second phase starts at record 6: the boundary lies half way from record 5
    boundary = round(lay.x_pixel(box, 5.5))
    column = arr[box.top + 1:box.bottom, boundary]
    dashes = np.all(column == np.array(PHASE, np.uint8), axis=-1).mean()
    assert 0.3 < dashes < 0.8  # dashed, not solid
    # the selected epoch is the last best: epoch 3 of phase "decoder", record 8
    assert columns_of(arr, SELECTED, box) == [round(lay.x_pixel(box, 8))]
    assert curves.phase_starts(recs) == [(0, "all"), (6, "decoder")]


def test_missing_and_non_finite_values_leave_gaps():
    recs = records(9)
    for r in recs[3:6]:
        r["val_mean"] = None
    recs[7]["loss"] = float("nan")
    arr = pixels(draw_progress(recs))
    lay = layout(9)
    gap = round(lay.x_pixel(lay.score, 4))
    column = arr[lay.score.top + 1:lay.score.bottom, gap - 1:gap + 2]
    assert not has_colour(column, VAL_SCORE)
    assert has_colour(arr, VAL_SCORE, lay.score)


def test_500_epochs_draw_in_under_a_tenth_of_a_second():
    recs = records(250, best=(100, 200), phase="a") + records(250, best=(50,), phase="b")
    draw_progress(recs)  # fonts loaded once
    best = min(_timed(lambda: draw_progress(recs)) for _ in range(3))
    assert best < 0.1, best


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_nice_ticks():
    assert nice_ticks(0, 1, 5) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0, 0.003, 4) == pytest.approx([0, 0.001, 0.002, 0.003])
    assert nice_ticks(1, 500, 8) == pytest.approx([100, 200, 300, 400, 500])
    assert nice_ticks(2.3, 2.6, 4) == pytest.approx([2.3, 2.4, 2.5, 2.6])


def test_write_progress_writes_the_png_atomically_with_the_umask(tmp_path):
    run = tmp_path / "model" / "organs"
    run.mkdir(parents=True)
    lines = [json.dumps(r) for r in records(4, best=(3,))]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"epoch": 5, "lo')  # cut by kill
    path = write_progress(run)
    assert path == run / "progress.png"
    # the mode any new file of this process gets (the umask is read once, at import)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~files._UMASK
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "progress.png"]
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (900, 600) and img.format == "PNG"
        arr = pixels(img.convert("RGB"))
    lay = layout(4)
    assert columns_of(arr, SELECTED, lay.losses) == [round(lay.x_pixel(lay.losses, 2))]
    assert len(read_metrics(run / "metrics.jsonl")) == 4


def test_write_progress_of_an_empty_or_missing_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert write_progress(tmp_path).is_file()
    with pytest.raises(InputError, match="no such metrics file"):
        write_progress(tmp_path / "nothing")
