"""The dashboard shows the chain a run belongs to (the run that emitted events and the runs those started), and
the runs page and the API filter runs by chain; on SQLite and PostgreSQL, through the real app in-process."""

import re

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

import baton
from baton import Pipeline, Retry, emit, on, step
from baton.web.access import Access
from baton.web.app import create_app

TOKEN = "dashboard-chain-token-0123456789"
ONCE = Retry(max_attempts=1)


class Parcel(BaseModel):
    item: str = Field(max_length=50)
    refuse: bool = False


@step(name="dchain_place", retry=ONCE)
def place(parcel: Parcel) -> Parcel:
    emit("dchain.placed", parcel)
    return parcel


@step(name="dchain_ship", retry=ONCE)
def ship(parcel: Parcel) -> Parcel:
    if parcel.refuse:
        raise ValueError("the carrier refused the parcel")
    return parcel


@step(name="dchain_keep", retry=ONCE)
def keep(parcel: Parcel) -> Parcel:
    return parcel


PLACE = Pipeline("dchain-place", [place])
SHIP = on("dchain.placed")(Pipeline("dchain-ship", [ship]))
ALONE = Pipeline("dchain-alone", [keep])


@pytest.fixture
def client(any_store):
    app = create_app(any_store, sweep=False, access=Access.from_setting(TOKEN))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def _chain(store, **order) -> tuple[str, str]:
    """Run the chain to its end: (the placing run's id, the shipping run's id)."""
    placed = PLACE.run({"item": "lamp", **order}, store=store)
    baton.wait_chain(placed.id, store=store, timeout=30)
    (shipped,) = store.runs.list(correlation_id=placed.id, pipeline="dchain-ship")
    return placed.id, shipped.id


def _chain_rows(html: str) -> list[tuple[str, str]]:
    block = html[html.index('<table id="chain"') : html.index("</table>", html.index('<table id="chain"'))]
    return re.findall(r'<tr data-run="([0-9a-f]{32})" data-status="([a-z_]+)"', block)


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-run="([0-9a-f]{32})"', html)


def test_a_runs_page_lists_its_chain_with_each_runs_status_and_link(client, any_store):
    placed, shipped = _chain(any_store, refuse=True)
    page = client.get(f"/ui/runs/{placed}").text
    assert _chain_rows(page) == [(placed, "succeeded"), (shipped, "failed")]
    assert f'<a href="/ui/runs/{shipped}">{shipped[:12]}</a>' in page  # the other run is a link
    assert f'{placed[:12]} <span class="muted">(this run)</span>' in page  # this one is marked
    assert f'<a href="/ui/runs?correlation_id={placed}" id="chain-runs">' in page
    # The run its event started shows the same chain, itself marked, and links back to the first.
    second = client.get(f"/ui/runs/{shipped}").text
    assert _chain_rows(second) == [(placed, "succeeded"), (shipped, "failed")]
    assert f'<a href="/ui/runs/{placed}">{placed[:12]}</a>' in second
    assert f'{shipped[:12]} <span class="muted">(this run)</span>' in second


def test_a_run_alone_shows_no_chain(client, any_store):
    alone = ALONE.run({"item": "lamp"}, store=any_store).id
    assert 'id="chain"' not in client.get(f"/ui/runs/{alone}").text


def test_the_runs_page_and_the_api_keep_only_one_chains_runs(client, any_store):
    placed, shipped = _chain(any_store)
    other, other_shipped = _chain(any_store, refuse=True)
    ALONE.run({"item": "lamp"}, store=any_store)
    page = client.get("/ui/runs", params={"correlation_id": placed}).text
    assert sorted(_rows(page)) == sorted([placed, shipped])
    assert re.search(r"all <b>2</b>", page)  # the counts follow the filter
    assert f'value="{placed}"' in page  # the form keeps it
    failed = client.get("/ui/runs", params={"correlation_id": other, "status": "failed"}).text
    assert _rows(failed) == [other_shipped]
    api = client.get("/runs", params={"correlation_id": other}).json()
    assert sorted(r["id"] for r in api["runs"]) == sorted([other, other_shipped])
    assert all(r["correlation_id"] == other for r in api["runs"])
    # Whatever is typed in the field comes back escaped, and matches nothing.
    odd = client.get("/ui/runs", params={"correlation_id": '"><script>alert(1)</script>'})
    assert odd.status_code == 200 and _rows(odd.text) == []
    assert "<script>alert(1)" not in odd.text and "&lt;script&gt;alert(1)" in odd.text
