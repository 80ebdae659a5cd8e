"""The plan, replay, QSE and agent benches still run and print their same-run reference and ratio verdicts (no
timing here: the ratio limits are set out of reach, and what is checked is the output's shape and the
reference loop's decisions)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    for name in (
        "_common",
        "_reference",
        "plan_compute",
        "policy_bench",
        "replay_bench",
        "qse_bench",
        "agent_latency",
    ):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_least_plan_sheds_the_least_efficient_groups_first(bench_path: None) -> None:
    from _reference import least_plan
    from plan_compute import build_site

    site, snapshot, _limit, mining_kw = build_site(120, 4, seed=1)
    decisions = least_plan(site, snapshot, mining_kw * 2 / 3)
    assert sorted(g for g, _ in decisions) == sorted(g.group_id for g in site.groups)
    shed = {g for g, mode in decisions if mode == "curtail"}
    by_id = {g.group_id: g for g in site.groups}
    shed_kw = sum(by_id[g].rated_kw for g in shed)
    assert mining_kw / 3 <= shed_kw < mining_kw / 3 + max(g.rated_kw for g in site.groups)
    worst_kept = max(by_id[g].efficiency_j_per_th for g in by_id if g not in shed)
    assert all(by_id[g].efficiency_j_per_th >= worst_kept for g in shed)
    assert all(mode == "run" for _, mode in least_plan(site, snapshot, mining_kw))


def test_plan_compute_prints_the_reference_and_its_ratio_verdict(
    bench_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import plan_compute

    args = ["--sizes", "12", "--iterations", "3", "--warmup", "1", "--verdict-groups", "12"]
    assert plan_compute.main([*args, "--max-median-ratio", "1e9", "--max-p99-ratio", "1e9"]) == 0
    out = capsys.readouterr().out
    assert "reference: least_plan" in out
    assert out.count("-> PASS") == 2  # none and limit
    assert plan_compute.main([*args, "--max-median-ratio", "1e-9"]) == 1
    assert capsys.readouterr().out.count("-> FAIL") == 2


def test_replay_bench_prints_its_reference_and_the_real_time_verdict(
    bench_path: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a 3-hour scenario, at the example site and a 40-group one built like the 600-group site."""
    import replay_bench
    from test_replay import write_scenario

    assert replay_bench.main(["--scenario", str(write_scenario(tmp_path)), "--sizes", "12", "40"]) == 0
    out = capsys.readouterr().out
    assert "ref us/step" in out and "40 groups, economics on" in out
    assert out.count("PASS: 12 groups") == 2  # the 40-group site has no goal: no verdict
    config = replay_bench.with_economics(replay_bench.large_site(600, 19), True)
    assert len(config.groups) == 600 and len(config.tenants) == 30


def test_qse_bench_prints_freshness_against_its_floors_and_tracking_per_base_point(
    bench_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mulletd run` with [qse] and `mulletd simulate`, seconds instead of minutes: the ages beside their
    floors, the round trip beside the bare meter read, a row per base point in both tracking tables."""
    import qse_bench

    assert qse_bench.main(["--freshness-s", "1", "--interval-s", "2", "--log-level", "warning"]) == 0
    out = capsys.readouterr().out
    for rate in ("1", "10"):
        assert f"{rate} Hz site_mw_age_ms" in out and f"{rate} Hz mining_mw_age_ms" in out
        assert f"{rate} Hz ref: bare meter read (simulator)" in out and f"{rate} Hz ratio QSE / ref" in out
    tables = out.split("2. base points 6 -> 4 -> 7 MW", 1)[1]
    for base_point in ("6", "4", "7"):
        rows = [line for line in tables.splitlines() if line.split()[:1] == [base_point]]
        assert len(rows) == 2, rows  # whole interval, and once settled
    assert "refused writes: 0" in out and "problem:" not in out


def test_agent_latency_prints_both_backends_beside_its_reference(
    bench_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per call only (no agent runs): both backends drive the fake miner and the bare exchange is timed."""
    import agent_latency

    assert agent_latency.main(["--calls", "3", "--warmup", "1", "--agent-backends"]) == 0
    out = capsys.readouterr().out
    assert "reference  bare exchange" in out
    for backend in ("pyasic", "asic-rs"):
        for call in ("sleep", "wake", "read"):
            assert any(line.split()[:2] == [backend, call] for line in out.splitlines()), (backend, call)
