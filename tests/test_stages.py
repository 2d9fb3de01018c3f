import pytest

from benchbench.stages import StageCache


def test_built_once_then_hit(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def build(d):
        calls.append(d)
        (d / "out.txt").write_text("x")

    a = cache.get_or_build("data", {"seed": 1}, build)
    b = cache.get_or_build("data", {"seed": 1}, build)
    c = cache.get_or_build("data", {"seed": 2}, build)
    assert len(calls) == 2 and not a.hit and b.hit and a.path == b.path != c.path
    assert (a.path / "out.txt").read_text() == "x"
    assert cache.builds("data") == 2 and cache.stats[("data", "hit")] == 1


def test_failed_build_leaves_nothing_behind(tmp_path):
    cache = StageCache(tmp_path)

    def build(d):
        (d / "half.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("model", {"k": 1}, build)
    assert not any(p.name.startswith(".") or p.is_dir() for p in (tmp_path / "model").iterdir())
    stage = cache.get_or_build("model", {"k": 1}, lambda d: (d / "ok").write_text("1"))
    assert not stage.hit and (stage.path / "ok").exists()
