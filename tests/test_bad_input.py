"""Bad input (issue #14 item 13): one line naming the problem and the fix, exit code 2,
and no finished result lost. The CLI runs in-process (typer's CliRunner) so a test can
fake a full disk; the assertions are on what a user sees."""
from __future__ import annotations

import argparse
import errno
import os
import pathlib
import shutil
import sqlite3

import pytest
import torch
from filelock import FileLock
from typer.testing import CliRunner

from benchbench.cli import app
from benchbench.errors import DataError
from benchbench.stages import StageCache
from benchbench.store import Store
from tests.conftest import TOY

GRID = "track: toy\nattacks: [none]\ndefenses: [none]\nevaluators: [error]\n"


def grid(tmp_path, config_text: str | bytes = GRID, *extra: str, store=None, cache=None):
    """Run `benchbench grid` on a config with the toy plugin; return the click Result."""
    config = tmp_path / "grid.yaml"
    if isinstance(config_text, bytes):
        config.write_bytes(config_text)
    else:
        config.write_text(config_text)
    args = ["grid", str(config), "--plugin", TOY, "--no-progress", "--preset", "smoke",
            "--store", str(store or tmp_path / "r.sqlite"), "--cache", str(cache or tmp_path / "cache"), *extra]
    return CliRunner().invoke(app, args)


def one_error_line(result, *needles: str) -> str:
    """Assert exit code 2 and a single stderr line holding every needle; return it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("params", ["[1]", "x"])
def test_params_not_a_mapping(tmp_path, params):
    text = f"track: toy\nattacks: [none]\ndefenses: [{{name: clamp, params: {params}}}]\nevaluators: [error]\n"
    one_error_line(grid(tmp_path, text), "defenses: clamp: params must be a mapping")


def test_config_not_utf8(tmp_path):
    text = b"track: toy\nattacks: [n\xe9one]\ndefenses: [none]\nevaluators: [error]\n"
    one_error_line(grid(tmp_path, text), "not UTF-8", "save the file as UTF-8")


def test_yaml_error_gives_line_and_column(tmp_path):
    text = "track: toy\nattacks: [none\ndefenses: [none]\n"
    one_error_line(grid(tmp_path, text), "not valid YAML at line 3, column 9")


@pytest.mark.parametrize("seeds_line, extra, needle", [
    ("seeds: -2\n", (), "seeds must be at least 1, got -2"),
    ("", ("--seeds", "0"), "--seeds: seeds must be at least 1, got 0"),
    ("seeds: []\n", (), "the seed list is empty"),
])
def test_no_seeds_is_rejected(tmp_path, seeds_line, extra, needle):
    one_error_line(grid(tmp_path, GRID + seeds_line, *extra), needle)


def test_duplicate_seeds_are_rejected(tmp_path):
    one_error_line(grid(tmp_path, GRID + "seeds: [0, 1, 0]\n"), "seed 0 is listed more than once")


def test_store_that_is_not_sqlite(tmp_path):
    store = tmp_path / "notes.txt"
    store.write_text("my notes, not a database\n" * 20)
    one_error_line(grid(tmp_path, store=store), f"--store {store} is not a benchbench results store")
    assert store.read_text() == "my notes, not a database\n" * 20


def test_cache_that_is_a_file(tmp_path):
    cache = tmp_path / "cache.txt"
    cache.write_text("x")
    one_error_line(grid(tmp_path, cache=cache), f"stage cache {cache} is a file", "--cache")


def test_named_plugin_that_does_not_load_is_fatal(tmp_path):
    result = grid(tmp_path, GRID, "--plugin", "no_such_plugin_module")
    one_error_line(result, "--plugin no_such_plugin_module failed to load", "No module named")
    assert not (tmp_path / "r.sqlite").exists()


def test_disk_full_while_building_a_stage(tmp_path, monkeypatch):
    write_text = pathlib.Path.write_text

    def full_disk(self, *args, **kwargs):
        if "toy-model" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    one_error_line(grid(tmp_path), "disk full while building stage toy-model in "
                                   f"{tmp_path / 'cache' / 'toy-model'}", "--cache")


def test_disk_full_writing_the_store_keeps_stored_cells(tmp_path, monkeypatch):
    record, calls = Store.record, []

    def full_after_first(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise sqlite3.OperationalError("database or disk is full")
        return record(self, *args, **kwargs)

    monkeypatch.setattr(Store, "record", full_after_first)
    store = tmp_path / "r.sqlite"
    one_error_line(grid(tmp_path, GRID + "seeds: 2\n", store=store), f"disk full writing the results store {store}")
    monkeypatch.undo()
    with Store(store) as s:
        assert len(s.finished_keys()) == 1


def test_stale_temp_stage_folders_are_removed_but_not_live_ones(tmp_path):
    stage_dir = tmp_path / "cache" / "toy-data"
    stale, live = stage_dir / ".0123456789abcdef-k1ll3d", stage_dir / ".fedcba9876543210-bu1ld"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "half.json").write_text("[1, 2")
    with FileLock(str(stage_dir / "fedcba9876543210.lock")):  # a build in progress holds its lock
        result = grid(tmp_path)
    assert result.exit_code == 0, result.output
    assert not stale.exists() and live.exists()


def test_corrupt_cached_stage_names_its_folder(tmp_path):
    assert grid(tmp_path).exit_code == 0
    (stage,) = (tmp_path / "cache" / "toy-model").glob("*/model.json")
    stage.write_text("")  # truncated, e.g. by a full disk during a copy of the cache
    (tmp_path / "r.sqlite").unlink()
    folder = stage.parent
    one_error_line(grid(tmp_path), f"stage folder {folder} is truncated or corrupt", f"rm -r {folder}")
    shutil.rmtree(folder)  # the fix the message gives
    assert grid(tmp_path).exit_code == 0


def test_stage_files_and_folders_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced, fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    def build(d):
        (d / "sub").mkdir()
        (d / "sub" / "weights.bin").write_bytes(b"0" * 10)

    stage = StageCache(tmp_path).get_or_build("model", {"k": 1}, build)
    tmp = next(p for p in synced if p.endswith("weights.bin")).rsplit("/sub/", 1)[0]
    assert {f"{tmp}/sub/weights.bin", f"{tmp}/sub", f"{tmp}/stage.json", tmp} <= set(synced)
    assert synced[-1] == str(stage.path.parent)  # the rename itself, in the parent folder


def test_pickled_clip_checkpoint_is_a_data_error_without_torch_hint(tmp_path):
    from benchbench.clip.model import ClipModel, ModelSpec

    net = ClipModel.create(ModelSpec(), seed=0).net
    checkpoint = tmp_path / "epoch_1.pt"  # training scripts often pickle their argparse args with the weights
    torch.save({"state_dict": net.state_dict(), "args": argparse.Namespace(lr=1e-3)}, checkpoint)
    with pytest.raises(DataError) as info:
        ClipModel.create(ModelSpec(pretrained=str(checkpoint)), seed=0)
    message = str(info.value)
    assert "\n" not in message and str(checkpoint) in message and "safetensors" in message
    assert "weights_only=False" not in message
