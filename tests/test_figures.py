import filecmp

from figures.build import draw_all


def test_structural_figures_exist_and_regenerate_byte_identically(tmp_path):
    first = draw_all(tmp_path / "a")
    second = draw_all(tmp_path / "b")
    names = {p.name for p in first}
    assert {"scope.svg", "layers.svg", "lenses.svg", "execution.svg", "technologies.svg"} <= names
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second):
        assert a.stat().st_size > 1000
        assert filecmp.cmp(a, b, shallow=False), f"{a.name} differs between two regenerations"
