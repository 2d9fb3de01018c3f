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


def _build_reading_checkpoints_late(root: str) -> bool:
    """Every rank builds one stage whose build reads its checkpoint folder at the end,
    rank 1 a moment after rank 0 (as a clip-prefix build copies its checkpoints)."""
    import time

    from benchbench import distributed

    cache = StageCache(root)
    folder = cache.checkpoint_folder("s", {"x": 1})

    def build(out):
        if distributed.is_main():
            folder.mkdir(parents=True)
            (folder / "state.json").write_text("{}")
        distributed.barrier()  # as Checkpointer.save does
        if not distributed.is_main():
            time.sleep(1.0)
        (out / "copy.json").write_text((folder / "state.json").read_text())

    return cache.get_or_build("s", {"x": 1}, build).path.name == cache.key("s", {"x": 1})


def test_ranks_building_together_read_the_checkpoints_before_rank_0_drops_them(tmp_path):
    from tests.processes import on_processes

    cache = tmp_path / "cache"
    assert on_processes(tmp_path, _build_reading_checkpoints_late, str(cache)) == [True, True]
    assert not StageCache(cache).checkpoint_folder("s", {"x": 1}).exists()  # dropped once every rank was done
