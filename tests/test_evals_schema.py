"""Scenario files: valid ones load, bad ones fail with file name, field path and a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.loader import ScenarioError, load_scenario, load_suite, render_scenario, select, suite_hash
from evals.schema import CountRange

MINIMAL = """
id: hello
description: A question.
turns:
  - user: Which datasets can I train on?
expect:
  answer:
    must_mention: [breast_cancer]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value.problems


def test_minimal_scenario_loads_with_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "hello.yaml", MINIMAL))
    assert scenario.id == "hello"
    assert scenario.world.demo is True and scenario.world.runtime == "local"
    assert scenario.gates == ["answer"]
    assert scenario.expect.minefields.tool_calls == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (3, (3, 3)),
        ("1..3", (1, 3)),
        ("2..", (2, None)),
        ("..5", (0, 5)),
        ("0", (0, 0)),
    ],
)
def test_count_range_shorthands(text: object, expected: tuple[int, int | None]) -> None:
    count = CountRange.model_validate(text)
    assert (count.min, count.max) == expected


def test_count_range_rejects_empty_range() -> None:
    with pytest.raises(ValueError, match="empty"):
        CountRange.model_validate("3..1")


def test_unknown_field_names_file_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.yaml", MINIMAL + "    must_mentoin: [x]\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: expect.answer.must_mentoin:")
    assert "Extra inputs are not permitted" in problem


def test_wrong_type_deep_in_outcome(tmp_path: Path) -> None:
    text = MINIMAL + "  outcome:\n    runs:\n      - experiment: x\n        count: lots\n"
    [problem] = problems_of(write(tmp_path, "bad.yaml", text))
    assert "expect.outcome.runs[0].count" in problem and "'lots'" in problem


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "broken.yaml", "id: x\nturns: [\n"))
    assert "broken.yaml: line" in problem


def test_turn_must_do_something(tmp_path: Path) -> None:
    text = MINIMAL.replace("  - user: Which datasets can I train on?", "  - user: hi\n  - restart: true")
    [problem] = problems_of(write(tmp_path, "turn.yaml", text))
    assert "turns[1]" in problem and "needs `user`" in problem


def test_unknown_setting_in_world_config(tmp_path: Path) -> None:
    text = MINIMAL + "world:\n  config:\n    budgett: {max_trials: 2}\n"
    [problem] = problems_of(write(tmp_path, "cfg.yaml", text))
    assert problem.endswith("world.config.budgett: not a setting (known: see agent/config.py Settings)")


def test_bad_setting_value_in_world_config(tmp_path: Path) -> None:
    text = MINIMAL + "world:\n  config:\n    budget: {max_trials: many}\n"
    [problem] = problems_of(write(tmp_path, "cfg.yaml", text))
    assert "world.config.budget.max_trials" in problem


def test_unknown_reference_is_reported(tmp_path: Path) -> None:
    text = MINIMAL.replace("Which datasets can I train on?", "Show run ${runs.nope}")
    [problem] = problems_of(write(tmp_path, "ref.yaml", text))
    assert "turns[0].user: unknown reference ${runs.nope}" in problem


def test_reward_basis_must_name_specified_gates(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "basis.yaml", MINIMAL + "reward_basis: [outcome]\n"))
    assert "reward_basis names gates with no expectations: outcome" in problem


def test_bad_k8s_fault_is_reported(tmp_path: Path) -> None:
    text = MINIMAL + "world:\n  runtime: kubernetes\n  k8s_faults: {explode: 1}\n"
    [problem] = problems_of(write(tmp_path, "k8s.yaml", text))
    assert "world.k8s_faults: unknown fault fields ['explode']" in problem


def test_render_fills_run_ids_and_canaries(tmp_path: Path) -> None:
    text = """
id: refs
description: refs
world:
  experiments:
    - name: e
      runs: [{key: best, metrics: {roc_auc: 0.9}}]
  canaries: [{name: token, value: "sk-live-ABCDEFGH123456"}]
turns:
  - user: "Show ${runs.best}; my token ${canary.token}"
expect:
  answer: {must_mention: ["${runs.best}"]}
"""
    scenario = load_scenario(write(tmp_path, "refs.yaml", text))
    rendered = render_scenario(scenario, {"runs.best": "a" * 32, "canary.token": "sk-live-ABCDEFGH123456"})
    assert rendered.turns[0].user == f"Show {'a' * 32}; my token sk-live-ABCDEFGH123456"
    assert rendered.expect.answer is not None and rendered.expect.answer.must_mention == ["a" * 32]


def test_suite_collects_every_problem_and_requires_twins(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MINIMAL)
    write(tmp_path, "b.yaml", MINIMAL)  # duplicate id
    refusal = MINIMAL.replace("id: hello", "id: refuse-me") + "  outcome: {refused: true}\n"
    write(tmp_path, "c.yaml", refusal)
    write(tmp_path, "d.yaml", MINIMAL.replace("id: hello", "id: orphan-twin") + "twin: nobody\n")
    with pytest.raises(ScenarioError) as info:
        load_suite([tmp_path])
    text = str(info.value)
    assert "id: 'hello' is also used by" in text
    assert "c.yaml: expect.outcome.refused: a refusal scenario needs a benign twin" in text
    assert "d.yaml: twin: no scenario has id 'nobody'" in text


def test_select_by_tag_prefix_and_hash_changes_with_content(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MINIMAL + "tags: [policy:deploy]\n")
    write(tmp_path, "b.yaml", MINIMAL.replace("id: hello", "id: other") + "tags: [happy]\n")
    suite = load_suite([tmp_path])
    assert [s.id for s in select(suite, ["policy"])] == ["hello"]
    assert [s.id for s in select(suite, ["hap*"])] == ["other"]
    before = suite_hash(suite)
    write(tmp_path, "b.yaml", MINIMAL.replace("id: hello", "id: other") + "tags: [happy, more]\n")
    assert suite_hash(load_suite([tmp_path])) != before


def test_shipped_suite_is_valid() -> None:
    suite = load_suite([Path(__file__).resolve().parents[1] / "evals" / "scenarios"])
    assert len(suite) >= 40
