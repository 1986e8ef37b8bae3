"""What decides the published quality figures: the choice on validation, the label subsets, the
label-efficiency schedule and the summaries' verdicts (benchmarks/quality.py, quality_report.py,
label_efficiency.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import label_efficiency  # noqa: E402
from common import read_records  # noqa: E402
import quality  # noqa: E402
from quality import FROZEN_SWEEP, PARTIAL_GRID, PARTIAL_SWEEP, SCRATCH_SWEEP, chosen, label_subset, refinement, suite_name  # noqa: E402
from quality_report import final_rows, summarise  # noqa: E402


def record(method: str, config: str, val: float, test: float, phase: str = "sweep", seed: int = 0, **extra) -> dict:
    return {"suite": "backbone", "dataset": "tweets", "method": method, "config": config, "seed": seed, "phase": phase,
            "key": f"backbone/tweets/{method}/{config}/seed{seed}", "best_val_accuracy": val, "test_accuracy": test,
            "settings": {}, "best_epoch": 3, "seconds_per_step": 0.01, **extra}


def test_every_method_gets_the_same_number_of_frozen_settings():
    sizes = {method: len(settings) for method, settings in FROZEN_SWEEP.items()}
    assert set(sizes) == {"plain", "baseline", "atom"} and len(set(sizes.values())) == 1 and sizes["atom"] >= 8


def test_every_method_tunes_its_learning_rate_from_scratch_with_the_same_budget():
    sizes = {method: len(settings) for method, settings in SCRATCH_SWEEP.items()}
    assert set(sizes) == {"plain", "baseline", "atom"} and len(set(sizes.values())) == 1
    for settings in SCRATCH_SWEEP.values():
        rates = {s.get("lr", 2e-3) for s in settings.values()}  # 2e-3: train's default
        assert len(rates) >= 3


def test_every_method_gets_the_same_number_of_partial_fine_tune_settings():
    sizes = {method: len(settings) for method, settings in PARTIAL_SWEEP.items()}
    assert set(sizes) == {"plain", "baseline", "atom"} and len(set(sizes.values())) == 1
    assert all(set(s) >= {"backbone_lr", "lr"} for settings in PARTIAL_SWEEP.values() for s in settings.values())
    assert [suite_name("backbone", k) for k in (0, 1, 2, -1)] == [
        "backbone-frozen", "backbone-top1", "backbone-top2", "backbone-finetuned"]


def partial_records(method: str, accuracy: dict[float, float]) -> list[dict]:
    return [record(method, f"blr{lr:g}", val, 0.5, settings={"backbone_lr": lr}) for lr, val in accuracy.items()]


def test_the_fifth_partial_setting_looks_past_an_edge_or_between_the_best_and_its_better_neighbour():
    assert PARTIAL_GRID == (5e-5, 2e-4, 8e-4, 3.2e-3)
    upper = partial_records("atom", {5e-5: 0.76, 2e-4: 0.78, 8e-4: 0.79, 3.2e-3: 0.794})
    assert refinement(upper, "tweets", "atom") == ("blr0.0128", {**PARTIAL_SWEEP["atom"]["blr0.0032"], "backbone_lr": 0.0128})
    lower = partial_records("plain", {5e-5: 0.80, 2e-4: 0.78, 8e-4: 0.79, 3.2e-3: 0.70})
    assert refinement(lower, "tweets", "plain")[0] == "blr1.25e-05"
    inside = partial_records("baseline", {5e-5: 0.77, 2e-4: 0.7906, 8e-4: 0.794, 3.2e-3: 0.7899})
    name, settings = refinement(inside, "tweets", "baseline")
    assert name == "blr0.0004" and settings["backbone_lr"] == 4e-4 and settings["lr"] == 3e-3  # toward 2e-4, the better side
    assert refinement(inside[:3], "tweets", "baseline") is None  # not before the four have run
    assert refinement(inside, "digits", "baseline") is None


def test_a_partial_sweep_gets_its_fifth_setting_and_its_seeds_only_once_placed_and_run():
    class Args:
        suite, train_layers, methods, seeds = "backbone", 1, "baseline", 3
        backbone, device, workers, limit, quick, runs = "minilm", "cpu", 1, None, False, "runs"

    four = partial_records("baseline", {5e-5: 0.77, 2e-4: 0.7906, 8e-4: 0.794, 3.2e-3: 0.7899})
    assert [j["config"] for j in quality.sweep_jobs(Args, "tweets", four[:2])] == list(PARTIAL_SWEEP["baseline"])
    assert quality.final_jobs(Args, four[:2], "tweets") == []
    assert [j["config"] for j in quality.sweep_jobs(Args, "tweets", four)][-1] == "blr0.0004"
    assert quality.final_jobs(Args, four, "tweets") == []  # the fifth has not run
    five = four + partial_records("baseline", {4e-4: 0.80})
    assert quality.final_jobs(Args, five, "tweets") == []  # the sixth is placed, not run
    sixth = [j for j in quality.sweep_jobs(Args, "tweets", five) if j["config"] == "blr0.0004-e4"]
    assert [j["settings"] for j in sixth] == [{**PARTIAL_SWEEP["baseline"]["blr0.0008"], "backbone_lr": 4e-4, "epochs": 4}]
    longer_worse = five + [record("baseline", "blr0.0004-e4", 0.79, 0.5, settings=sixth[0]["settings"])]
    finals = quality.final_jobs(Args, longer_worse, "tweets")
    assert [(j["config"], j["seed"], j["phase"]) for j in finals] == [("blr0.0004", 1, "final"), ("blr0.0004", 2, "final")]
    longer_better = five + [record("baseline", "blr0.0004-e4", 0.81, 0.5, settings=sixth[0]["settings"])]
    finals = quality.final_jobs(Args, longer_better, "tweets")
    assert [(j["config"], j["settings"]["epochs"]) for j in finals] == [("blr0.0004-e4", 4)] * 2


def test_run_jobs_queues_the_jobs_that_each_finished_one_allows_and_runs_each_once(tmp_path, monkeypatch):
    ran = []

    def fake_run(job):
        ran.append(job["config"])
        return {**job, "key": quality.job_key(job)}

    monkeypatch.setattr(quality, "run_job", fake_run)
    jobs = [{"suite": "s", "dataset": "d", "method": "m", "config": c, "seed": 0} for c in ("a", "b")]

    def more(records):  # "c" once "a" has finished; "a" and "b" asked for again are not run (again)
        return jobs + [{**jobs[0], "config": "c"}] if records else jobs

    out = tmp_path / "records.jsonl"
    records = quality.run_jobs(jobs, out, workers=1, done={"s/d/m/b/seed0"}, more=more)
    assert ran == ["a", "c"] and [r["config"] for r in records] == ["a", "c"]  # b was done before
    assert [json.loads(line)["config"] for line in out.read_text().splitlines()] == ran


def test_a_setting_taken_out_of_the_sweep_does_not_compete():
    records = [record("atom", "gone", 0.99, 0.99), record("atom", "kept", 0.70, 0.70)]
    assert chosen(records, "tweets", "atom", {"atom": {"kept": {}}})["config"] == "kept"


def test_the_choice_reads_validation_only_and_ties_go_to_the_first_listed():
    sweep = {"atom": {"a": {}, "b": {}, "c": {}}}
    records = [record("atom", "a", 0.70, 0.99), record("atom", "b", 0.75, 0.50), record("atom", "c", 0.75, 0.60)]
    assert chosen(records, "tweets", "atom", sweep)["config"] == "b"  # c ties on validation; its better test is ignored
    assert chosen(records, "tweets", "plain", {"plain": {}}) is None


def test_the_choice_reads_sweep_runs_of_its_dataset_only_and_breaks_ties_by_the_sweep_order():
    sweep = {"atom": {"b": {}, "c": {}, "a": {}}}
    records = [record("atom", "c", 0.75, 0.6), record("atom", "a", 0.80, 0.5, phase="final", seed=1),
               record("atom", "a", 0.90, 0.5, phase="mode"), {**record("atom", "a", 0.95, 0.9), "dataset": "digits"},
               record("baseline", "a", 0.99, 0.9), record("atom", "b", 0.75, 0.4, settings={"lr": 1e-2})]
    best = chosen(records, "tweets", "atom", sweep)
    assert best is records[-1] and best["settings"] == {"lr": 1e-2}  # b is listed before c; the record itself
    assert chosen(records, "digits", "atom", sweep)["best_val_accuracy"] == 0.95
    # only final runs of a method (its sweep not written yet): nothing chosen
    assert chosen([record("atom", "a", 0.8, 0.5, phase="final", seed=1)], "tweets", "atom", sweep) is None


def test_the_chosen_configuration_rows_are_its_sweep_run_and_final_seeds():
    records = [record("atom", "x", 0.8, 0.70), record("atom", "y", 0.9, 0.99),
               record("atom", "x", 0.8, 0.71, phase="final", seed=1), record("baseline", "x", 0.7, 0.60),
               {**record("atom", "x", 0.8, 0.50), "dataset": "digits"}, record("atom", "x", 0.6, 0.2, phase="mode"),
               record("atom", "x", 0.8, 0.72, phase="final", seed=2)]
    rows = final_rows(records, "tweets", "atom", {"config": "x"})
    assert [(r["phase"], r["seed"], r["test_accuracy"]) for r in rows] == [
        ("sweep", 0, 0.70), ("final", 1, 0.71), ("final", 2, 0.72)]
    assert final_rows(records, "tweets", "atom", None) == []
    assert final_rows(records, "tweets", "plain", {"config": "x"}) == []


def test_label_subsets_are_fixed_nested_and_drawn_without_repeats():
    small, large = label_subset(1000, 100), label_subset(1000, 300)
    assert len(small) == len(set(small.tolist())) == 100 and set(small) <= set(large)
    np.testing.assert_array_equal(small, label_subset(1000, 100))
    assert small.min() >= 0 and large.max() < 1000 and not np.array_equal(small, np.arange(100))


def test_label_budget_schedule_gives_about_the_same_steps():
    for labels in (100, 300, 1000, 3000):
        plan = label_efficiency.schedule(labels)
        steps = plan["epochs"] * (labels // plan["batch_size"])
        assert 8 <= plan["batch_size"] <= 64 and 6 <= plan["epochs"] <= 100
        assert label_efficiency.STEPS * 0.9 <= steps <= label_efficiency.STEPS * 1.3, (labels, plan, steps)
        validated = [e for e in range(plan["epochs"]) if (e + 1) % plan["eval_every"] == 0 or e == plan["epochs"] - 1]
        assert 3 <= len(validated) <= label_efficiency.VALIDATIONS + 1, (labels, plan)
    assert label_efficiency.schedule(10_000)["epochs"] == 6  # large budgets: the floor, more steps


def test_best_of_a_budget_ignores_other_budgets_and_finals():
    records = [record("atom", "n100-lr0.003-lambda0.3", 0.60, 0.1), record("atom", "n100-lr0.001-lambda1", 0.65, 0.1),
               record("atom", "n300-lr0.003-lambda0.3", 0.90, 0.1), record("atom", "n100-lr0.5-lambda9", 0.95, 0.1),
               record("atom", "n100-lr0.003-lambda0.3", 0.99, 0.1, phase="final", seed=1)]
    # the off-grid record (a setting no longer in the grid) does not count either
    assert label_efficiency.best_of(records, "atom", 100)["config"] == "n100-lr0.001-lambda1"
    assert label_efficiency.best_of(records, "plain", 100) is None


def test_quality_summary_states_the_verdict_from_the_chosen_runs():
    records = []
    for method, tests in (("plain", (0.70, 0.71, 0.72)), ("baseline", (0.75, 0.76, 0.77)), ("atom", (0.80, 0.81, 0.82))):
        records.append(record(method, "x", 0.8, tests[0]))
        records.append(record(method, "y", 0.7, 0.99))  # not chosen: its test figure must not count
        records += [record(method, "x", 0.8, t, phase="final", seed=s) for s, t in ((1, tests[1]), (2, tests[2]))]
    text = summarise(records, "backbone-frozen", "test machine",
                     lambda d, m: chosen(records, d, m, {m: {"x": {}, "y": {}}}))
    assert "| tweets | atom | x | 3 | 0.800 ± 0.000 | 0.810 ± 0.010 |" in text
    assert "atom 0.8100 vs baseline 0.7600: delta +0.0500" in text and "**better**" in text


def test_with_one_seed_the_summary_gives_no_verdict():
    records = [record(method, "x", 0.8, test) for method, test in (("plain", 0.70), ("baseline", 0.75), ("atom", 0.90))]
    text = summarise(records, "backbone-top1", "test machine", lambda d, m: chosen(records, d, m, {m: {"x": {}}}))
    assert "| tweets | atom | x | 1 |" in text
    assert "one seed only" in text and "**better**" not in text


def test_label_efficiency_summary_table_and_plot(tmp_path):
    quality = tmp_path / "quality.jsonl"  # all labels: the chosen runs of the frozen suite
    full = []
    for method in ("plain", "baseline", "atom"):
        first, second = list(FROZEN_SWEEP[method])[:2]
        full += [record(method, first, 0.8, 0.70), record(method, second, 0.7, 0.99),
                 record(method, first, 0.8, 0.72, phase="final", seed=1), record(method, first, 0.8, 0.74, phase="final", seed=2)]
    full.append(record("frozen-backbone-logreg", "C10", 0.7, 0.65, phase="reference"))
    quality.write_text("\n".join(json.dumps(r) for r in full) + "\n")
    records = []
    for method, base in (("plain", 0.50), ("baseline", 0.52), ("atom", 0.60)):
        for seed, delta in enumerate((0.0, 0.01, 0.02)):
            records.append({**record(method, "n100-lr0.003", 0.5, base + delta, phase="final", seed=seed), "train_labels": 100})
    records.append({**record("logreg", "n100-C1", 0.5, 0.55, phase="final"), "train_labels": 100})
    text = label_efficiency.summarise(records, [100], 1000, quality, tmp_path / "curve")
    assert "| atom | 0.610 ± 0.010 | 0.720 ± 0.020 |" in text
    assert "| logreg | 0.550 | 0.650 |" in text
    assert "100 labels: atom 0.610, best other 0.530: delta +0.080 (std 0.010): **better**" in text
    assert "- atom: 100: lr0.003" in text
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert read_records(quality)[0]["method"] == "plain"


def test_label_efficiency_counts_only_the_seeds_of_the_setting_chosen_now(tmp_path):
    """A grid extended after a first run may choose another setting: the earlier choice's final
    seeds stay in the results file but must not enter the table."""
    quality = tmp_path / "quality.jsonl"
    quality.write_text("")
    records = [{**record("atom", "n100-lr0.003-lambda0.3", 0.60, 0.60), "train_labels": 100},
               {**record("atom", "n100-lr0.001-lambda0.03", 0.65, 0.70), "train_labels": 100}]
    records += [{**record("atom", "n100-lr0.003-lambda0.3", 0.60, 0.10, phase="final", seed=s), "train_labels": 100}
                for s in (0, 1, 2)]  # the stale choice: far off, it would show
    records += [{**record("atom", "n100-lr0.001-lambda0.03", 0.65, t, phase="final", seed=s), "train_labels": 100}
                for s, t in ((0, 0.70), (1, 0.71), (2, 0.72))]
    text = label_efficiency.summarise(records, [100], 1000, quality, tmp_path / "curve")
    assert "| atom | 0.710 ± 0.010 |" in text
    assert "- atom: 100: lr0.001-lambda0.03" in text


def test_make_bundle_tuned_trains_the_atom_setting_the_top_layer_sweep_chose_on_validation():
    from quality import BUDGET, sweep_of

    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("TUNED_TRAIN ?="))
    flags = line.split("?=", 1)[1].split()
    given = dict(zip(flags[::2], flags[1::2]))
    records = read_records(ROOT / "benchmarks" / "results" / "quality_backbone-top1.jsonl")
    best = chosen(records, "tweets", "atom", sweep_of("backbone", 1, records, "tweets"))
    assert float(given["--backbone-lr"]) == best["settings"]["backbone_lr"]
    assert float(given["--lr"]) == best["settings"]["lr"] and float(given["--lambda"]) == best["settings"]["potential_weight"]
    assert given["--train-layers"] == "1"
    epochs = best["settings"].get("epochs", BUDGET["tweets-top"]["epochs"])
    assert int(given["--epochs"]) == epochs and int(given["--batch-size"]) == BUDGET["tweets-top"]["batch_size"]


def frozen_records(method: str, accuracy: dict[str, float]) -> list[dict]:
    return [record(method, config, val, 0.5, settings=quality.sweep_of("backbone", 0)[method].get(config, {}))
            for config, val in accuracy.items()]


def test_the_frozen_sweep_steps_past_its_edge_then_trains_the_best_of_nine_longer():
    lambdas = {"default": 0.74, "lambda0.03": 0.758, "lambda0.1": 0.747, "lambda1": 0.72, "lr1e-2": 0.741,
               "warmup1": 0.741, "projection64": 0.73, "predicted-bonds": 0.741}
    eight = frozen_records("atom", lambdas)
    assert quality.frozen_extension(eight[:7], "tweets", "atom") == {}  # not before the eight have run
    ninth = quality.frozen_extension(eight, "tweets", "atom")
    assert ninth == {"lambda0.0075": {"lr": 3e-3, "potential_weight": 0.0075}}  # 0.03 is lambda's smallest: 4x below
    nine = eight + [record("atom", "lambda0.0075", 0.761, 0.5)]
    extension = quality.frozen_extension(nine, "tweets", "atom")
    assert extension["lambda0.0075-e6"] == {"lr": 3e-3, "potential_weight": 0.0075, "epochs": 6}
    # plain: the learning rate at the chosen weight decay, between the best and its better neighbour
    heads = {f"lr{lr:g}-wd{wd:g}": 0.70 for lr in (1e-3, 3e-3, 1e-2, 3e-2) for wd in (0.01, 0.1)}
    heads |= {"lr0.003-wd0.1": 0.75, "lr0.01-wd0.1": 0.74, "lr0.001-wd0.1": 0.72, "lr0.003-wd0.01": 0.749}
    ninth = quality.frozen_extension(frozen_records("plain", heads), "tweets", "plain")
    assert ninth == {"lr0.00548-wd0.1": {"lr": 0.00548, "weight_decay": 0.1}}


def test_a_frozen_choice_gets_its_seeds_only_once_its_seventeen_settings_have_run():
    class Args:
        suite, train_layers, methods, seeds = "backbone", 0, "atom", 3
        backbone, device, workers, limit, quick, runs = "minilm", "cpu", 1, None, False, "runs"

    eight = frozen_records("atom", {name: 0.70 + i / 100 for i, name in enumerate(FROZEN_SWEEP["atom"])})
    best = list(FROZEN_SWEEP["atom"])[-1]  # predicted-bonds: off the lambda line; its ninth steps that line (best: 1)
    assert quality.final_jobs(Args, eight, "tweets") == []
    configs = [j["config"] for j in quality.sweep_jobs(Args, "tweets", eight)]
    assert configs[:8] == list(FROZEN_SWEEP["atom"]) and configs[8] == f"{best}-lambda4" and len(configs) == 9
    nine = eight + [record("atom", configs[8], 0.5, 0.5)]
    configs = [j["config"] for j in quality.sweep_jobs(Args, "tweets", nine)]
    assert configs[9] == f"{best}-e6" and quality.final_jobs(Args, nine, "tweets") == []
    longer = quality.sweep_of("backbone", 0, nine, "tweets")["atom"][f"{best}-e6"]
    ten = nine + [record("atom", f"{best}-e6", 0.9, 0.5, settings=longer)]
    assert quality.final_jobs(Args, ten, "tweets") == []  # the second round first
    second = [j for j in quality.sweep_jobs(Args, "tweets", ten)][10:]
    assert len(second) == quality.SECOND_ROUND
    seventeen = ten + [record("atom", j["config"], 0.5, 0.5, settings=j["settings"]) for j in second]
    assert quality.final_jobs(Args, seventeen[:-1], "tweets") == []
    finals = quality.final_jobs(Args, seventeen, "tweets")
    assert [(j["config"], j["seed"], j["settings"]["epochs"]) for j in finals] == [(f"{best}-e6", 1, 6), (f"{best}-e6", 2, 6)]


def test_the_frozen_second_round_varies_the_potential_at_4x_the_chosen_lambda_and_the_heads_around_their_choice():
    from quality import SECOND_ROUND, frozen_second_round, sweep_of, sweep_size

    eight = frozen_records("atom", {name: 0.70 for name in FROZEN_SWEEP["atom"]} | {"lambda0.03": 0.758})
    nine = eight + [record("atom", "lambda0.0075", 0.761, 0.5, settings={"lr": 3e-3, "potential_weight": 0.0075})]
    assert frozen_second_round(nine, "tweets", "atom") == {}  # not before the ten have run
    ten = nine + [record("atom", "lambda0.0075-e6", 0.77, 0.5)]
    second = frozen_second_round(ten, "tweets", "atom")
    assert len(second) == SECOND_ROUND and sweep_size("backbone", 0) == len(FROZEN_SWEEP["atom"]) + 2 + SECOND_ROUND
    assert second["lambda0.03-e6"] == {"lr": 3e-3, "potential_weight": 0.03, "epochs": 6}
    assert second["lambda0.03-lj-e6"]["model"] == {"potential": "lj"}
    assert {json.dumps(s.get("model"), sort_keys=True) for s in second.values()} == {
        "null", '{"potential": "lj"}', '{"coulomb_strength": 1.0}', '{"nonbonded_scale": 1.25}',
        '{"nonbonded_scale": 5.0}', '{"valence": 0}', '{"radius_mode": "shell"}'}
    assert all(s["potential_weight"] == 0.03 and s["epochs"] == 6 for s in second.values())
    assert list(sweep_of("backbone", 0, ten, "tweets")["atom"])[-SECOND_ROUND:] == list(second)
    # a head: the choice longer, and its learning rate halved, doubled, and no weight decay, at both lengths
    heads = {f"lr{lr:g}-wd{wd:g}": 0.70 for lr in (1e-3, 3e-3, 1e-2, 3e-2) for wd in (0.01, 0.1)} | {"lr0.03-wd0.01": 0.73}
    ran = frozen_records("baseline", heads) + [record("baseline", "lr0.12-wd0.01", 0.72, 0.5),
                                              record("baseline", "lr0.03-wd0.01-e6", 0.74, 0.5)]
    second = frozen_second_round(ran, "tweets", "baseline")
    assert sorted((s["lr"], s["weight_decay"], s["epochs"]) for s in second.values()) == sorted(
        [(0.03, 0.01, 12)] + [(lr, wd, e) for lr, wd in ((0.015, 0.01), (0.06, 0.01), (0.03, 0.0)) for e in (6, 12)])


def test_the_scratch_sweep_steps_every_methods_learning_rate_past_its_choice_before_the_seeds():
    from quality import scratch_extension, sweep_size

    def ran(method: str, accuracy: dict[str, float]) -> list[dict]:
        return [dict(record(method, config, val, 0.5, settings=SCRATCH_SWEEP[method][config]), suite="scratch")
                for config, val in accuracy.items()]

    # atom at its largest rate (4e-3; the default config trains at train's 2e-3): 4x past it
    atom = ran("atom", {"default": 0.70, "lambda1": 0.70, "valence-all": 0.69, "radius-shell": 0.70, "lr1e-3": 0.68,
                        "lr4e-3": 0.72})
    assert scratch_extension(atom[:5], "tweets", "atom") == {}
    assert scratch_extension(atom, "tweets", "atom") == {"lr0.016": {"lr": 0.016}}
    # a variant off the rate line (radius-shell) keeps its setting and steps along the line
    shell = ran("atom", {"default": 0.70, "lambda1": 0.70, "valence-all": 0.69, "radius-shell": 0.75, "lr1e-3": 0.68,
                         "lr4e-3": 0.72})
    assert scratch_extension(shell, "tweets", "atom") == {
        "radius-shell-lr0.016": {"model": {"radius_mode": "shell"}, "lr": 0.016}}
    # inside the grid: halfway (geometric) to the better neighbour
    plain = ran("plain", {"lr1e-3": 0.69, "lr2e-3": 0.70, "lr4e-3": 0.72, "lr8e-3": 0.735, "lr1.6e-2": 0.731,
                          "nodropout": 0.71})
    assert scratch_extension(plain, "tweets", "plain") == {"lr0.0113": {"lr": 0.0113}}
    assert sweep_size("scratch", 0) == len(SCRATCH_SWEEP["atom"]) + 1

    class Args:
        suite, train_layers, methods, seeds = "scratch", 0, "plain", 3
        backbone, device, workers, limit, quick, runs = "minilm", "cpu", 1, None, False, "runs"

    assert quality.final_jobs(Args, plain, "tweets") == []  # the seventh first
    seven = plain + [dict(record("plain", "lr0.0113", 0.74, 0.5, settings={"lr": 0.0113}), suite="scratch")]
    assert [(j["config"], j["seed"]) for j in quality.final_jobs(Args, seven, "tweets")] == [("lr0.0113", 1), ("lr0.0113", 2)]


def test_an_edge_choice_after_the_seventh_gives_every_method_an_eighth_rate_before_its_seeds():
    from quality import scratch_eighth

    def ran(method: str, accuracy: dict[str, float], extra: dict[str, dict] | None = None) -> list[dict]:
        grid = {**SCRATCH_SWEEP[method], **(extra or {})}
        return [dict(record(method, config, val, 0.5, settings=grid[config]), suite="scratch", dataset="synthetic",
                     key=f"scratch/synthetic/{method}/{config}/seed0") for config, val in accuracy.items()]

    # plain and baseline: the 7th (6.4e-2, past their edge) lost, so their choice sits inside its rates
    inside = {"lr1e-3": 0.90, "lr2e-3": 0.91, "lr4e-3": 0.92, "lr8e-3": 0.95, "lr1.6e-2": 0.97, "nodropout": 0.9,
              "lr0.064": 0.93}
    others = [r for method in ("plain", "baseline") for r in ran(method, inside, {"lr0.064": {"lr": 0.064}})]
    # atom: its 7th (1.6e-2, 4x past 4e-3) won: its largest rate, an edge still
    atom_six = {"default": 0.90, "lambda1": 0.89, "valence-all": 0.88, "radius-shell": 0.90, "lr1e-3": 0.87,
                "lr4e-3": 0.93}
    atom = ran("atom", {**atom_six, "lr0.016": 0.96}, {"lr0.016": {"lr": 0.016}})
    assert scratch_eighth(others + atom[:-1], "synthetic") == {}  # not before every method's 7 have run
    eighth = scratch_eighth(others + atom, "synthetic")
    assert eighth == {"plain": {"lr0.0113": {"lr": 0.0113}}, "baseline": {"lr0.0113": {"lr": 0.0113}},
                      "atom": {"lr0.064": {"lr": 0.064}}}
    sweep = quality.sweep_of("scratch", 0, others + atom, "synthetic")
    assert {method: len(settings) for method, settings in sweep.items()} == {"plain": 8, "baseline": 8, "atom": 8}

    class Args:
        suite, train_layers, methods, seeds = "scratch", 0, "atom", 3
        backbone, device, workers, limit, quick, runs = "minilm", "cpu", 1, None, False, "runs"

    assert quality.final_jobs(Args, others + atom, "synthetic") == []  # the eighth first
    eight = others + atom + ran("atom", {"lr0.064": 0.95}, {"lr0.064": {"lr": 0.064}})
    assert [(j["config"], j["seed"]) for j in quality.final_jobs(Args, eight, "synthetic")] == [("lr0.016", 1), ("lr0.016", 2)]
    # where atom's 7th lost too, every choice is inside its rates: no eighth for anyone
    atom_lost = ran("atom", {**atom_six, "lr0.016": 0.92}, {"lr0.016": {"lr": 0.016}})
    assert scratch_eighth(others + atom_lost, "synthetic") == {}
