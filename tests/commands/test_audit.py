"""``flare audit``'s tables in an 80-column terminal."""

import numpy as np

from tests.conftest import write_case


def test_the_summary_headers_are_whole_at_80_columns(tmp_path, run_cli, columns80):
    label = np.zeros((8, 10, 12), np.uint8)
    label[2:5, 3:6, 3:6] = 1
    write_case(tmp_path, "a", label)
    write_case(tmp_path, "b", None)
    res = run_cli("audit", tmp_path)
    assert res.code == 0, res.stderr
    assert "…" not in res.stdout
    assert all(len(line) <= 80 for line in res.stdout.splitlines())
    rows = {cells[1].strip(): cells[2].strip() for cells in
            (line.split("│") for line in res.stdout.splitlines()) if len(cells) == 4}
    assert rows["all"] == "2" and rows["labeled"] == "1" and rows["unlabeled"] == "1"
    assert rows["organ partial"] == "1" and rows["problems"] == "0"
