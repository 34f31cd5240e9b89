"""The MinAtar suite's and λ probe's bookkeeping: which records fit a grid, which documents a
results folder may rewrite, and the λ table, on records written here."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "experiments"))

from emdqn.analysis.records import write_record  # noqa: E402
from minatar_lambda import lambda_table  # noqa: E402
from minatar_report import docs_of, suite_documents  # noqa: E402
from minatar_suite import settings_mismatch  # noqa: E402

OWN = ("trainer.threads=1 logger=csv hydra/launcher=joblib hydra.launcher.n_jobs=2 checkpoint.every_steps=0 "
       "checkpoint.save_replay=false")


def record(game="breakout", arm="emdqn", seed=0, lam=0.1, steps=300_000, extra="", final=5.0):
    memory = "none" if arm == "dqn" else "kdtree"
    return {"game": game, "arm": arm, "seed": seed, "memory": memory, "lambda": lam, "n_step": 1,
            "env_steps": steps, "final_return": final, "eval_return": final + 1, "episodes": 100,
            "wall_seconds": 600.0, "commit": "0" * 40, "machine": {"cpu": "Xeon", "cores": 2},
            "curve": {"bin_steps": 5000, "returns": [final / 2, final]},
            "memory_metrics": {} if memory == "none" else {"memory/loss_share": 0.5, "memory/revisit_share": 0.9,
                                                            "memory/h_minus_q": 0.1},
            "command": f"python train.py -m experiment=minatar env.game={game} seed={seed} agent.n_step=1 "
                       f"agent.total_steps={steps} memory={memory} {OWN} {extra}".strip()}


def test_a_results_folder_refuses_a_grid_of_another_budget_or_other_overrides(tmp_path):
    assert settings_mismatch(tmp_path, 100_000, ["agent.lr=1e-3"]) is None  # an empty folder takes any grid
    write_record(tmp_path / "runs" / "breakout__emdqn__s0.json", record(extra="agent.lr=1e-3"))
    assert settings_mismatch(tmp_path, 300_000, ["agent.lr=1e-3"]) is None
    budget = settings_mismatch(tmp_path, 100_000, ["agent.lr=1e-3"])
    assert budget.startswith("--steps 100000 is not allowed") and "300,000 env steps" in budget
    overrides = settings_mismatch(tmp_path, 300_000, [])
    assert overrides.startswith("the overrides (none) are not allowed") and "with agent.lr=1e-3" in overrides


def test_the_suite_refuses_a_mismatched_grid_in_one_line_before_any_run(tmp_path):
    write_record(tmp_path / "results" / "runs" / "breakout__dqn__s0.json", record(arm="dqn"))
    finished = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "experiments" / "minatar_suite.py"), "--steps", "1000",
                               "--out", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines()[-1].startswith("minatar_suite.py: error: --steps 1000 is not allowed")
    assert not (tmp_path / "runs").exists()


def test_the_chosen_lambda_arm_is_told_apart_kept_to_one_lambda_and_labelled_with_it(tmp_path):
    from minatar_report import arm_labels, summarize
    from minatar_suite import arm_of

    assert arm_of("kdtree", 1, 0.1) == "emdqn" and arm_of("kdtree", 1, 0.03) == "emdqn_chosen"
    assert arm_of("none", 1, 0.1) == "dqn" and arm_of("kdtree", 3, 0.1) == "emdqn_nstep"
    write_record(tmp_path / "runs" / "breakout__emdqn_chosen__s0.json", record(arm="emdqn_chosen", lam=0.03))
    assert settings_mismatch(tmp_path, 300_000, [], 0.03) is None
    other = settings_mismatch(tmp_path, 300_000, [], 0.3)
    assert other.startswith("--chosen-lambda 0.3 is not allowed") and "ran λ 0.03" in other
    runs = [record(arm=arm, seed=seed, lam=lam, final=final) for seed in (0, 1, 2)
            for arm, lam, final in (("dqn", 0.1, 4.0), ("emdqn", 0.1, 5.0), ("emdqn_chosen", 0.03, 6.0))]
    assert arm_labels(runs)["emdqn_chosen"] == "EMDQN λ=0.03 (chosen)"
    summary = summarize(runs, reps=100)
    assert summary["arms"] == ["dqn", "emdqn", "emdqn_chosen"]
    assert summary["memory_effects"]["breakout"]["emdqn_chosen"]["final_return"]["difference"][0] == 2.0


def test_the_suite_refuses_a_chosen_arm_without_its_lambda_or_with_the_default_one(tmp_path):
    suite = [sys.executable, str(ROOT / "benchmarks" / "experiments" / "minatar_suite.py"), "--out",
             str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]
    for extra, message in ((["--arms", "emdqn_chosen"], "--arms emdqn_chosen and --chosen-lambda go together"),
                           (["--chosen-lambda", "0.1", "--arms", "emdqn_chosen"], "--chosen-lambda 0.1 is not allowed"),
                           (["--chosen-lambda", "0.03", "--arms", "dqn"],
                            "--arms emdqn_chosen and --chosen-lambda go together")):
        finished = subprocess.run(suite + extra, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 2 and message in finished.stderr.strip().splitlines()[-1], finished.stderr
    assert not (tmp_path / "runs").exists()


def test_the_committed_suite_records_fit_the_suites_default_grid():
    # The records' commands are what settings_mismatch reads: the suite's default grid must
    # fit the project's own results folder.
    assert settings_mismatch(ROOT / "benchmarks" / "results" / "minatar", 300_000, []) is None


def test_only_the_published_results_folders_rewrite_the_documents(tmp_path):
    results = tmp_path / "repo" / "benchmarks" / "results"
    docs, readme = tmp_path / "repo" / "docs" / "results.md", tmp_path / "repo" / "README.md"
    assert docs_of(results / "minatar") == docs
    headline = suite_documents(results / "minatar_heldout")
    assert headline["docs"][0] == docs and headline["readme"][0] == readme
    assert headline["docs"][1] != suite_documents(results / "minatar")["docs"][1]  # a block of its own
    assert "readme" not in suite_documents(results / "minatar")  # the earlier suite is in the docs only
    assert docs_of(results / "minatar_lambda", "minatar_lambda") == docs
    for elsewhere in (tmp_path / "my_grid", results / "minatar_small", tmp_path / "minatar_heldout"):
        assert docs_of(elsewhere) is None and suite_documents(elsewhere) == {}


def test_the_report_sets_our_dqn_beside_the_published_one_at_the_same_steps_and_sums_launch_time():
    from minatar_report import docs_report, machine_time, summarize

    runs = [dict(record(arm=arm, seed=seed, steps=500_000, final=final), wall_seconds=wall,
                 command=f"python train.py -m seed={seed} memory=none,kdtree hydra.launcher.n_jobs={jobs}")
            for seed, final, wall, jobs in ((10, 4.0, 600.0, 2), (11, 6.0, 900.0, 1))  # one launch per seed
            for arm in ("dqn", "emdqn")]
    assert machine_time(runs) == {"runs": 4, "launches": 2, "hours": round(1500 / 3600, 2), "cpus": ["Xeon"],
                                  "runs_at_a_time": [1, 2]}
    published = {"source": {"paper": "Young & Tian 2019", "path": "img/curves.gif", "repository": "r",
                            "commit": "4241f24685"}, "value": "mean of 30 runs", "settings": "RMSProp",
                 "games": {"breakout": {"500000": {"return": 8.2}}, "asterix": {"500000": {"return": 1.0}}}}
    block = docs_report(summarize(runs, reps=100), published)
    assert "| breakout | 500,000 | 2 | 5.00 [" in block and block.split("| breakout | 500,000 | 2 | ")[1].split("\n")[0] \
        .endswith("| 8.2 |")
    assert "asterix | 500,000" not in block  # no run of ours there
    assert "0.4 hours of wall clock for 4 runs in 2 launches (1 or 2 runs at a time" in block and "on Xeon" in block
    other_budget = summarize([dict(run, env_steps=300_000) for run in runs], reps=100)
    assert "paper's DQN" not in docs_report(other_budget, published)  # the record reads no curve at 300k


def test_the_lambda_table_sets_the_probe_beside_the_suites_runs_of_the_same_game_seed_and_budget():
    probe = [record(lam=0.01, final=7.0), record(lam=0.03, final=6.0)]
    suite = [record(arm="dqn", lam=0.1, final=4.0), record(final=5.0),
             record(seed=1, final=9.0), record(steps=100_000, final=9.0), record(game="asterix", final=9.0)]
    rows = lambda_table(probe, suite).splitlines()[2:]
    assert [row.split(" | ")[3:5] for row in rows] == [["0 (DQN)", "4.00"], ["0.01", "7.00"], ["0.03", "6.00"],
                                                       ["0.1", "5.00"]]
    assert rows[0].endswith("| — | — |") and rows[1].endswith("| 0.50 | 0.90 |")


def test_the_lambda_selection_takes_the_highest_iqm_of_dqn_normalized_auc_over_complete_cells():
    from minatar_lambda import lambda_selection, selection_table

    games, seeds = ["asterix", "breakout"], [0, 1, 2]
    suite = [record(game=game, arm="dqn", seed=seed, final=4.0) for game in games for seed in seeds]
    suite += [record(game=game, seed=seed, lam=0.1, final=5.0) for game in games for seed in seeds]
    probe = [record(game=game, seed=seed, lam=0.03, final=6.0) for game in games for seed in seeds]
    probe += [record(game="asterix", seed=0, lam=0.3, final=9.0)]  # one cell only: not a candidate
    selection = lambda_selection(probe, suite, games, seeds, reps=200)
    assert set(selection["iqm_normalized_auc"]) == {"0", "0.03", "0.1"}
    # AUC is the curve's mean: final x 0.75; normalized by DQN's 3.0 -> 1.0, 1.25 and 1.5.
    assert [round(selection["iqm_normalized_auc"][name][0], 6) for name in ("0", "0.1", "0.03")] == [1.0, 1.25, 1.5]
    assert selection["chosen"] == "0.03"
    assert "| 0.03 | 1.500 [1.500, 1.500] **chosen** |" in selection_table(selection)
    assert lambda_selection(probe, suite[3:], games, seeds) == {}, "DQN misses a cell: no choice"
    from minatar_lambda import per_game_table

    rows = per_game_table(probe, suite, selection).splitlines()
    assert rows[2] == "| game | DQN | λ 0.03 | λ 0.1 |"
    assert rows[4].startswith("| asterix | 3.00 (4.00) |") and "4.50 (6.00)" in rows[4]


def test_records_given_by_a_relative_path_are_committed(tmp_path, monkeypatch):
    from emdqn.analysis.records import commit_files

    repo = tmp_path / "repo"
    (repo / "results" / "runs").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for key, value in (("user.email", "ci@example.invalid"), ("user.name", "ci")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    monkeypatch.chdir(repo)
    record_file = Path("results") / "runs" / "a.json"
    write_record(record_file, {"a": 1})
    commit_files([record_file], "a record")
    listed = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    assert listed == ["results/runs/a.json"]


def test_a_published_minatar_curve_is_read_back_from_its_pixels_at_the_asked_frames():
    import numpy as np
    from published_curves import MINATAR_FIGURE_SIZE, MINATAR_PANELS, dqn_pixels, read_minatar_curve

    width, height = MINATAR_FIGURE_SIZE
    picture = np.full((height, width, 3), 255, dtype=np.uint8)
    (left, right, top, bottom), ((row_a, value_a), (row_b, value_b)) = MINATAR_PANELS["breakout"]
    for x in range(left + 3, right - 2):  # a DQN-blue line at return 4 before 2M frames and 12 after
        value = 4.0 if (x - left) / (right - left) * 5 < 2 else 12.0
        row = int(round(row_a + (value - value_a) * (row_b - row_a) / (value_b - value_a)))
        picture[row - 1:row + 2, x] = (1, 115, 178)
    curve = dqn_pixels(picture)
    at_one_million, spread = read_minatar_curve(curve, "breakout", 1_000_000)
    assert abs(at_one_million - 4.0) < 0.1 and spread < 0.2
    assert abs(read_minatar_curve(curve, "breakout", 3_000_000)[0] - 12.0) < 0.1
    assert read_minatar_curve(curve, "asterix", 1_000_000) is None  # no curve on that panel


def test_the_sticky_table_sets_the_memorys_effect_with_and_without_sticky_actions_side_by_side():
    from minatar_sticky import NO_STICKY, settings_problem, sticky_rows, sticky_table

    # With sticky actions EMDQN trails DQN by 2; without, it leads by 1: the change is +3.
    sticky = [record(game="asterix", arm=arm, seed=seed, steps=500_000, final=final + seed)
              for seed in (10, 11, 12) for arm, final in (("dqn", 6.0), ("emdqn", 4.0))]
    plain = [record(game="asterix", arm=arm, seed=seed, steps=500_000, final=final + seed, extra=NO_STICKY)
             for seed in (10, 11, 12) for arm, final in (("dqn", 6.0), ("emdqn", 7.0))]
    plain.append(record(game="asterix", arm="dqn", seed=13, steps=500_000, extra=NO_STICKY))  # no twin anywhere
    assert settings_problem(sticky, plain) is None
    [row] = sticky_rows(sticky, plain, reps=200)
    assert row["seeds"] == [10, 11, 12]
    assert row["final_return"]["sticky"][0] == -2.0 and row["final_return"]["no_sticky"][0] == 1.0
    value, low, high = row["final_return"]["change"]
    assert value == 3.0 and low <= 3.0 <= high
    table = sticky_table([row])
    assert "| asterix | 10, 11, 12 | final return | -2.00 [" in table and "+3.00 [" in table
    assert "**rises**" in table
    # One seed a side gives a zero-width interval, not a verdict.
    [one_seed] = sticky_rows([run for run in sticky if run["seed"] == 10], plain, reps=200)
    assert "**" not in sticky_table([one_seed]) and "(1 seed)" in sticky_table([one_seed])
    assert settings_problem(sticky, [dict(run, env_steps=1_000_000) for run in plain]).startswith(
        "the runs with sticky actions have [500000]")
    assert "made without env.kwargs.sticky_action_prob=0" in settings_problem(sticky, sticky)
    assert "made with env.kwargs.sticky_action_prob=0" in settings_problem(plain, plain)
