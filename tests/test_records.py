"""Every figure the documents quote equals its result record under benchmarks/results/."""

import json
import re
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks" / "experiments"))


def quoted_block(document: str, name: str) -> str:
    text = (ROOT / "docs" / document).read_text()
    match = re.search(rf"<!-- record:{name} -->\n(.*?)<!-- end record -->", text, re.S)
    assert match, f"docs/{document} has no block for record {name}"
    return match.group(1)


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def test_pong_repeat_figures_equal_their_record():
    record = json.loads((RESULTS / "memory_repeats_pong.json").read_text())
    block = quoted_block("fidelity.md", "memory_repeats_pong")
    for frame, label in (("original", "`original` (cropped)"), ("resize", "`resize` (score bar kept)")):
        shares = record["results"][frame]
        assert (f"| {label} | {percent(shares['state_repeats'])} | {percent(shares['state_action_repeats'])} |"
                in block), f"docs/fidelity.md quotes another figure than the {frame} record"


def test_minatar_repeat_figures_equal_their_records():
    block = quoted_block("results.md", "memory_repeats_minatar")
    rows = [line for line in block.splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == 5
    for row in rows:
        game = row.split("|")[1].strip()
        shares = json.loads((RESULTS / f"memory_repeats_minatar_{game}.json").read_text())["results"]["minatar"]
        assert row == f"| {game} | {percent(shares['state_repeats'])} | {percent(shares['state_action_repeats'])} |"


def test_minatar_throughput_figures_equal_their_record():
    record = json.loads((RESULTS / "minatar_throughput.json").read_text())
    block = quoted_block("performance.md", "minatar_throughput")
    for loop, values in record["sps"].items():
        cells = " | ".join(f"{value:,.0f}" for value in (*values, record["medians"][loop]))
        assert f"| {loop} | {cells} |" in block, f"docs/performance.md quotes other {loop} figures than its record"
    for name, value in record["ratios"].items():
        assert f"{name}: **{value:.3f}**" in block, f"docs/performance.md quotes another {name} than its record"
    text = (ROOT / "docs" / "performance.md").read_text()
    assert record["commit"][:7] in text and record["before"]["commit"][:7] in text


def test_the_several_envs_check_in_the_docs_is_its_record():
    from num_envs_check import compare, markdown

    record = json.loads((RESULTS / "minatar_num_envs8" / "check.json").read_text())
    runs = sorted((RESULTS / "minatar_num_envs8" / "runs").glob("*.json"))
    assert len(runs) == 12 and all(row["seeds"] == [0, 1, 2] for row in record["rows"])
    # The check was computed from exactly these runs and the one-env records.
    assert compare(RESULTS / "minatar_num_envs8", RESULTS / "minatar") == record["rows"]
    assert quoted_block("results.md", "minatar_num_envs8").strip() == markdown(record["rows"]).strip()


@pytest.mark.parametrize("folder", ["minatar", "minatar_heldout"])
def test_each_minatar_suite_block_in_the_documents_is_the_report_of_its_run_records(folder):
    runs = sorted((RESULTS / folder / "runs").glob("*.json"))
    assert runs, f"the docs quote the {folder} tables: their run records must be committed"
    from minatar_report import PUBLISHED_DQN, PUBLISHED_SUITES, docs_report, markdown_table, readme_summary

    summary = json.loads((RESULTS / folder / "summary.json").read_text())
    records = [json.loads(path.read_text()) for path in runs]
    for record in records:  # the summary was built from exactly these records
        row = summary["games"][record["game"]][record["arm"]]
        index = row["seeds"].index(record["seed"])
        assert row["per_seed"]["final_return"][index] == record["final_return"]
        assert row["per_seed"]["eval_return"][index] == record["eval_return"]
    assert sum(len(row["seeds"]) for game in summary["games"].values() for row in game.values()) == len(records)
    assert summary["machine"]["runs"] == len(records)
    assert summary["machine"]["hours"] == round(sum({r["command"]: r["wall_seconds"] for r in records}.values())
                                                / 3600, 2)
    table = markdown_table(summary)
    assert (RESULTS / folder / "table.md").read_text() == table
    markers = PUBLISHED_SUITES[folder]
    docs = (ROOT / "docs" / "results.md").read_text()
    block = docs_report(summary, json.loads(PUBLISHED_DQN.read_text()))
    assert f"{markers['docs'][0]}\n{block}{markers['docs'][1]}" in docs, f"docs/results.md holds older {folder} tables"
    if markers["readme"]:
        readme = (ROOT / "README.md").read_text()
        assert f"{markers['readme'][0]}\n{readme_summary(summary)}{markers['readme'][1]}" in readme, \
            f"README.md holds older {folder} aggregates"
        machine = summary["machine"]
        assert f"({machine['runs']} runs, {machine['hours']:.1f} hours" in readme.replace("\n", " "), \
            f"README.md quotes another machine time for {folder}"


def test_the_sticky_action_table_in_the_docs_is_built_from_its_records():
    from minatar_report import load_results
    from minatar_sticky import FOLDER, MARKERS, settings_problem, sticky_rows, sticky_table

    sticky, plain = load_results(RESULTS / "minatar_heldout"), load_results(RESULTS / FOLDER)
    assert plain, "the docs quote the sticky-action table: its run records must be committed"
    assert settings_problem(sticky, plain) is None
    rows = sticky_rows(sticky, plain)
    assert {row["game"] for row in rows} == {run["game"] for run in plain}, "every game without sticky actions has a row"
    table = sticky_table(rows)
    assert (RESULTS / FOLDER / "sticky.md").read_text() == table
    docs = (ROOT / "docs" / "results.md").read_text()
    assert f"{MARKERS[0]}\n{table}{MARKERS[1]}" in docs, "docs/results.md holds an older sticky-action table"
    freeway = next(row for row in rows if row["game"] == "freeway")["final_return"]["no_sticky"][0]
    readme = (ROOT / "README.md").read_text().replace("\n", " ")
    assert f"still trails DQN by {-freeway:.0f} points on Freeway" in readme, "the README quotes another Freeway gap"


def test_the_lambda_table_in_the_docs_is_built_from_its_records():
    from minatar_lambda import MARKERS, lambda_table
    from minatar_report import load_results

    probe = load_results(RESULTS / "minatar_lambda")
    assert probe, "the docs quote a λ table: its run records must be committed"
    table = lambda_table(probe, load_results(RESULTS / "minatar"))
    assert (RESULTS / "minatar_lambda" / "table.md").read_text() == table
    docs = (ROOT / "docs" / "results.md").read_text()
    assert f"{MARKERS[0]}\n{table}{MARKERS[1]}" in docs, "docs/results.md holds an older λ table"


def test_cartpole_figures_equal_their_record():
    from learn_cartpole import markdown_table

    record = json.loads((RESULTS / "learn_cartpole.json").read_text())
    assert sorted(map(int, record["per_seed"])) == list(range(10)) and record["steps"] == 100_000
    assert markdown_table(record) in quoted_block("results.md", "learn_cartpole")


def test_frozenlake_figures_equal_their_records():
    from sample_efficiency import markdown_table

    for regime in ("atari", "fast"):
        record = json.loads((RESULTS / f"frozenlake_{regime}.json").read_text())
        assert record["regime"] == regime
        assert markdown_table(record) in quoted_block("results.md", f"frozenlake_{regime}")


def test_the_frozenlake_sweep_table_in_the_docs_is_the_compare_report_of_its_record():
    report = (RESULTS / "frozenlake_lambda_sweep.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert len(table) == 5 and "\n".join(table) in (ROOT / "docs" / "sweeps.md").read_text()
    record = json.loads((RESULTS / "frozenlake_lambda_sweep.json").read_text())
    for row in record["rows"]:
        final_mean = row["final"][0]
        assert f"| {row['group']} | {row['seeds']} | {final_mean:.2f} [" in report
        assert len(row["per_seed"]["final"]) == row["seeds"] == 3


def test_the_pong_before_after_figures_equal_their_record():
    record = json.loads((RESULTS / "pong_commits_throughput.json").read_text())
    text = " ".join((ROOT / "docs" / "performance.md").read_text().split())
    name = "pong ours, memory=kdtree"
    before, after = (", ".join(f"{value:.0f}" for value in record["sps"][side][name]) for side in ("before", "after"))
    medians = record["medians"]
    assert f"gave {before} SPS before (commit {record['commits']['before']}) and {after} after" in text
    assert (f"medians {medians['before'][name]:.0f} → {medians['after'][name]:.0f} "
            f"({record['ratios'][name]:.2f}×;") in text


def test_the_pong_tables_in_the_docs_are_built_from_the_pair_records():
    from atari_pair import MARKERS, README_MARKERS, load_records, markdown, published_curves, readme_line

    records = load_records(RESULTS / "pong", "pong", 0)
    assert set(records) == {"emdqn", "dqn"}, "the docs quote the Pong pair: both records must be committed"
    published = published_curves(RESULTS / "pong", "pong")
    assert published and published["source"]["commit"], "the Dopamine comparison needs its record and source"
    table = markdown(records, published)
    assert (RESULTS / "pong" / "table.md").read_text() == table
    docs = (ROOT / "docs" / "results.md").read_text()
    assert f"{MARKERS[0]}\n{table}{MARKERS[1]}" in docs, "docs/results.md holds an older Pong table"
    readme = (ROOT / "README.md").read_text()
    assert f"{README_MARKERS[0]}\n{readme_line(records)}{README_MARKERS[1]}" in readme, "README.md quotes older Pong scores"


def test_the_lambda_selection_in_the_docs_is_built_from_its_records():
    from minatar_lambda import SELECTION_MARKERS, lambda_selection, lambda_table, selection_report
    from minatar_report import load_results

    folder = RESULTS / "minatar_lambda_selection"
    selection = json.loads((folder / "selection.json").read_text())
    probe, suite = load_results(folder), load_results(RESULTS / "minatar")
    assert len(probe) == len(selection["games"]) * len(selection["seeds"]) * 3, "every candidate λ on every cell"
    # The choice is the one these records give, and what the documents quote is built from them.
    assert lambda_selection(probe, suite, selection["games"], selection["seeds"]) == selection
    report = selection_report(probe, suite, selection)
    assert (folder / "selection.md").read_text() == report
    assert (folder / "table.md").read_text() == lambda_table(probe, suite)
    docs = (ROOT / "docs" / "results.md").read_text()
    assert f"{SELECTION_MARKERS[0]}\n{report}{SELECTION_MARKERS[1]}" in docs, "docs/results.md holds an older choice"
    readme = (ROOT / "README.md").read_text().replace("\n", " ")
    chosen, default = (selection["iqm_normalized_auc"][name] for name in (selection["chosen"], "0.1"))
    assert (f"chosen for MinAtar on seeds 0–2, λ = {selection['chosen']} does better (IQM of normalized AUC "
            f"{chosen[0]:.2f} [{chosen[1]:.2f}, {chosen[2]:.2f}] against "
            f"{default[0]:.2f} [{default[1]:.2f}, {default[2]:.2f}])") in readme, "the README quotes another choice"


def test_the_resume_memory_figures_equal_their_record():
    record = json.loads((RESULTS / "resume_memory.json").read_text())
    block = quoted_block("performance.md", "resume_memory")
    for side, label in (("before", "whole arrays, then copied into the buffer"), ("after", "chunk by chunk into the buffer")):
        peak = max(run["restore_adds"] for run in record["results"][side])
        assert (f"| {label} | {record['checkouts'][side]['commit'][:7]} | {peak / 1e6:,.0f} MB "
                f"| {peak / record['replay_bytes']:.2f} |") in block, f"docs/performance.md quotes another {side} figure"
    assert f"{record['replay_bytes'] / 1e6:,.0f} MB of replay files" in " ".join(
        (ROOT / "docs" / "performance.md").read_text().split())
