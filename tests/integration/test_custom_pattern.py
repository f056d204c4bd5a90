"""A pattern defined only in the tests (`apps/mapped.py`: a map of one step over a list field) runs on every
runtime, with resume and retry from a step, through the same execution core as the shipped patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.commands import control, counts
from tests.integration.test_runtimes import RUNTIMES, Driver, make_driver

MAPPED = f"{Path(__file__).parent / 'apps' / 'mapped.py'}:mapped"


@pytest.fixture(params=RUNTIMES)
def driver(request, env, workers) -> Driver:
    return make_driver(request, env, workers)


def test_a_map_runs_one_lane_per_item_in_parallel_and_skips_the_lanes_it_does_not_need(driver, env):
    run = driver.finish(driver.start(MAPPED, {"n": 3}))
    assert run["status"] == "succeeded", run
    assert run["output"] == {"total": 12}
    assert [s["name"] for s in run["steps"]] == ["count_up", "double_1", "double_2", "double_3", "double_4", "add"]
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * 4 + ["skipped", "succeeded"]
    assert counts(env) == {"count_up": 1, "double_1": 1, "double_2": 1, "double_3": 1, "add": 1}


def test_a_map_resumed_reruns_only_the_failed_lane_then_the_join(driver, env):
    (control(env) / "double_2.fail").write_text("lane 2 is broken")
    run = driver.finish(driver.start(MAPPED, {"n": 3}))
    assert run["status"] == "failed", run
    by_name = {s["name"]: s for s in run["steps"]}
    assert by_name["double_2"]["status"] == "failed"
    assert by_name["double_2"]["error"]["message"] == "lane 2 is broken"
    assert by_name["add"]["status"] == "pending"
    (control(env) / "double_2.fail").unlink()
    resumed = driver.resume(run["id"])
    assert resumed["status"] == "succeeded", resumed
    assert resumed["output"] == {"total": 12}
    assert counts(env) == {"count_up": 1, "double_1": 1, "double_2": 2, "double_3": 1, "add": 1}


def test_a_map_retried_from_a_lane_reruns_that_lane_and_the_join_only(driver, env):
    run = driver.finish(driver.start(MAPPED, {"n": 2}))
    assert run["status"] == "succeeded", run
    retried = driver.retry(run["id"], "double_1")
    assert retried["status"] == "succeeded", retried
    assert retried["output"] == {"total": 6}
    assert counts(env) == {"count_up": 1, "double_1": 2, "double_2": 1, "add": 2}
    assert [e["error"]["type"] for e in retried["steps"][1]["attempt_errors"]] == ["Rewound"]


def test_a_map_retried_from_its_split_runs_everything_again(driver, env):
    run = driver.finish(driver.start(MAPPED, {"n": 2}))
    assert run["status"] == "succeeded", run
    retried = driver.retry(run["id"], "count_up")
    assert retried["status"] == "succeeded", retried
    assert retried["output"] == {"total": 6}
    assert counts(env) == {"count_up": 2, "double_1": 2, "double_2": 2, "add": 2}
