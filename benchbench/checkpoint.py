"""Checkpoints inside a cell: a training's whole state, so a killed grid resumes mid-training.

A trainer hands ``Checkpointer.save`` a nested state (model, optimiser and scheduler
state dicts, RNG states, the loader's position, the defense's ``state_dict()``...).
``flatten`` splits it into its tensors, written as one safetensors file, and the rest
(numbers, strings, the nesting, dict keys that are not strings, tuples), written as
JSON with each tensor replaced by a reference to its name and device. Nothing is
pickled, so loading a checkpoint runs no code: safetensors and ``json`` only.

A checkpoint is committed atomically, like a stage (``benchbench.stages``): the tensors
go to a fresh ``tensors-*.safetensors`` file, fsynced; then ``checkpoint.json``, which
names that file, is written to a temporary file, fsynced and ``os.replace``d into place
(the commit point), and the folder is fsynced. A kill at any moment leaves either the
previous checkpoint or the new one; files of an uncommitted one are removed by the next
save or load.

The checkpoint folder of a stage lives next to it in the cache (``KEY.checkpoints``,
``StageCache.checkpoint_folder``) and is only written by the builder holding the
stage's lock; the cache deletes it once the stage is built, unless told to keep it.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchbench import distributed
from benchbench.errors import DataError

FORMAT = 1
POINTER = "checkpoint.json"
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_MARKERS = frozenset({_TENSOR, _TUPLE, _ITEMS})

#: How often a trainer checkpoints: every N optimiser steps, after each epoch, or never.
Every = int | Literal["epoch"] | None


def flatten(state: Any) -> tuple[dict[str, Any], Any]:
    """``(tensors, tree)``: the tensors of a nested state by name, and a JSON-able tree
    holding everything else, each tensor replaced by ``{"__tensor__": name, "device": d}``.

    Supported: tensors, ``None``, bools, ints, floats (NaN and inf too), strings, lists,
    tuples and dicts with any of these as keys (optimiser state is keyed by int). NumPy
    scalars become Python numbers. Anything else raises ``TypeError`` naming it.
    """
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, where: str) -> Any:
        if isinstance(x, torch.Tensor):
            name = str(len(tensors))
            tensors[name] = x.detach().to("cpu").contiguous().clone()  # clone: no shared storage
            return {_TENSOR: name, "device": str(x.device)}
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x) and not _MARKERS & set(x):
                return {k: walk(v, f"{where}.{k}") for k, v in x.items()}
            return {_ITEMS: [[walk(k, where), walk(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {_TUPLE: [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        raise TypeError(f"cannot checkpoint {where}: a {type(x).__name__} (give tensors, numbers, strings, "
                        f"lists, tuples or dicts of them)")

    return tensors, walk(state, "state")


def unflatten(tensors: dict[str, Any], tree: Any) -> Any:
    """The inverse of ``flatten``: tensors go back to the device they were saved from
    (CPU when that device is not available here)."""
    import torch

    def device(name: str) -> str:
        return name if not name.startswith("cuda") or torch.cuda.is_available() else "cpu"

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if _TENSOR in x:
                return tensors[x[_TENSOR]].to(device(x["device"]))
            if _TUPLE in x:
                return tuple(walk(v) for v in x[_TUPLE])
            if _ITEMS in x:
                return {_hashable(walk(k)): walk(v) for k, v in x[_ITEMS]}
            return {k: walk(v) for k, v in x.items()}
        return x

    return walk(tree)


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def global_rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's global CPU RNG states, as ``flatten`` can store them."""
    import torch

    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {"python": [version, list(internal), gauss],
            "numpy": {"key": numpy_state["state"]["key"].tolist(), "pos": int(numpy_state["state"]["pos"]),
                      "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
            "torch": torch.get_rng_state()}


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``global_rng_state`` returned."""
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np.array(n["key"], dtype=np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])


class Checkpointer:
    """One training's checkpoint folder and how often it saves.

    ``every``: an int N saves after every N-th optimiser step, ``"epoch"`` after each
    epoch, ``None`` never (a checkpoint already in the folder is still resumed from: it
    is the same experiment, the key says so). ``what`` names the training in the JSON,
    for a human reading the folder.
    """

    def __init__(self, folder: str | Path, every: Every = None, what: str = ""):
        if isinstance(every, int) and (isinstance(every, bool) or every < 1):
            raise ValueError(f"checkpoint_every must be a step count >= 1, 'epoch' or null, got {every!r}")
        self.folder, self.every, self.what = Path(folder), every, what
        self.saves = 0  # in this process

    def due(self, steps: int | None = None, epoch_end: bool = False) -> bool:
        """Is a checkpoint due after ``steps`` optimiser steps in all (mid-epoch), or at an
        epoch's end (``epoch_end``)?"""
        if self.every is None:
            return False
        if self.every == "epoch":
            return epoch_end
        return steps is not None and not epoch_end and steps % self.every == 0

    def exists(self) -> bool:
        """Is there a committed checkpoint to resume from?"""
        return (self.folder / POINTER).is_file()

    def save(self, state: dict[str, Any]) -> None:
        """Commit ``state`` as the folder's checkpoint (atomically; see the module doc).

        On several processes (``benchbench.distributed``) the ranks hold the same state:
        rank 0 writes it, and every rank returns once it is committed, so any may load it."""
        if distributed.is_main():
            self._commit(state)
        distributed.barrier()

    def _commit(self, state: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        from benchbench.stages import _fsync, _write_synced

        tensors, tree = flatten(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tensor_path = tempfile.mkstemp(prefix="tensors-", suffix=".safetensors", dir=self.folder)
        os.close(fd)
        save_file(tensors, tensor_path)
        _fsync(Path(tensor_path))
        pointer = {"format": FORMAT, "what": self.what, "tensors": Path(tensor_path).name, "state": tree}
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".json", dir=self.folder)
        os.close(fd)
        _write_synced(Path(tmp), json.dumps(pointer))
        os.replace(tmp, self.folder / POINTER)
        _fsync(self.folder)
        self.saves += 1
        self._remove_uncommitted(keep=pointer["tensors"])

    def load(self) -> dict[str, Any] | None:
        """The committed state, or ``None`` when there is none; a checkpoint that cannot
        be read is a ``DataError`` naming the folder and the fix."""
        from safetensors.torch import load_file

        path = self.folder / POINTER
        if not path.is_file():
            return None
        try:
            pointer = json.loads(path.read_text())
            if pointer.get("format") != FORMAT:
                raise ValueError(f"format {pointer.get('format')!r}, this benchbench reads {FORMAT}")
            tensors = load_file(str(self.folder / pointer["tensors"]))
            state = unflatten(tensors, pointer["state"])
        except Exception as exc:  # noqa: BLE001 - safetensors' own error is none of the builtin ones
            raise DataError(f"checkpoint folder {self.folder} is unreadable ({exc}): delete it "
                            f"(rm -r {self.folder}) and re-run to train that model from the start") from None
        self._remove_uncommitted(keep=pointer["tensors"])
        return state

    def _remove_uncommitted(self, keep: str) -> None:
        """Delete tensor files no committed pointer names (older checkpoints, killed saves)."""
        for f in self.folder.iterdir():
            if (f.name.startswith("tensors-") and f.name != keep) or f.name.startswith(".checkpoint-"):
                f.unlink(missing_ok=True)


__all__ = ["Checkpointer", "Every", "flatten", "global_rng_state", "set_global_rng_state", "unflatten"]
