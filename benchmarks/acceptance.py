"""Check the published default-grid leaderboards against the issues' acceptance targets.

Reads ``leaderboards/<track>/leaderboard.json`` (what ``make demo`` writes), the grid's
store (cell wall times), the stage cache (the diffusion stage's build time) and the
stores of the timed grid runs, and prints one line per target: PASS or FAIL, with the
measured numbers next to it. Nothing here is typed in: change the data and the verdicts
change. The timed runs are the default grids from an empty cache with two workers on
an otherwise idle machine; when the published grids themselves ran that way (one run per
track from an empty cache), their store is the timing store:

    benchbench grid configs/clip-default.yaml --jobs 2 --store runs/timing/clip.sqlite --cache runs/timing/cache
    benchbench grid configs/reid-default.yaml --jobs 2 --store runs/timing/reid.sqlite --cache runs/timing/cache

    .venv/bin/python benchmarks/acceptance.py [--boards leaderboards] [--store runs/default/results.sqlite]
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from contextlib import closing
from pathlib import Path

from benchbench.clip.synthetic import SHAPES

BACKDOORS = ("badnets", "blended")
CLIP_ATTACKS = ("targeted-poison", *BACKDOORS)
REID_ATTACKS = ("metric-fgsm", "metric-ifgsm", "metric-mifgsm", "sma", "odfa", "fna")

def dddefense_rows(b: "Board") -> tuple[str, list[str]]:
    """The full method's row and its ablations: the board labels a defense run with several
    param sets by the params that differ (``dddefense(balance=True, self_meta=True)``)."""
    rows = sorted({d for d, _, _ in b.table if d.startswith("dddefense")})
    full = next(d for d in rows if "balance=False" not in d and "self_meta=False" not in d)
    return full, [d for d in rows if d != full]


class Board:
    """(defense, attack, evaluator/metric) -> (mean, std), and -> {seed: value}, of one track's
    leaderboard.json."""

    def __init__(self, path: Path):
        entries = json.loads(path.read_text())["entries"]
        self.table = {(e["defense"], e["attack"], f"{e['evaluator']}/{e['metric']}"): (e["value"], e["std"])
                      for e in entries}
        self.seed_values = {(e["defense"], e["attack"], f"{e['evaluator']}/{e['metric']}"):
                            dict(zip(e["seeds"], e["seed_values"])) for e in entries}

    def mean(self, defense: str, attack: str, metric: str) -> float:
        return self.table[(defense, attack, metric)][0]

    def std(self, defense: str, attack: str, metric: str) -> float:
        return self.table[(defense, attack, metric)][1]

    def has(self, defense: str, attack: str, metric: str) -> bool:
        return (defense, attack, metric) in self.table


def check(ok: bool, what: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {what}")


def grid_minutes(store: Path, track: str, defenses: tuple[str, ...] | None = None) -> float:
    """Sum of the cells' wall times (what one worker spent), in minutes."""
    with closing(sqlite3.connect(store)) as db:
        rows = db.execute("select defense, wall_seconds from cells where track = ? and status = 'ok'",
                          (track,)).fetchall()
    return sum(s for d, s in rows if defenses is None or d in defenses) / 60


def timed_run(store: Path, track: str, what: str) -> None:
    """Wall time of one track's grid in a timing store, from its run's start to its last
    cell; only a grid that ran in one go (one run) is timed."""
    if not store.is_file():
        print(f"info  {what}: no timed run in {store} (see this script's docstring)")
        return
    with closing(sqlite3.connect(store)) as db:
        runs = db.execute("select distinct r.started_at, r.argv from runs r join cells c on c.run_id = r.run_id"
                          " where c.track = ?", (track,)).fetchall()
        end, n = db.execute("select max(finished_at), count(*) from cells where status = 'ok' and track = ?",
                            (track,)).fetchone()
    if len(runs) != 1:
        print(f"info  {what}: {len(runs)} runs in {store}, so no single timed run")
        return
    (start, argv), = runs
    args = json.loads(argv or "[]")
    jobs = args[args.index("--jobs") + 1] if "--jobs" in args else "1"
    minutes = (end - start) / 60
    check(minutes < 30, f"{what}: {n} cells in {minutes:.1f} min wall with {jobs} worker(s) (< 30)")


def clip_checks(b: Board, store: Path | None) -> None:
    print("## CLIP poisoning track")
    zs, lp, asr, clean = "zero-shot/top1", "linear-probe/top1", "asr/asr", "asr/asr_clean"
    chance = 1 / len(SHAPES)
    check(b.mean("none", "none", zs) >= 3 * chance,
          f"no defense, clean zero-shot top-1 {b.mean('none', 'none', zs):.3f} >= 3x chance ({3 * chance:.3f})")
    for attack, target in (("badnets", 0.8), ("blended", 0.8), ("targeted-poison", 0.6)):
        check(b.mean("none", attack, asr) >= target, f"no defense, {attack} ASR {b.mean('none', attack, asr):.3f} "
                                                     f"± {b.std('none', attack, asr):.3f} >= {target}")
        check(b.mean("none", attack, clean) <= 0.1,
              f"no defense, {attack} probe on the clean model (asr_clean) {b.mean('none', attack, clean):.3f} <= 0.1")
    plain = "rematch/false_rematch_rate_plain"
    if b.has("roclip", "none", plain):
        retrieval = 1 - b.mean("roclip", "none", plain)
        check(retrieval >= 0.6, f"plain model's global nearest caption names the right shapes for {retrieval:.3f} "
                                f"of clean images (>= 0.6; docs/worlds.md C5, beside roclip's clean cells)")
    # the default grid's defenses (other configs add rows without a clean column, e.g. CleanCLIP's ablations)
    defenses = sorted({d for d, a, m in b.table if d != "none" and a == "none" and m == zs})
    for d in defenses:  # a model at chance has no backdoor to find: its low ASR is no defense
        check(b.mean(d, "none", zs) >= 3 * chance, f"{d} still learns: clean zero-shot top-1 "
                                                   f"{b.mean(d, 'none', zs):.3f} >= 3x chance ({3 * chance:.3f})")
    for attack in BACKDOORS:
        for d in defenses:
            check(b.mean(d, attack, asr) < b.mean("none", attack, asr),
                  f"{d} lowers {attack} ASR: {b.mean(d, attack, asr):.3f} < {b.mean('none', attack, asr):.3f}")
    for attack in CLIP_ATTACKS:
        best = min(defenses + ["none"], key=lambda d: b.mean(d, attack, asr))
        otc = b.mean("otcclip", attack, asr)
        check(otc <= b.mean(best, attack, asr) + b.std(best, attack, asr),
              f"otcclip {attack} ASR {otc:.3f} lowest or within one std of the lowest ({best} "
              f"{b.mean(best, attack, asr):.3f} ± {b.std(best, attack, asr):.3f})")
    for attack in ("none", *CLIP_ATTACKS):
        for metric in (zs, lp):
            otc, ro, ro_std = b.mean("otcclip", attack, metric), b.mean("roclip", attack, metric), \
                b.std("roclip", attack, metric)
            check(otc >= ro - ro_std, f"otcclip {metric} under {attack} {otc:.3f} not below roclip's "
                                      f"{ro:.3f} by more than its std {ro_std:.3f}")
    for attack in CLIP_ATTACKS:
        ot, glob = "rematch/false_rematch_rate", "rematch/false_rematch_rate_global"
        if b.has("otcclip", attack, ot) and b.has("otcclip", attack, glob):
            # paired per seed (same embeddings), so a difference inside the seed spread shows
            by_ot, by_glob = b.seed_values[("otcclip", attack, ot)], b.seed_values[("otcclip", attack, glob)]
            diffs = [by_ot[s] - by_glob[s] for s in sorted(by_ot)]
            check(all(d < 0 for d in diffs),
                  f"{attack}: OT re-matching wrongly re-pairs fewer clean pairs than the global rule on the same "
                  f"embeddings, on every seed: {b.mean('otcclip', attack, ot):.3f} vs "
                  f"{b.mean('otcclip', attack, glob):.3f}, per-seed differences "
                  + " ".join(f"{d:+.3f}" for d in diffs))
    if store:
        print(f"info  CLIP grids in the store: {grid_minutes(store, 'clip'):.1f} min of cell time")


def clip_extra_checks(b: Board) -> None:
    """Issue 15's CLIP targets: the new backdoors on a plain model, the adaptive attacks
    beside targeted-poison against the re-matching defenses."""
    print("## CLIP: more attacks (configs/clip-backdoors.yaml, configs/clip-adaptive.yaml)")
    asr, clean = "asr/asr", "asr/asr_clean"
    for attack in ("sig", "wanet", "label-consistent"):
        if b.has("none", attack, asr):
            check(b.mean("none", attack, asr) >= 0.5,
                  f"no defense, {attack} ASR {b.mean('none', attack, asr):.3f} ± {b.std('none', attack, asr):.3f} "
                  f">= 0.5 at 1% poison (asr_clean {b.mean('none', attack, clean):.3f})")
    for d in ("none", "roclip", "otcclip"):
        cols = [a for a in ("targeted-poison", "paraphrase-flood", "fine-grained-mimicry") if b.has(d, a, asr)]
        if len(cols) > 1:
            print(f"info  {d} ASR: " + " ".join(f"{a}={b.mean(d, a, asr):.3f}±{b.std(d, a, asr):.3f}" for a in cols))


def reid_checks(b: Board, store: Path | None, pool: tuple[str, ...]) -> None:
    print("## ReID adversarial track")
    mAP, r1, var = "reid-rank/mAP", "reid-rank/rank1", "reid-bias/ap_per_id_var"
    check(b.mean("none", "none", r1) >= 0.7, f"no defense, clean Rank-1 {b.mean('none', 'none', r1):.3f} >= 0.7")
    clean = b.mean("none", "none", mAP)
    for attack in REID_ATTACKS:
        check(b.mean("none", attack, mAP) <= clean / 2,
              f"{attack} cuts no-defense mAP by half: {b.mean('none', attack, mAP):.3f} <= {clean:.3f} / 2")
    for attack in ("sma", "metric-ifgsm"):
        at, none = b.mean("metric-at", attack, mAP), b.mean("none", attack, mAP)
        check(at >= 2 * none, f"metric-at keeps twice the attacked mAP under {attack}: {at:.3f} >= 2 x {none:.3f}")
    print(f"info  metric-at clean mAP {b.mean('metric-at', 'none', mAP):.3f} vs none {clean:.3f} "
          f"(cost {clean - b.mean('metric-at', 'none', mAP):+.3f})")
    if store and grid_minutes(store, "reid"):
        print(f"info  none + metric-at cells in the store: {grid_minutes(store, 'reid', ('none', 'metric-at')):.1f} "
              f"min of cell time; whole ReID default grid: {grid_minutes(store, 'reid'):.1f} min")
    print("## dddefense")
    DD, ablations = dddefense_rows(b)
    held_out = [a for a in REID_ATTACKS if a not in pool]
    for attack in held_out:
        dd, at = b.mean(DD, attack, mAP), b.mean("metric-at", attack, mAP)
        check(dd > at, f"dddefense mAP under held-out {attack} {dd:.3f} > metric-at {at:.3f}")
    for attack in ("none", *REID_ATTACKS):
        dd, at = b.mean(DD, attack, var), b.mean("metric-at", attack, var)
        check(dd < at, f"per-identity AP variance under {attack}: dddefense {dd:.4f} < metric-at {at:.4f}")
    for d in (DD, *ablations):
        if b.has(d, "none", mAP):
            cols = " ".join(f"{a}={b.mean(d, a, mAP):.3f}" for a in ("none", *REID_ATTACKS))
            print(f"info  {d} mAP: {cols}")


def reid_extra_checks(b: Board, transfer: Path) -> None:
    """Issue 15's ReID targets: MID's row, and the cross-data-set board (its own protocol)."""
    print("## ReID: MID and transfer (configs/reid-mid.yaml, configs/reid-transfer.yaml)")
    mAP = "reid-rank/mAP"
    if b.has("mid", "none", mAP):
        seeds = len(b.seed_values[("mid", "none", mAP)])
        check(seeds >= 3, f"mid has a {seeds}-seed row on the ReID board")
        for d in ("none", "metric-at", "mid"):
            print(f"info  {d} mAP: " + " ".join(f"{a}={b.mean(d, a, mAP):.3f}" for a in ("none", *REID_ATTACKS)))
    if not transfer.is_file():
        print(f"info  no transfer board at {transfer}")
        return
    t = Board(transfer)
    check(bool(t.table), f"transfer board {transfer} holds measured entries")
    for d in sorted({d for d, _, _ in t.table}):
        print(f"info  transfer, {d} mAP: " + " ".join(f"{a}={t.mean(d, a, mAP):.3f}" for a in ("none", *REID_ATTACKS)
                                                      if t.has(d, a, mAP)))


def diffusion_stage(cache: Path) -> None:
    for record in sorted(cache.glob("dddefense-generator/*/stage.json")):
        data = json.loads(record.read_text())
        check(data["build_seconds"] <= 600, f"diffusion generator stage built in {data['build_seconds']:.0f} s "
                                            f"(<= 600 s), cached in {record.parent}")
    for record in sorted(cache.glob("dddefense-gate/*/gate.json")):
        gate = json.loads(record.read_text())
        lost = sum(1 for v in gate["per_identity"].values() if v["kept"] == 0)
        print(f"info  identity gate ({record.parent.name}): {gate['passed_gate']} of {gate['generated']} generated "
              f"images pass ({gate['gate_acceptance_rate']:.1%}), {gate['kept']} kept after the cap; "
              f"{lost} of {len(gate['per_identity'])} identities keep none; the reference model ranks "
              f"{gate.get('real_pass_rate', float('nan')):.1%} of real training images right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=Path, default=Path("leaderboards"))
    parser.add_argument("--store", type=Path, default=Path("runs/default/results.sqlite"))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--timing", type=Path, default=Path("runs/timing"), help="stores of the timed runs")
    parser.add_argument("--attack-pool", nargs="+", default=["fna", "sma"], help="dddefense's attack_pool")
    args = parser.parse_args()
    store = args.store if args.store.is_file() else None
    sections = [lambda: clip_checks(Board(args.boards / "clip" / "leaderboard.json"), store),
                lambda: clip_extra_checks(Board(args.boards / "clip" / "leaderboard.json")),
                lambda: reid_checks(Board(args.boards / "reid" / "leaderboard.json"), store, tuple(args.attack_pool)),
                lambda: reid_extra_checks(Board(args.boards / "reid" / "leaderboard.json"),
                                          args.boards / "transfer" / "reid" / "leaderboard.json"),
                lambda: diffusion_stage(args.cache),
                lambda: timed_run(args.timing / "clip.sqlite", "clip", "CLIP default grid"),
                lambda: timed_run(args.timing / "reid.sqlite", "reid", "ReID default grid")]
    for section in sections:
        try:
            section()
        except KeyError as missing:  # a board of an unfinished grid
            print(f"STOP  the board has no entry {missing.args[0]}: run the whole default grid first")


if __name__ == "__main__":
    main()
