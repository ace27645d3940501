"""The Dagster UI as the daily tool: `dagster dev` on a project with the fake endpoint,
driven by headless Chromium (Debian's package through Playwright; `make browser-deps`).

Screenshots of every step go to test-artifacts/.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from glan_assets.glan import method as glan
from glan_assets.glan.schemas import AnswerRow
from resources.storage import DuckDBStore
from tests.conftest import Project
from tests.fake_llm import FakeLLM

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download cannot work offline; these keep Debian's Chromium quiet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
LEVELS = [lv.name for lv in glan.LEVELS]  # fields ... answers, in method order
CHECKS = ["duplicate_rate", "no_orphans", "not_empty", "reject_rate", "schema_matches_model"]


def wait_until(condition: Callable[[], object], timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(1)
    raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what}")


class DagsterUI:
    """A running `dagster dev`: its address, and GraphQL for what a test waits on."""

    def __init__(self, url: str, project: Project):
        self.url = url
        self.project = project

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", json.dumps({"query": query}).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]

    def asset_names(self) -> list[str]:
        try:
            nodes = self.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]
        except OSError:  # not listening yet
            return []
        return [n["assetKey"]["path"][-1] for n in nodes]

    def partitions(self) -> list[str]:
        query = '{ assetNodeOrError(assetKey: {path: ["answers"]}) { ... on AssetNode { partitionKeys } } }'
        return self.graphql(query)["assetNodeOrError"]["partitionKeys"]

    def runs(self, partition: str) -> list[dict]:
        query = ('{ runsOrError(filter: {tags: [{key: "dagster/partition", value: "%s"}]}) '
                 "{ ... on Runs { results { runId jobName status } } } }" % partition)
        return self.graphql(query)["runsOrError"]["results"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C for the whole group (the webserver, daemon, code servers and runs), then
    SIGKILL for whatever is left; `dagster dev` ignores a plain SIGTERM."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[DagsterUI]:
    """The UI as a newcomer opens it: `glan build`, then `glan ui` as printed, from the project's
    folder with no DAGSTER_HOME set, on the fake endpoint and a tmp taxonomy (Physics, Astronomy)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with FakeLLM() as llm:
        project = Project(tmp_path_factory.mktemp("ui"), llm.base_url)
        shutil.copy(REPO / "dagster_home" / "dagster.yaml", project.dagster_home)
        env = {k: v for k, v in project.subprocess_env().items() if k != "DAGSTER_HOME"}
        # Build the taxonomy as a user does first, so the sensor's first tick has nothing
        # missing or stale to build and the runs below are the only ones the UI launches.
        built = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "glan_quality"],
                               cwd=project.root, env=env, check=True, capture_output=True, text=True, timeout=600)
        printed = next(line for line in built.stdout.splitlines() if line.startswith("UI:"))
        assert printed.split()[1].endswith("glan") and printed.split()[2] == "ui", printed
        with open(ARTIFACTS / "dagster-dev.log", "w") as log:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "glan_assets.cli", "ui", "--port", str(port)],
                cwd=project.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                dagster = DagsterUI(f"http://127.0.0.1:{port}", project)
                wait_until(dagster.asset_names, 120, "dagster dev to load the code location")
                yield dagster
            finally:
                stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})  # a first visit
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def choose_graph_setting(page: Page, item: str) -> None:
    for attempt in range(3):
        page.get_by_role("button", name="settings", exact=True).click()
        try:  # on a loaded machine the graph's re-layout can replace the open menu
            page.get_by_role("menuitem", name=item).click(timeout=10_000)
            return
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def test_the_ui_opens_on_the_builds_partitions_with_no_sign_up_modal(ui, page):
    page.goto(f"{ui.url}/assets/answers?view=partitions")
    expect(page.get_by_text("Physics", exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile("2 materialized|Materialized.*2", re.S)).first).to_be_visible()
    expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
    shot(page, "0-first-page")
    query = '{ assetNodeOrError(assetKey: {path: ["answers"]}) { ... on AssetNode { partitionStats { numMaterialized } } } }'
    assert ui.graphql(query)["assetNodeOrError"]["partitionStats"]["numMaterialized"] == 2


def test_the_asset_graph_shows_every_level_top_to_bottom_in_method_order(ui, page):
    graph_loaded = page.get_by_text("generation", exact=True).first  # the menu lists groups once loaded
    page.goto(f"{ui.url}/asset-groups")
    expect(graph_loaded).to_be_visible()
    # Dagster keeps the direction per browser, in the graph's settings menu (default left
    # to right); there is no setting for it in code.
    choose_graph_setting(page, "Change graph to vertical orientation")
    # The graph opens at zoom 1 and draws only what is in view: make room for every level.
    page.set_viewport_size({"width": 1600, "height": 2400})
    page.reload()
    expect(graph_loaded).to_be_visible()
    # After the reload: on a loaded machine the expanded groups did not always outlive it.
    choose_graph_setting(page, "Expand all groups")
    page.keyboard.press("Escape")  # the menu stays open over the graph
    nodes = {name: page.get_by_text(name, exact=True) for name in [*LEVELS, "taxonomy_proposals"]}
    for node in nodes.values():
        expect(node).to_be_visible()
    expect(page.get_by_text(re.compile("^Loading"))).to_have_count(0)  # statuses filled in
    shot(page, "1-asset-graph")

    tops = {name: node.bounding_box()["y"] for name, node in nodes.items()}
    assert all(tops[a] < tops[b] for a, b in zip(LEVELS, LEVELS[1:]))


def test_a_discipline_materialized_from_the_ui_shows_its_preview_and_checks(ui, page):
    page.goto(f"{ui.url}/jobs")
    page.get_by_role("link", name="build_discipline").first.click()
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menu").get_by_text("Physics", exact=True).first.click()
    dialog.get_by_text("Launch runs to materialize").click()  # closes the partition list
    shot(page, "2-materialize-dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()

    run = wait_until(
        lambda: next((r for r in ui.runs("Physics") if r["jobName"] == "build_discipline"
                      and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")), None),
        240, "the Physics run to finish",
    )
    assert (run["jobName"], run["status"]) == ("build_discipline", "SUCCESS")
    page.goto(f"{ui.url}/runs/{run['runId']}")
    expect(page.get_by_text("Succeeded (16)")).to_be_visible()  # eight levels (quality last), eight check steps
    shot(page, "3-run")

    page.goto(f"{ui.url}/assets/answers")
    page.get_by_role("row").filter(has_text="preview").get_by_text("[Show Markdown]").click()
    preview = page.get_by_role("dialog")
    expect(preview).to_contain_text("Sample pairs")
    shot(page, "4-answers-preview")
    text = preview.inner_text()
    for column in ("answer_id", "subject_name", "session_title", "question", "answer"):
        assert column in text
    stored = DuckDBStore(path=str(ui.project.db)).read(AnswerRow, "Physics")
    assert stored and all(a.answer_id in text for a in stored)
    assert "Introduction to Physics" in text

    page.goto(f"{ui.url}/assets/answers?view=checks")
    for name in CHECKS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(CHECKS), timeout=30_000)  # a loaded machine
    expect(page.get_by_text("Physics", exact=True).first).to_be_visible()  # the evaluated partition
    shot(page, "5-answers-checks")
    page.locator("button[role=tab]").filter(has_text="Partitions").click()  # the check's tab, not the asset's
    # Physics was checked in this run, Astronomy in `glan build`'s: each result is its partition's.
    expect(page.get_by_text("Passed (2)")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Missing \([1-9]"))).to_have_count(0)
    page.get_by_title("Physics").last.click()  # the list entry (the first is the filter chip)
    expect(page.get_by_text("Passed", exact=True)).to_be_visible()
    shot(page, "6-check-partitions")


def test_a_discipline_added_to_the_taxonomy_gets_its_partition_in_the_ui(ui, page):
    ui.project.add_discipline("Geology")

    wait_until(lambda: "Geology" in ui.partitions(), 90, "the sensor to register Geology")
    page.goto(f"{ui.url}/assets/answers?view=partitions")
    expect(page.get_by_text("Geology", exact=True).first).to_be_visible()
    shot(page, "7-new-partition")
    # The sensor's build of it, and nothing else.
    wait_until(lambda: ui.runs("Geology"), 60, "the sensor's Geology run")
    assert [r["jobName"] for r in ui.runs("Geology")] == ["build_discipline"]
