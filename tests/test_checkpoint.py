"""The checkpoint helper: nested state <-> safetensors + JSON, atomic commits, RNG states."""
from __future__ import annotations

import math
import os
import random
import re

import numpy as np
import pytest
import torch

from benchbench.checkpoint import POINTER, Checkpointer, flatten, global_rng_state, set_global_rng_state, unflatten
from benchbench.errors import DataError


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


STATE = {
    "tensors": [torch.arange(6.0).view(2, 3).T, torch.tensor(3.0), torch.zeros(0, 4),
                torch.ones(2, dtype=torch.bfloat16), torch.tensor([True, False]), torch.arange(4, dtype=torch.uint8)],
    "by_int": {0: {"step": torch.tensor(7.0)}, 3: None},
    "by_tuple": {(1, "a"): 1.5},
    "betas": (0.9, 0.999),
    "floats": [math.inf, -math.inf, math.nan, 0.1 + 0.2],
    "marker_key": {"__tensor__": "not a tensor"},
    "misc": [None, True, 12, "text"],
}


def test_flatten_round_trip_keeps_types_keys_and_values(tmp_path):
    tensors, tree = flatten(STATE)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values()) and len(tensors) == 7
    assert _same(unflatten(tensors, tree), STATE)
    ckpt = Checkpointer(tmp_path / "c")
    ckpt.save(STATE)
    assert _same(Checkpointer(tmp_path / "c").load(), STATE)  # through safetensors and JSON files


def test_flatten_refuses_what_json_and_safetensors_cannot_hold():
    with pytest.raises(TypeError, match=r"state\.bad\[0\]: a object"):
        flatten({"bad": [object()]})


def test_shared_and_strided_tensors_are_saved_as_their_values(tmp_path):
    base = torch.arange(10.0)
    state = {"a": base[2:5], "b": base[::2], "c": base}
    Checkpointer(tmp_path).save(state)
    assert _same(Checkpointer(tmp_path).load(), state)


def test_optimizer_and_scheduler_resume_as_if_never_stopped(tmp_path):
    """AdamW + SequentialLR state dicts (int-keyed state, tuples, 0-dim step tensors)."""
    def make():
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(net.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [
            torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=2),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)], milestones=[2])
        return net, opt, sched

    def steps(net, opt, sched, first, last):
        for i in range(first, last):
            opt.zero_grad()
            net(torch.full((4, 3), float(i))).pow(2).sum().backward()
            opt.step()
            sched.step()

    straight = make()
    steps(*straight, 0, 6)
    first = make()
    steps(*first, 0, 3)
    Checkpointer(tmp_path).save({"net": first[0].state_dict(), "opt": first[1].state_dict(),
                                 "sched": first[2].state_dict()})
    state = Checkpointer(tmp_path).load()
    resumed = make()
    resumed[0].load_state_dict(state["net"])
    resumed[1].load_state_dict(state["opt"])
    resumed[2].load_state_dict(state["sched"])
    steps(*resumed, 3, 6)
    assert all(torch.equal(a, b) for a, b in zip(straight[0].parameters(), resumed[0].parameters()))
    assert straight[2].get_last_lr() == resumed[2].get_last_lr()


def test_a_save_killed_before_its_commit_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path, every=1)
    ckpt.save({"step": 1, "w": torch.ones(3)})

    def killed(*args):
        raise KeyboardInterrupt  # stands for SIGKILL between the tensor file and the commit

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save({"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert len(list(tmp_path.glob("tensors-*"))) == 2  # the uncommitted file is there...
    state = Checkpointer(tmp_path).load()
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert len(list(tmp_path.glob("tensors-*"))) == 1  # ...until the next load removes it
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_an_unreadable_checkpoint_names_the_folder_and_the_fix(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save({"w": torch.ones(2)})
    next(tmp_path.glob("tensors-*")).write_bytes(b"truncated")
    folder = re.escape(str(tmp_path))
    with pytest.raises(DataError, match=rf"checkpoint folder {folder} is unreadable .*rm -r {folder}"):
        ckpt.load()
    (tmp_path / POINTER).write_text("{")
    with pytest.raises(DataError, match="unreadable"):
        ckpt.load()


def test_no_checkpoint_loads_as_none(tmp_path):
    assert Checkpointer(tmp_path / "missing").load() is None


@pytest.mark.parametrize("every, due", [(None, [False] * 4), ("epoch", [False, False, True, False]),
                                        (2, [False, True, False, False])])
def test_due(every, due):
    ckpt = Checkpointer("x", every)
    assert [ckpt.due(1), ckpt.due(2), ckpt.due(epoch_end=True), ckpt.due(3)] == due


@pytest.mark.parametrize("every", [0, -1, True])
def test_a_bad_interval_is_refused(every):
    with pytest.raises(ValueError, match="checkpoint_every"):
        Checkpointer("x", every)


def test_global_rng_states_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    Checkpointer(tmp_path).save({"rng": global_rng_state()})
    expected = random.random(), np.random.randn(), float(torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_global_rng_state(Checkpointer(tmp_path).load()["rng"])
    assert (random.random(), np.random.randn(), float(torch.rand(1))) == expected
