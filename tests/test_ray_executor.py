"""The Ray executor on a real local Ray cluster: same results as the local executor,
and neither a failing cell nor a dying worker stops the grid."""
import pytest

from benchbench.config import load_config
from benchbench.errors import ConfigError
from benchbench.executors.ray import RayExecutor, _worker_environment
from benchbench.grid import run_grid
from benchbench.runner import Environment
from benchbench.store import Store
from tests.conftest import TOY

ray = pytest.importorskip("ray")

GRID = """
track: toy
attacks: [none, shift]
defenses: [none, clamp, boom, {{name: crash, params: {{marker: "{marker}"}}}}]
evaluators: [error]
seeds: 2
"""


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # "local": a fresh private cluster, whatever else runs here
    yield
    ray.shutdown()


def _values(store_path, defenses=None):
    with Store(store_path) as store:
        t = store.long_table()
    if defenses:
        t = t[t.defense.isin(defenses)]
    return sorted(t[["cell_key", "metric", "value"]].itertuples(index=False, name=None))


def _statuses(store_path):
    with Store(store_path) as store:
        return sorted((c["defense"], c["status"], (c["error"] or "").split(":")[0]) for c in store.iter_cells())


@pytest.mark.slow
def test_failures_are_isolated_and_results_match_local(ray_cluster, toy_registry, tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text(GRID.format(marker=tmp_path / "crashed-once"))
    summary = run_grid(config, tmp_path / "ray.sqlite", tmp_path / "cache-ray", registry=toy_registry,
                       plugins=(TOY,), executor=RayExecutor(max_retries=0), progress=False)
    # 16 cells: boom raises in 4; the first crash cell kills its worker (no retries); all others run
    assert (summary.total, summary.ok, len(summary.failed)) == (16, 11, 5)
    statuses = _statuses(tmp_path / "ray.sqlite")
    assert statuses.count(("boom", "failed", "RuntimeError")) == 4
    assert statuses.count(("crash", "failed", "WorkerCrashedError")) == 1
    assert statuses.count(("crash", "ok", "")) == 3

    local_config = tmp_path / "local.yaml"
    local_config.write_text(GRID.replace(", {{name: crash, params: {{marker: \"{marker}\"}}}}", ""))
    run_grid(local_config, tmp_path / "local.sqlite", tmp_path / "cache-local", registry=toy_registry,
             progress=False)
    local = _values(tmp_path / "local.sqlite")
    assert len(local) == 8 * 2 and local == _values(tmp_path / "ray.sqlite", ["none", "clamp"])

    # resume: only the 5 failed cells run again; the crash cell now survives (marker exists)
    again = run_grid(config, tmp_path / "ray.sqlite", tmp_path / "cache-ray", registry=toy_registry,
                     plugins=(TOY,), executor=RayExecutor(max_retries=0), progress=False)
    assert (again.cached, again.ok, len(again.failed)) == (11, 1, 4)


@pytest.mark.slow
def test_a_dead_worker_is_retried(ray_cluster, toy_registry, tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text("track: toy\nattacks: [none, shift]\nevaluators: [error]\n"
                      f"defenses: [{{name: crash, params: {{marker: '{tmp_path / 'm'}'}}}}]\n")
    summary = run_grid(config, tmp_path / "r.sqlite", tmp_path / "cache", registry=toy_registry,
                       plugins=(TOY,), executor=RayExecutor(max_retries=1), progress=False)
    assert (summary.ok, summary.failed) == (2, [])
    assert (tmp_path / "m").exists()  # a worker did die


def test_workers_get_absolute_paths_and_their_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_plugin.py").write_text("")
    env = _worker_environment(Environment("runs/cache", ("my_plugin.py", "some_module"),
                                          resources={"num_cpus": 1, "num_gpus": 1}))
    assert env.cache_root == str(tmp_path / "runs" / "cache")
    assert env.plugins == (str(tmp_path / "my_plugin.py"), "some_module")
    assert (env.device, env.progress) == ("cuda", False)
    assert _worker_environment(Environment("c")).device == "cpu"


def test_resources_are_validated_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [none]\ndefenses: [none]\nevaluators: [error]\n"
                      "resources: {num_gpus: 0.5}\n")
    assert load_config(config).resources.model_dump() == {"num_cpus": 1, "num_gpus": 0.5}
    config.write_text(config.read_text().replace("num_gpus: 0.5", "gpus: 1"))
    with pytest.raises(ConfigError, match="resources.gpus: Extra inputs"):
        load_config(config)
