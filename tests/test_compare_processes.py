"""A/B with several processes a side (``--agentmem-compare-processes``): who measures when,
and the change judged against how much the processes of one side differ."""

from __future__ import annotations

import math
import random
import threading

import pytest

from pytest_agentmem.compare.coordinator import Coordinator, block_order, participants, side_of
from pytest_agentmem.compare.processes import compare_processes, t_quantile


def test_participants_and_their_sides() -> None:
    assert participants(1) == ("base", "candidate")
    assert participants(3) == ("base", "base.2", "base.3", "candidate", "candidate.2", "candidate.3")
    assert side_of("base.3") == "base" and side_of("candidate") == "candidate"
    with pytest.raises(ValueError):
        side_of("other")
    with pytest.raises(ValueError):
        participants(0)


def test_blocks_alternate_the_sides_and_reverse_every_other_block() -> None:
    assert block_order(0, participants(1)) == ["base", "candidate"]  # ABBA with one process a side
    assert block_order(1, participants(1)) == ["candidate", "base"]
    members = participants(2)
    assert block_order(0, members) == ["base", "candidate", "base.2", "candidate.2"]
    assert block_order(1, members) == ["candidate.2", "base.2", "candidate", "base"]


def test_the_coordinator_takes_every_participant_through_its_turns() -> None:
    members = participants(2)
    coordinator = Coordinator(members=members, wait_s=20)
    coordinator.collected(["t::a"], {p: {} for p in members if p != "candidate"})
    errors: list[BaseException] = []

    def side(who: str) -> None:
        try:
            if who != "candidate":
                assert coordinator.hello(who, ["t::a"])[0] == ["t::a"]
            plan = coordinator.arrive(who, "t::a", "op", 3)
            assert plan.paired and plan.rounds == 3
            for number in range(plan.rounds):
                assert coordinator.turn(who, "t::a", "op", number)
                coordinator.done(who, "t::a", "op", number, {"cpu_ms_per_op": 1.0})
            coordinator.finish(who, "t::a", "op", {"metrics": {}})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=side, args=(p,)) for p in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    run = coordinator.run_of("t::a", "op")
    assert run is not None and run.complete_blocks() == 3
    # block by block, in the order of block_order: nobody measured out of turn
    assert run.order == [p for k in range(3) for p in block_order(k, members)]
    assert set(run.rounds) == set(members)


def _rounds(effects: dict[str, float], blocks: int = 12, noise: float = 0.002, seed: int = 1,
            metric: str = "cpu_ms_per_op") -> dict[str, list[dict[str, float]]]:
    """Rounds whose log values are: the block's drift + the process's effect + a little noise."""
    rng = random.Random(seed)
    drift = [rng.gauss(0, 0.2) for _ in range(blocks)]  # the machine moves a lot between blocks
    return {p: [{metric: math.exp(drift[k] + e + rng.gauss(0, noise))} for k in range(blocks)]
            for p, e in effects.items()}


def test_processes_that_differ_as_much_as_the_change_are_not_significant() -> None:
    # the candidate's processes 4 % slower, but the processes of each side spread 4 %: no evidence
    effects = {"base": 0.0, "base.2": 0.04, "base.3": -0.04,
               "candidate": 0.04, "candidate.2": 0.08, "candidate.3": 0.0}
    change = compare_processes("cpu_ms_per_op", _rounds(effects))
    assert change is not None and change.pairs == 3
    assert change.change == pytest.approx(math.exp(0.04) - 1, abs=0.005)
    assert change.p_value is not None and change.p_value > 0.1
    assert change.interval[0] < 0 < change.interval[1]
    assert change.spread == pytest.approx(0.04, abs=0.005)


def test_a_change_beyond_the_processes_spread_is_significant_and_signed_by_direction() -> None:
    effects = {"base": 0.0, "base.2": 0.01, "base.3": -0.01,
               "candidate": 0.10, "candidate.2": 0.11, "candidate.3": 0.09}
    slower = compare_processes("cpu_ms_per_op", _rounds(effects))
    assert slower is not None and slower.change == pytest.approx(math.exp(0.10) - 1, abs=0.005)
    assert slower.p_value is not None and slower.p_value < 0.01
    assert slower.interval[0] > 0.05
    # the same rounds read as a throughput: higher is better, so the candidate is better
    faster = compare_processes("qps", _rounds(effects, metric="qps"))
    assert faster is not None and faster.change < 0 and faster.p_value is not None and faster.p_value > 0.99


def test_error_rates_are_compared_by_difference_and_one_process_a_side_is_not_enough() -> None:
    rounds = {p: [{"error_rate": 0.0}] * 5 for p in participants(2)}
    change = compare_processes("error_rate", rounds)
    assert change is not None and change.additive and change.change == 0
    assert compare_processes("cpu_ms_per_op", {"base": [{"cpu_ms_per_op": 1.0}],
                                               "candidate": [{"cpu_ms_per_op": 2.0}]}) is None


def test_t_quantile_matches_the_tables() -> None:
    assert t_quantile(0.95, 4) == pytest.approx(2.132, abs=1e-3)
    assert t_quantile(0.95, 2) == pytest.approx(2.920, abs=1e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)


pytest_plugins = "pytester"


@pytest.mark.parametrize(("value", "says"), [("0", "positive"), ("9", "at most 8 processes a side"),
                                             ("two", "")])
def test_a_bad_number_of_processes_is_a_usage_error(pytester: pytest.Pytester, value: str, says: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("--agentmem-compare-processes", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--agentmem-compare-processes*{says}*"])


def test_the_sides_wait_shares_are_averaged_over_their_processes() -> None:
    from pytest_agentmem.compare.decision import side_waits, unequal_machine
    from pytest_agentmem.load.fixtures import WAIT_SHARE

    # each process's wait share swings by 6 points from block to block, but the swings
    # cancel within a side: the sides were treated alike
    swing = {"base": 0.06, "base.2": -0.06, "base.3": 0.0, "candidate": -0.06, "candidate.2": 0.06,
             "candidate.3": 0.0}
    rounds = {p: [{WAIT_SHARE: 0.2 + (s if k % 2 else -s)} for k in range(10)] for p, s in swing.items()}
    base, cand = side_waits(rounds)
    assert len(base) == len(cand) == 10 and unequal_machine(base, cand) is None
    assert unequal_machine(rounds["base"], rounds["candidate"]) is not None  # one process a side: unequal
    rounds["candidate.3"] = [{WAIT_SHARE: 0.5} for _ in range(10)]  # one side really waited more
    assert "each side's processes averaged" in (unequal_machine(*side_waits(rounds), unit="block, each "
                                                                "side's processes averaged") or "")
