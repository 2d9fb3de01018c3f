import copy
import json
import math

import pandas as pd
import pytest

from benchbench.grid import run_grid
from benchbench.leaderboard import (Board, build_boards, declared_roles, markdown, metric_label, metric_tables,
                                    validate_board, write_boards)
from benchbench.store import Store
from benchbench.plots import ParetoPlot, pareto_plots, pareto_points, titles, write_plots
from benchbench.stats import bootstrap_ci


@pytest.fixture
def board_dir(toy_registry, toy_config, tmp_path):
    run_grid(toy_config, tmp_path / "r.sqlite", tmp_path / "cache", registry=toy_registry, progress=False)
    boards = build_boards(tmp_path / "r.sqlite")
    write_boards(boards, tmp_path / "lb")
    return tmp_path / "lb" / "toy", boards


@pytest.fixture
def published(board_dir):
    out, _ = board_dir
    return json.loads((out / "leaderboard.json").read_text())


def test_roles_missing_from_stored_results_come_from_the_installed_evaluator(toy_registry, toy_config, tmp_path):
    store = tmp_path / "r.sqlite"
    run_grid(toy_config, store, tmp_path / "cache", registry=toy_registry, progress=False)
    with Store(store) as s:  # results stored before the evaluator declared roles
        for key, comps in s.db.execute("select key, components_json from cells").fetchall():
            comps = json.loads(comps)
            for evaluator in comps["evaluators"]:
                evaluator["metric_roles"] = {}
            s.db.execute("update cells set components_json = ? where key = ?", (json.dumps(comps), key))
        s.db.commit()
    roles = lambda boards: set(boards[0].entries.role)  # noqa: E731
    assert roles(build_boards(store)) == {None}
    assert declared_roles(toy_registry)[("toy", "error", "1")] == {"abs_error": "robustness", "score": "utility"}
    assert roles(build_boards(store, declared_roles(toy_registry))) == {"robustness", "utility"}
    other_version = {("toy", "error", "2"): {"score": "utility"}}
    assert roles(build_boards(store, other_version)) == {None}


def test_long_table_aggregates_seeds_with_direction_role_and_interval(board_dir):
    _, (board,) = board_dir
    e = board.entries
    assert len(e) == 2 * 2 * 2  # defenses x attacks x metrics
    row = e[(e.defense == "none") & (e.attack == "none") & (e.metric == "score")].iloc[0]
    # score = -|mean| + 0.01 * seed, seeds 0 and 1 over the same clean data
    assert row.n_seeds == 2 and row.seeds == [0, 1] and row.direction == "higher"
    assert row.seed_values == pytest.approx([row.value - 0.005, row.value + 0.005])
    assert row["std"] == pytest.approx(math.sqrt(0.01 ** 2 / 2))
    assert (row.ci_low, row.ci_high) == pytest.approx(tuple(row.seed_values))  # 2 seeds: [min, max]
    assert (row.role, row.source) == ("utility", "measured")
    assert row.provenance["defense"].startswith("none@1 (local 0.3)")


def test_bootstrap_interval():
    assert bootstrap_ci([0.5]) is None
    low, high = bootstrap_ci([0.50, 0.52, 0.49, 0.51, 0.55])
    assert 0.49 <= low < 0.514 < high <= 0.55
    assert bootstrap_ci([0.50, 0.52, 0.49, 0.51, 0.55]) == (low, high)  # seeded: reproducible
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def _board(values: dict[tuple[str, str], list[float]], direction: str = "higher", role: str = "utility",
           preset: str = "default") -> Board:
    """A hand-made board: (defense, attack) -> per-seed values of one metric."""
    rows = []
    for (defense, attack), vals in values.items():
        ci = bootstrap_ci(vals)
        rows.append({"track": "t", "dataset": "d", "model": "m", "defense": defense, "attack": attack,
                     "evaluator": "ev", "metric": "acc", "value": sum(vals) / len(vals),
                     "std": pd.Series(vals).std() if len(vals) > 1 else 0.0,
                     "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
                     "n_seeds": len(vals), "direction": direction, "role": role, "source": "measured"})
    return Board("t", "task@1#00", pd.DataFrame(rows), preset=preset)


def _bold(md: str, defense: str) -> list[bool]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {defense} |"))
    return [c.strip().startswith("**") for c in line.split("|")[2:-1]]


def test_best_is_marked_only_outside_the_runner_ups_interval():
    board = _board({("none", "none"): [0.80, 0.82, 0.81], ("a", "none"): [0.90, 0.91, 0.92],  # clear lead
                    ("none", "x"): [0.50, 0.60, 0.70], ("a", "x"): [0.62, 0.66, 0.64]})  # inside [0.5, 0.7]
    md = markdown(board)
    assert _bold(md, "a") == [True, False] and _bold(md, "none") == [False, False]
    lower = markdown(_board({("none", "none"): [0.80, 0.82, 0.81], ("a", "none"): [0.90, 0.91, 0.92]},
                            direction="lower"))
    assert _bold(lower, "none") == [True]
    one_seed = markdown(_board({("none", "none"): [0.8], ("a", "none"): [0.9]}))
    assert "**" not in one_seed  # no interval, no claim


def test_no_best_mark_on_diagnostic_metrics_or_smoke_boards():
    lead = {("none", "none"): [0.80, 0.82, 0.81], ("a", "none"): [0.90, 0.91, 0.92]}
    assert _bold(markdown(_board(lead)), "a") == [True]
    diagnostic = markdown(_board(lead, role="diagnostic"))
    assert "**" not in diagnostic and "## ev / acc (diagnostic, not ranked)" in diagnostic
    assert "no entry is marked best" in diagnostic
    smoke = markdown(_board(lead, preset="smoke"))
    assert "**" not in smoke and smoke.count("Preset smoke") == 1
    assert "Preset default;" in markdown(_board(lead))


def test_the_preset_is_recorded_checked_and_one_per_board(board_dir, published, toy_registry, toy_config, tmp_path):
    _, (board,) = board_dir
    assert board.preset == published["preset"] == "default"
    assert Board.from_json(published).preset == "default"
    smoke = copy.deepcopy(published)
    smoke["preset"] = "smoke"
    assert validate_board(smoke) == []
    assert validate_board(smoke, against=published) == ["preset 'smoke' differs from the reference's 'default'"]
    assert any("'preset' is a required property" in p
               for p in validate_board({k: v for k, v in published.items() if k != "preset"}))
    store = tmp_path / "mixed.sqlite"
    for preset in ("default", "smoke"):  # the toy task's smoke preset is another protocol (n = 20)
        run_grid(toy_config, store, tmp_path / "cache", preset=preset, registry=toy_registry, progress=False)
    boards = build_boards(store)
    assert sorted(b.preset for b in boards) == ["default", "smoke"]
    with pytest.raises(Exception, match="mixes protocols or presets for track 'toy'"):
        write_boards(boards, tmp_path / "lb")


def test_metric_tables_put_the_clean_references_first(board_dir):
    _, (board,) = board_dir
    t = metric_tables(board)[0]
    assert t.defenses == ["none", "clamp"] and t.attacks == ["none", "shift"]
    assert len(t.cells) == 4


def test_variants_of_one_component_get_rows_of_their_own(toy_registry, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [shift]\nevaluators: [error]\n"
                      "defenses: [none, clamp, {name: clamp, params: {bound: 3}}]\n")
    run_grid(config, tmp_path / "r.sqlite", tmp_path / "cache", registry=toy_registry, progress=False)
    (board,) = build_boards(tmp_path / "r.sqlite")
    assert sorted(set(board.entries.defense)) == ["clamp(bound=1.0)", "clamp(bound=3.0)", "none"]
    assert set(board.entries.n_seeds) == {1}


def test_written_json_validates_and_validation_catches_problems(board_dir, published):
    out, _ = board_dir
    data = published
    assert validate_board(data) == []
    assert (out / "leaderboard.csv").read_text().startswith("track,dataset,model,defense,attack")

    def problems(edit):
        bad = copy.deepcopy(data)
        edit(bad)
        return validate_board(bad)

    assert any("not a finite number" in p for p in problems(lambda d: d["entries"][0].update(value=float("nan"))))
    assert any("direction" in p for p in problems(lambda d: d["entries"][0].update(direction="sideways")))
    assert any("duplicate entry" in p for p in problems(lambda d: d["entries"].append(d["entries"][0])))
    assert any("differs from the board's" in p
               for p in problems(lambda d: d["entries"][1].update(protocol_version="toy-task@9#deadbeef")))
    assert problems(lambda d: d.pop("track")) == ["<root>: 'track' is a required property"]
    assert problems(lambda d: d.update(schema_version=2)) == [
        "schema_version 2: this benchbench reads version 6 boards; regenerate the board with "
        "`benchbench leaderboard` (or ask its author to)"]
    # numbers must agree with the per-seed values they summarise
    assert problems(lambda d: d["entries"][0].update(value=0.123)) == [
        f"entries/0/value: 0.123 is not the mean of seed_values ({sum(data['entries'][0]['seed_values']) / 2})"]
    assert any("seed_values disagree" in p for p in problems(lambda d: d["entries"][0]["seed_values"].append(1.0)))
    assert any("bad 95% interval" in p for p in problems(lambda d: d["entries"][0].update(ci_low=9.0)))

    def flip_all(d):
        for e in d["entries"]:
            if e["metric"] == "score" and e["defense"] == "clamp":
                e["direction"] = "lower"
    assert any("error/score: entries disagree on the direction" in p for p in problems(flip_all))


def test_validation_against_a_reference_board(published):
    assert validate_board(published, against=published) == []

    def against(edit):
        sub = copy.deepcopy(published)
        edit(sub)
        return validate_board(sub, against=published)

    def protocol(d):
        d["protocol"] = "toy-task@1#0badc0de"
        for e in d["entries"]:
            e["protocol_version"] = d["protocol"]
    assert against(protocol) == ["protocol toy-task@1#0badc0de differs from the reference's "
                                 f"{published['protocol']} (different task version or task params: "
                                 f"the numbers are not comparable)"]

    def dataset(d):
        for e in d["entries"]:
            e["dataset"] = "toy999"
    assert against(dataset) == ["data set 'toy999' is not the reference's (toy50)"]

    def direction(d):
        for e in d["entries"]:
            if e["metric"] == "abs_error":
                e["direction"] = "higher"
    assert against(direction) == ["error/abs_error: direction 'higher' differs from the reference's 'lower'"]
    broken = copy.deepcopy(published)
    broken["entries"][0]["std"] = -1
    assert validate_board(published, against=broken)[0].startswith("reference board: entries/0/std")


def test_pareto_plots_follow_metric_roles(board_dir, tmp_path):
    _, (board,) = board_dir
    (plot,) = pareto_plots(board)  # toy: score is utility, abs_error robustness
    assert (plot.utility, plot.robustness) == (("error", "score"), ("error", "abs_error"))
    points = pareto_points(board, plot).set_index("defense")
    e = board.entries
    clean = e[(e.attack == "none") & (e.metric == "score")].set_index("defense").value
    assert points.utility.to_dict() == pytest.approx(clean.to_dict())
    # clamp resists the shift attack (lower abs_error) at equal clean utility: it dominates none
    assert points.front.to_dict() == {"clamp": True, "none": False}
    assert plot.stem == "pareto-toy50-mean-error-score-vs-error-abs_error"
    # error bars: the clean entry's seed std; under attack, the std over seeds of the mean over attacks
    r = e[(e.metric == "abs_error") & (e.attack != "none")]
    for defense, point in points.iterrows():
        assert point.utility_std == pytest.approx(
            e[(e.attack == "none") & (e.metric == "score") & (e.defense == defense)]["std"].iloc[0])
        per_seed = pd.DataFrame([dict(zip(x.seeds, x.seed_values)) for _, x in r[r.defense == defense].iterrows()])
        assert point.robustness_std == pytest.approx(per_seed.mean().std())
    title, xlabel, ylabel = titles(board, plot)
    assert "(preset default)" in title and "mean ± std over 2 seeds" in title
    assert "mean over 1 attack: shift" in " ".join(ylabel.split()) and "on clean data (higher is better)" in xlabel
    paths = write_plots(board, tmp_path)
    assert sorted(p.name for p in paths) == [f"{plot.stem}.png", f"{plot.stem}.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    first = paths[0].read_bytes()
    write_plots(board, tmp_path)
    assert paths[0].read_bytes() == first  # reproducible SVG: diffable in git

    # no robustness-only metric (ReID: mAP under attack is the robustness): each utility
    # metric is plotted against itself under attack
    reid_like = Board(board.track, board.protocol, e.assign(role="utility"))
    assert [(p.utility, p.robustness) for p in pareto_plots(reid_like)] == [
        (("error", "abs_error"), ("error", "abs_error")), (("error", "score"), ("error", "score"))]
    assert pareto_plots(reid_like)[1].stem == "pareto-toy50-mean-error-score-clean-vs-attacked"  # not score-vs-score
    asr = ParetoPlot("d", "m", ("linear-probe", "top1"), ("asr", "asr"))
    assert asr.stem == "pareto-d-m-linear_probe-top1-vs-asr" and metric_label("asr", "asr") == "asr"
    assert pareto_plots(Board(board.track, board.protocol, e.assign(role=None))) == []
