"""compare --tasks: per-task tables and rliable aggregates, on synthetic run folders with known answers."""

import csv

import pytest
from omegaconf import OmegaConf

from emdqn.compare import compare, main as compare_main


def write_run(folder, game, lam, seed, level):
    """A run folder as train.py writes it: config.yaml and metrics.csv with 20 finished games."""
    folder.mkdir(parents=True)
    OmegaConf.save({"seed": seed, "env": {"game": game, "id": f"MinAtar/{game}-v0"}, "memory": {"lambda": lam}},
                   folder / "config.yaml")
    with (folder / "metrics.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "charts/episodic_return"])
        for game_index in range(20):
            writer.writerow([(game_index + 1) * 100, level + 0.01 * game_index])


@pytest.fixture
def suite(tmp_path):
    # lambda 0.1 beats lambda 0 on every run of both games; lambda 1 ties lambda 0 exactly.
    for game, base in (("breakout", 10.0), ("freeway", 20.0)):
        for seed in range(4):
            write_run(tmp_path / f"{game}_l0_s{seed}", game, 0.0, seed, base + seed)
            write_run(tmp_path / f"{game}_l01_s{seed}", game, 0.1, seed, base + 100 + seed)
            write_run(tmp_path / f"{game}_l1_s{seed}", game, 1.0, seed, base + seed)
    return tmp_path


def test_aggregates_across_tasks_have_the_known_answer(suite, tmp_path):
    result = compare([suite], tmp_path / "out", tasks="env.game", baseline="lambda=0.0")
    assert result["keys"] == ["memory.lambda"]  # env.id follows the task: not a condition
    aggregate = result["aggregate"]
    assert aggregate["tasks"] == ["breakout", "freeway"] and aggregate["runs_per_task"] == 4
    assert aggregate["groups"]["lambda=0.1"]["probability_of_improvement"] == (1.0, 1.0, 1.0)
    assert aggregate["groups"]["lambda=1.0"]["probability_of_improvement"][0] == pytest.approx(0.5)
    # AUC normalized by the baseline's mean AUC per task: identical runs give exactly 1.
    assert aggregate["groups"]["lambda=1.0"]["iqm_normalized_auc"][0] == pytest.approx(1.0)
    assert aggregate["groups"]["lambda=0.1"]["iqm_normalized_auc"][0] > 4
    for game in ("breakout", "freeway"):
        assert (tmp_path / "out" / f"comparison_{game}.png").stat().st_size > 0
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "## breakout" in table and "P(group > baseline)" in table


def test_cli_takes_comma_separated_keys_and_rejects_an_unknown_baseline(suite, tmp_path, capsys):
    compare_main([str(suite), "--by", "memory.lambda", "--tasks", "env.game", "--out", str(tmp_path / "cli")])
    assert "on 2 tasks" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--baseline"):
        compare([suite], tmp_path / "bad", tasks="env.game", baseline="lambda=7")


def test_atari_runs_get_a_human_normalized_column(tmp_path):
    for seed, level in ((0, -20.7), (1, 14.6)):  # Pong's random and human scores: HNS 0 and 1, mean 0.5
        folder = tmp_path / f"pong_s{seed}"
        write_run(folder, "pong", 0.1, seed, level)
        config = OmegaConf.load(folder / "config.yaml")
        config.env.id = "PongNoFrameskip-v4"
        OmegaConf.save(config, folder / "config.yaml")
    result = compare([tmp_path], tmp_path / "out", window=1)
    (row,) = result["rows"]
    final = row["final"][0]
    assert row["hns"] == pytest.approx((final + 20.7) / 35.3)
    assert "human-normalized final" in (tmp_path / "out" / "comparison.md").read_text()


def test_atari_suites_get_human_normalized_aggregates(tmp_path):
    # Two games, HNS known by construction: lambda 0.1 scores human level (HNS 1) on every run,
    # lambda 0 scores random level (HNS 0).
    for game, env_id, (random, human) in (("pong", "PongNoFrameskip-v4", (-20.7, 14.6)),
                                          ("breakout", "BreakoutNoFrameskip-v4", (1.7, 30.5))):
        for seed in range(3):
            for lam, level in ((0.0, random), (0.1, human)):
                folder = tmp_path / f"{game}_{lam}_s{seed}"
                write_run(folder, game, lam, seed, level)
                config = OmegaConf.load(folder / "config.yaml")
                config.env.id = env_id
                OmegaConf.save(config, folder / "config.yaml")
    result = compare([tmp_path], tmp_path / "out", tasks="env.id", window=1)
    hns = result["aggregate"]["human_normalized"]
    # window=1: the final return is the last game's, level + 0.19.
    expected = {"breakout": 0.19 / 28.8, "pong": 0.19 / 35.3}
    assert hns["lambda=0.1"]["median"][0] == pytest.approx(1 + (expected["breakout"] + expected["pong"]) / 2)
    assert hns["lambda=0.0"]["mean"][0] == pytest.approx((expected["breakout"] + expected["pong"]) / 2)
    assert hns["lambda=0.1"]["optimality_gap"][0] == pytest.approx(0.0)
    assert hns["lambda=0.0"]["optimality_gap"][0] == pytest.approx(1 - (expected["breakout"] + expected["pong"]) / 2)
    assert "| lambda=0.1 |" in (tmp_path / "out" / "comparison.md").read_text().split("optimality gap |")[1]


def test_the_suite_report_calls_the_memory_ahead_behind_or_tied_only_with_three_seeds():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))
    from minatar_report import memory_effects

    def row(finals):
        return {"seeds": list(range(len(finals))), "per_seed": {"final_return": finals, "eval_return": finals}}

    games = {"ahead": {"dqn": row([1.0, 2.0, 3.0]), "emdqn": row([6.0, 7.0, 8.0])},
             "behind": {"dqn": row([6.0, 7.0, 8.0]), "emdqn": row([1.0, 2.0, 3.0])},
             "tie": {"dqn": row([1.0, 5.0, 3.0]), "emdqn": row([2.0, 4.0, 3.0])},
             "two seeds": {"dqn": row([1.0, 2.0]), "emdqn": row([6.0, 7.0])}}
    effects = memory_effects(games, reps=500)
    assert {game: effects[game]["emdqn"]["final_return"]["verdict"] for game in games} == {
        "ahead": "ahead", "behind": "behind", "tie": "tie", "two seeds": None}
    assert effects["ahead"]["emdqn"]["final_return"]["difference"][0] == 5.0
    assert "emdqn_nstep" not in effects["ahead"]  # no 3-step runs, no 3-step comparison


def write_curve(folder, lam, seed, returns):
    """A run whose games end every 100 env steps with the given returns."""
    folder.mkdir(parents=True)
    OmegaConf.save({"seed": seed, "memory": {"lambda": lam}}, folder / "config.yaml")
    with (folder / "metrics.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "charts/episodic_return"])
        for index, value in enumerate(returns):
            writer.writerow([(index + 1) * 100, value])


def test_steps_to_x_measures_on_the_training_curve_and_says_how_x_was_chosen(tmp_path):
    # Both groups start at 0 and end at 10; lambda 0.1 gets there in 1,000 env steps, lambda 0 in 2,000.
    for seed in range(3):
        write_curve(tmp_path / "runs" / f"fast_s{seed}", 0.1, seed, [min(i + 1, 10) for i in range(40)])
        write_curve(tmp_path / "runs" / f"slow_s{seed}", 0.0, seed, [min(max((i + 1) / 2, 1), 10) for i in range(40)])
    result = compare([tmp_path / "runs"], tmp_path / "out", window=1, points=40)
    assert result["reach"]["threshold"] == pytest.approx(1 + 0.9 * (10 - 1))  # the curves' first value is 1
    steps = {row["group"]: row["reach"][0] for row in result["rows"]}
    assert steps == {"lambda=0.0": 1900.0, "lambda=0.1": 1000.0}
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| steps to 9.10 |" in table and "90% of the way from where the runs start (1.00" in table


def test_steps_to_x_is_left_out_when_it_cannot_tell_groups_apart(tmp_path):
    # No learning: every run plays at the level it started at.
    for seed in range(2):
        write_curve(tmp_path / "runs" / f"a_s{seed}", 0.1, seed, [5.0] * 20)
        write_curve(tmp_path / "runs" / f"b_s{seed}", 0.0, seed, [5.0] * 20)
    result = compare([tmp_path / "runs"], tmp_path / "out", window=1)
    assert result["reach"] is None and all(row["reach"] is None for row in result["rows"])
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "steps to" not in table.split("No 'steps to X' column")[0] and "No 'steps to X' column" in table
    compare_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out2")])
