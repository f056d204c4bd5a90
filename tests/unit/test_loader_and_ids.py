import concurrent.futures

import pytest

from baton import UserError
from baton._ids import new_run_id
from baton._loader import load_target, normalize_target
from baton.settings import Settings


def test_run_ids_grow_even_within_one_millisecond():
    ids = [new_run_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 32 for i in ids)


def test_a_file_target_loads_once_and_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "mod.py").write_text("VALUE = object()\n")
    monkeypatch.chdir(tmp_path)
    assert load_target("mod.py:VALUE") is load_target(f"{tmp_path}/mod.py:VALUE")
    assert normalize_target("mod.py:VALUE") == f"{tmp_path}/mod.py:VALUE"


def test_a_file_target_loaded_by_many_threads_at_once_is_never_seen_half_made(tmp_path):
    # A celery worker on the threads pool finds a run's pattern from many threads at the same moment.
    (tmp_path / "slow_flow.py").write_text("import time\ntime.sleep(0.2)\nflow = 'ready'\n")
    target = f"{tmp_path / 'slow_flow.py'}:flow"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda _: load_target(target), range(8)))
    assert loaded == ["ready"] * 8


def test_a_module_target_imports_the_module():
    assert load_target("baton.demo:pipeline").name == "demo-documents"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no-colon", "must look like"),
        ("missing_module_xyz:thing", "cannot import module"),
        ("baton.demo:nothing_here", "has no attribute"),
        ("/does/not/exist.py:x", "no such file"),
    ],
)
def test_bad_targets_fail_clearly(target, message):
    with pytest.raises(UserError, match=message):
        load_target(target)


def test_settings_are_read_from_the_environment_when_asked():
    settings = Settings.from_env({"BATON_DATABASE_URL": "sqlite:///x.db", "BATON_LEASE_SECONDS": "5"})
    assert settings.store.database_url == "sqlite:///x.db" and settings.store.lease_seconds == 5.0
    assert Settings.from_env({}).store.resolved_url().endswith("/.baton/baton.db")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("baton.examples.triage:triag", "baton.examples.triage has no attribute 'triag'; did you mean 'triage'?"),
        ("baton.exampels.triage:triage", "No module named 'baton.exampels'; did you mean 'baton.examples.triage'?"),
        ("bton.examples.triage:triage", "did you mean 'baton.examples.triage'?"),
        ("baton.examples.triag:triage", "did you mean 'baton.examples.triage'?"),
    ],
)
def test_a_mistyped_target_suggests_the_closest_name(target, message):
    with pytest.raises(UserError) as raised:
        load_target(target)
    assert str(raised.value).endswith(message)


def test_a_mistyped_file_or_name_in_it_suggests_the_closest_one(tmp_path, monkeypatch):
    (tmp_path / "billing.py").write_text("billing = 'the pipeline'\nhelper = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"no such file: .*billng\.py; did you mean 'billing\.py'\?$"):
        load_target("billng.py:billing")
    with pytest.raises(UserError, match=r"billing\.py has no attribute 'biling'; did you mean 'billing'\?$"):
        load_target("billing.py:biling")
    with pytest.raises(UserError) as raised:  # nothing close: no guess
        load_target("billing.py:zzzz")
    assert "did you mean" not in str(raised.value)
