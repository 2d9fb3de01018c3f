"""Ray execution: the same cells as the local executor, spread over a Ray cluster.

Ray does all the distribution; this module only translates. Each cell is one Ray task
running ``benchbench.runner.run_cell`` (which rebuilds the registry from ``env.plugins``
in the worker and shares stages through ``env.cache_root``, a directory every node must
see: a local disk for one machine, an NFS/shared mount for a cluster). ``ray.wait``
streams results back as they finish, so the driver commits every cell the moment it
returns and a killed driver loses nothing that finished.

A cell planned for N > 1 processes (``CellSpec.processes``: ``--workers-per-cell N``)
trains on N processes together: its Ray task
starts a Ray Train ``TorchTrainer`` (``ScalingConfig(num_workers=N, use_gpu=...)``), whose
workers Ray joins into one ``torch.distributed`` group (gloo on CPU, NCCL on GPUs) and
which each run ``run_cell`` on the same cell; stages and checkpoints are rank 0's
(``benchbench.stages``, ``benchbench.checkpoint``) and rank 0's result comes back to the
driver, which writes the one store row.

Failure isolation has two layers. An exception inside a cell is caught by ``run_cell``
and comes back as an ordinary ``failed`` result. A worker process that dies (segfault,
OOM kill, ``os._exit``) is retried by Ray ``max_retries`` times and, if it keeps dying,
becomes a ``failed`` result here instead of an exception in the driver.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from benchbench.errors import ConfigError
from benchbench.registry import Registry
from benchbench.runner import Environment, run_cell


RAY_TRAIN_DIR = ".ray-train"  # under the cache root: Ray Train's run folders (rank 0's result)
RESULT_FILE = "result.json"


class RayExecutor:
    """Run cells as Ray tasks.

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    ``None`` lets Ray choose (``RAY_ADDRESS``, else a cluster ``ray start`` began on this
    machine, else a private instance for the run). If Ray is already initialised in
    this process (tests, notebooks) that connection is used.
    Each cell asks for ``env.resources`` (the grid config's ``resources:``, e.g.
    ``{num_cpus: 1, num_gpus: 1}``); with ``num_gpus > 0`` cells run on ``cuda``, which
    Ray has pointed at the GPU it reserved for the task.
    """

    def __init__(self, address: str | None = None, max_retries: int = 1):
        self.address = address
        self.max_retries = max_retries

    def map(self, items: list[tuple[str, dict[str, Any]]], env: Environment,
            registry: Registry | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'benchbench[ray]'") from None
        started_here = not ray.is_initialized()
        if started_here:  # a private instance needs no dashboard; a cluster keeps its own settings
            try:
                ray.init(address=self.address, **({} if self.address else {"include_dashboard": False}))
            except ConnectionError as exc:
                raise ConfigError(f"cannot connect to Ray at {self.address} ({str(exc).splitlines()[0]}); "
                                  f"start one with `ray start --head` or fix --address (see docs/cluster.md)") from None
        env = _worker_environment(env)
        alone = ray.remote(run_cell).options(max_retries=self.max_retries, num_cpus=env.resources.get("num_cpus", 1),
                                             num_gpus=env.resources.get("num_gpus", 0))
        # a light task that runs the cell's Ray Train job, whose workers hold the resources
        together = ray.remote(_run_cell_on_workers).options(max_retries=self.max_retries, num_cpus=0)
        env_ref = ray.put(env)
        keys = {(together if spec.get("processes", 1) > 1 else alone).remote(spec, env_ref): key
                for key, spec in items}
        pending = list(keys)
        try:
            while pending:
                (ref,), pending = ray.wait(pending, num_returns=1)
                yield keys[ref], _result(ray, ref)
        finally:  # driver interrupted: don't leave queued cells running on the cluster
            for ref in pending:
                ray.cancel(ref)
            if started_here:
                ray.shutdown()


def _worker_environment(env: Environment) -> Environment:
    """The driver's environment as a worker elsewhere must see it.

    Paths become absolute (a worker's working directory is not the driver's), per-cell
    progress bars are off (they would interleave in the driver's log), and a cell that
    reserved a GPU runs on it.
    """
    plugins = tuple(os.path.abspath(p) if os.path.exists(p) else p for p in env.plugins)
    device = "cuda" if env.resources.get("num_gpus", 0) > 0 and env.device == "cpu" else env.device
    return replace(env, cache_root=os.path.abspath(env.cache_root), plugins=plugins,
                   progress=False, device=device)


def _run_cell_on_workers(spec: dict[str, Any], env: Environment) -> dict[str, Any]:
    """One cell as a Ray Train job of the cell's ``processes`` workers, each asking for the
    cell's ``num_cpus`` and ``num_gpus``; rank 0's result."""
    from ray import train
    from ray.train.torch import TorchTrainer

    workers, gpus = spec["processes"], env.resources.get("num_gpus", 0)
    storage, name = os.path.join(env.cache_root, RAY_TRAIN_DIR), f"cell-{os.getpid()}-{time.time_ns()}"
    trainer = TorchTrainer(_cell_worker, train_loop_config={"spec": spec, "env": env},
                           scaling_config=train.ScalingConfig(
                               num_workers=workers, use_gpu=gpus > 0,
                               resources_per_worker={"CPU": env.resources.get("num_cpus", 1),
                                                     **({"GPU": gpus} if gpus > 0 else {})}),
                           # the cache root is on storage every node sees already
                           run_config=train.RunConfig(name=name, storage_path=storage))
    try:
        with trainer.fit().checkpoint.as_directory() as folder:
            return json.loads((Path(folder) / RESULT_FILE).read_text())
    finally:  # the result is the driver's now; Ray Train's run folder has served
        shutil.rmtree(os.path.join(storage, name), ignore_errors=True)


def _cell_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker: the cell on this rank (Ray has joined the process group). Rank
    0's result goes back as the job's checkpoint (Ray Train keeps only reports that carry
    one), as JSON."""
    from ray import train

    result = run_cell(config["spec"], config["env"])
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if train.get_context().get_world_rank() == 0:
            (Path(folder) / RESULT_FILE).write_text(json.dumps(result))
            checkpoint = train.Checkpoint.from_directory(folder)
        train.report({}, checkpoint=checkpoint)  # every rank reports


def _result(ray: Any, ref: Any) -> dict[str, Any]:
    """The cell's result, or a ``failed`` result if its worker died on every attempt."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        return {"status": "failed", "metrics": {}, "components": {}, "stages": {},
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"[:500],
                "traceback": str(exc), "wall_seconds": None}
