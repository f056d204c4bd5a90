"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, driven by Selenium): a person
signs in, filters the runs to the failed ones, opens the failed run, reads why it failed, presses Resume, and
watches it succeed. `baton serve` runs in a process of its own on the machine's PostgreSQL.

With BATON_UPDATE_DOCS=1 the screenshots taken on the way replace the ones in docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.commands import baton, control
from tests.integration.serving import Served

APPS = Path(__file__).parent / "apps"
RESEARCH = f"{APPS / 'research.py'}:research"
CONTROLLED = f"{APPS / 'controlled.py'}:controlled"
DOCS = Path(__file__).parents[2] / "docs" / "screenshots"
TOKEN = "browser-test-token-5b1d0c2e"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the background-networking flags Chromium keeps calling Google's hosts, which this closed network
# refuses; a fresh profile keeps runs apart.
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1000", "--hide-scrollbars",
]  # fmt: skip


@pytest.fixture
def server(env, tmp_path):
    served = Served(env | {"BATON_DASHBOARD_TOKEN": TOKEN}, tmp_path / "serve.log")
    yield served.url
    assert TOKEN not in served.stop()  # the server never logs the token


@pytest.fixture
def browser(tmp_path):
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: apt-get install chromium chromium-driver (.ci/run does)"
    os.environ["SE_OFFLINE"] = "true"  # Selenium must not look for a driver on the internet
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait(what, condition, timeout: float = 30):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            found = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            found = None  # the live part of the page was being replaced: look again
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _shot(driver, name: str, tmp_path: Path) -> Path:
    # The whole page: as tall as its content.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 40, 700), 2400))
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # an image of a page, not of nothing
    if os.environ.get("BATON_UPDATE_DOCS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS / name)
    driver.set_window_size(1280, 1000)
    return path


def test_a_person_finds_the_failed_run_reads_why_resumes_it_and_sees_it_succeed(env, server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for value in (1, 2, 3):
        baton(env, "run", CONTROLLED, "--input", json.dumps({"value": value}), check=0)
    (control(env) / "news.fail").write_text("the news API answered 503 Service Unavailable")
    ask = json.dumps({"topic": "ACME", "want": ["financials", "news", "risks"]})
    failed = json.loads(baton(env, "run", RESEARCH, "--input", ask, "--json").stdout)
    assert failed["status"] == "failed"
    baton(env, "run", CONTROLLED, "--input", json.dumps({"value": 4}), check=0)

    # Signing in: every page needs the token here.
    browser.get(f"{server}/ui/runs")
    assert "/login" in browser.current_url
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    _wait("the runs page", lambda: browser.current_url.endswith("/ui/runs"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]")
    assert len(rows) == 5
    _shot(browser, "runs.png", tmp_path)

    # Filtering to the failed runs.
    Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
    browser.find_element(By.ID, "apply").click()
    _wait("the filter", lambda: "status=failed" in browser.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]")
    assert [r.get_attribute("data-run") for r in rows] == [failed["id"]]
    assert "news" in rows[0].text  # the step it failed at

    # Opening it and reading why.
    rows[0].find_element(By.CSS_SELECTOR, "a").click()
    _wait("the run page", lambda: f"/ui/runs/{failed['id']}" in browser.current_url)
    assert browser.find_element(By.ID, "run-status").text == "failed"
    error = browser.find_element(By.ID, "error-news")
    assert "ValueError" in error.text
    assert "the news API answered 503 Service Unavailable" in error.find_element(By.CLASS_NAME, "error-message").text
    assert "Traceback" in error.find_element(By.CLASS_NAME, "traceback").text
    lanes = browser.find_elements(By.CSS_SELECTOR, "#steps tr.lane")
    assert [lane.get_attribute("data-step") for lane in lanes] == ["financials", "news", "risks"]
    _shot(browser, "run.png", tmp_path)

    # The source is back but slow: Resume, and the page follows the run to its end by itself.
    (control(env) / "news.fail").unlink()
    (control(env) / "news.block").touch()
    browser.find_element(By.ID, "resume").click()
    _wait("the resume", lambda: "done=resumed" in browser.current_url)
    _wait("the run to be running", lambda: browser.find_element(By.ID, "run-status").text == "running")
    (control(env) / "news.block").unlink()
    _wait("the run to succeed", lambda: browser.find_element(By.ID, "run-status").text == "succeeded")
    statuses = {
        row.get_attribute("data-step"): row.get_attribute("data-status")
        for row in browser.find_elements(By.CSS_SELECTOR, "#steps tbody tr[data-step]")
    }
    assert set(statuses.values()) == {"succeeded"}, statuses
    assert json.loads(baton(env, "show", failed["id"], "--json").stdout)["status"] == "succeeded"
    assert TOKEN not in browser.page_source


def test_without_a_token_the_printed_address_signs_the_browser_in_and_no_log_keeps_the_token(env, browser, tmp_path):
    from selenium.webdriver.common.by import By

    env = {k: v for k, v in env.items() if k != "BATON_DASHBOARD_TOKEN"}
    (control(env) / "fetch.fail").write_text("the source is gone")
    failed = json.loads(baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--json").stdout)
    served = Served(env, tmp_path / "serve.log")
    try:
        printed = re.search(r"sign in with (http://\S+)", served.log.read_text()).group(1)
        assert "/login#token=" in printed
        browser.get(f"{served.url}/ui/runs/{failed['id']}")  # reading is open on loopback
        assert browser.find_element(By.ID, "run-status").text == "failed"
        browser.get(printed)
        _wait("the sign-in", lambda: browser.current_url.endswith("/ui/runs"))
        assert "#token" not in browser.current_url and browser.get_cookie("baton_session") is not None
        (control(env) / "fetch.fail").unlink()
        browser.get(f"{served.url}/ui/runs/{failed['id']}")
        browser.find_element(By.ID, "resume").click()
        _wait("the run to succeed", lambda: browser.find_element(By.ID, "run-status").text == "succeeded")
    finally:
        log = served.stop()
    token = printed.rsplit("=", 1)[1]
    assert log.count(token) == 1  # printed once, where the server started; the access log never saw it
