from flarecli.core.words import count


def test_count_is_singular_for_exactly_one():
    assert count(1, "scan") == "1 scan"
    assert [count(n, "preview") for n in (0, 2)] == ["0 previews", "2 previews"]
    assert count(3, "series", "series") == "3 series"
