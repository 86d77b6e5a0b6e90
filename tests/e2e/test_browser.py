"""The Prefect UI in a real browser (headless Debian Chromium, driven by Playwright)
against `make serve SERVE_ARGS=` pointed at a sandbox this test seeds:

1. every deployment is on the server the UI shows (not on an ephemeral one), and the
   deployments page lists every runbook deployment with its schedule
   (daily-health-todo-app: "0 9 * * *" in Asia/Seoul; emergency-rollback-t-developer: none);
2. a daily-health run started from the deployment's Run button completes, and its
   report artifact shows in the run's Artifacts tab and on the artifact's page;
3. an emergency-rollback run started from the custom run form with dry_run off pauses,
   is approved through the Resume form (approve / approver / reason), and completes
   once the sandbox finishes the ECS rollout; the Prefect API and the durable
   records confirm it.

Screenshots of every step: tests/e2e/screenshots/ (with serve.log and prefect-server.log).
Needs Debian's `chromium` and the `playwright` package (no Playwright browser download);
without them the tests skip, or fail when OPSBOOK_E2E_BROWSER=required (CI).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from urllib.parse import urlparse

import pytest

from tests.e2e import browser_support as bs

_missing = bs.missing_requirements()
if _missing:
    _msg = "browser e2e test needs " + " and ".join(_missing)
    if os.environ.get("OPSBOOK_E2E_BROWSER") == "required":
        raise RuntimeError(_msg + " (OPSBOOK_E2E_BROWSER=required)")
    pytest.skip(_msg, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

ECS_REGION, ECS_CLUSTER, ECS_SERVICE = "us-east-1", "t-developer-cluster-production", "t-developer-service-production"
EXPECTED_SECONDS = 100  # this file on a busy 2-core machine: tests/conftest.py starts the costliest files first
RUN_TIMEOUT_MS = 120_000  # a run started from the UI: runner poll (2 s) + subprocess start + the flow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    bs.reset_shots()
    st = bs.Stack(tmp_path_factory.mktemp("opsbook-home"), ["todo-app", "t-developer"], [("t-developer", "bad-deploy")])
    t0 = time.monotonic()
    try:
        st.start()
        yield st
    finally:
        st.stop()
        if bs.RETRIES:
            bs.log(f"UI writes retried after a 503 from Prefect's SQLite server: {bs.RETRIES}")
        bs.log(f"stack up and down in {time.monotonic() - t0:.1f} s; screenshots and logs in {bs.SHOTS}")


@pytest.fixture(scope="module")
def page(stack):
    with bs.chromium() as pg:
        yield pg


def open_deployment(page, stack, name: str) -> None:
    """Deployments page -> search -> the deployment's own page (as a user finds it)."""
    page.goto(f"{stack.ui}/deployments")
    page.get_by_placeholder("Search deployments").fill(name)
    row = page.locator("tbody tr", has=page.get_by_title(name, exact=True))
    expect(page.locator("tbody tr")).to_have_count(1)
    row.locator("a.deployment-list__name").click()
    expect(page.locator(".page-heading")).to_contain_text(name)


def follow_run_toast(page) -> tuple[str, str]:
    """After Run/Submit the UI stays on the deployment and toasts "<name> scheduled to start now
    [View run]"; follow it. Returns (run name, flow run id)."""
    # the UI can mount its toast app twice (two containers, one over the other): the last one is on top
    toast = page.locator(".toast-flow-run-create").last
    expect(toast).to_be_visible()
    name = toast.locator(".toast-flow-run-create__message--emphasized").first.inner_text().strip()
    try:
        toast.get_by_role("button", name="View run").click(timeout=3000)
    except Exception as exc:  # the toast lives 5 s; if it went, take the run from the deployment's run list
        bs.log(f"the toast's View run button could not be clicked ({str(exc).splitlines()[-1].strip()}); opening {name} from the run list")
        page.goto(page.url.split("?")[0].removesuffix("/run") + "?tab=Runs")
        page.get_by_role("link", name=name, exact=True).first.click()
    page.wait_for_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
    expect(page.locator(".page-heading")).to_contain_text(name)
    return name, urlparse(page.url).path.rstrip("/").split("/")[-1]


def state_badge(page):
    return page.locator(".page-heading-flow-run__meta .state-badge").first


def test_deployments_page_lists_runbooks_with_schedules(stack, page):
    from deployments.schedules import deployment_specs

    specs = {s["name"]: s for s in deployment_specs()}
    # `make serve` registers every deployment on the server the UI shows (README's command; it once sent
    # them to Prefect's ephemeral server while the UI said "Create a deployment to get started")
    assert stack.api.call("POST", "/deployments/count") == len(specs)
    ui = json.loads(urllib.request.urlopen(f"{stack.ui}/ui-settings", timeout=10).read())
    assert ui["api_url"] == stack.api.url  # the browser's UI asks this server
    assert f"registered on {stack.api.url} and read back" in stack.serve_log.read_text(errors="replace")
    assert not (stack.home / ".prefect" / "prefect.db").exists(), "deployments went to Prefect's ephemeral server"
    shots = bs.Shots(page, "1-deployments")
    with shots.step("list"):
        page.goto(f"{stack.ui}/deployments")
        expect(page.get_by_text(f"{len(specs)} Deployments", exact=True)).to_be_visible()
        shots.take("list")
        seen: dict[str, list[str]] = {}
        first_name = page.locator("tbody tr a.deployment-list__name").first
        pager = page.locator(".p-pager__buttons")
        while True:  # every page of the list (10 rows a page, A to Z)
            expect(first_name).to_be_visible()
            # one atomic read of the rendered rows: name, and the schedule tags (present in the DOM
            # even when the narrow column folds them into "+1")
            rows = page.eval_on_selector_all("tbody tr", """rows => rows.map(r => [
                r.querySelector('a.deployment-list__name')?.textContent.trim(),
                [...r.querySelectorAll('.deployment-schedule-tags__tag')].map(t => t.textContent.trim())])""")
            for name, tags in rows:
                assert name, rows
                seen[name] = tags
            m = re.search(r"Page (\d+) of (\d+)", pager.inner_text())
            assert m, pager.inner_text()
            if m.group(1) == m.group(2):
                break
            pager.locator("button").nth(2).click()  # first, previous, NEXT, last
            expect(pager).to_contain_text(f"Page {int(m.group(1)) + 1} of")
            expect(first_name).not_to_have_text(rows[0][0])  # the next page's rows are rendered
        assert set(seen) == set(specs), (sorted(set(specs) - set(seen)), sorted(set(seen) - set(specs)))
        for name, spec in specs.items():
            assert bool(seen[name]) == bool(spec["cron"]), (name, spec["cron"], seen[name])
        assert seen["daily-health-todo-app"] == ["At 09:00 AM every day"]
        assert seen["emergency-rollback-t-developer"] == []

    with shots.step("daily-health-schedule"):
        open_deployment(page, stack, "daily-health-todo-app")
        card = page.locator(".deployment-schedule-card")
        expect(card).to_have_count(1)
        card.locator(".deployment-schedule-card__content").hover()
        expect(page.get_by_role("tooltip")).to_have_text("At 09:00 AM every day (Asia/Seoul)")
        shots.take("schedule-tooltip")
        card.locator(".deployment-schedule__menu button").click()
        page.get_by_text("Edit", exact=True).click()
        modal = page.locator(".p-modal")
        expect(modal).to_contain_text("Edit schedule")
        expect(modal.locator(".cron-schedule-form__row input").first).to_have_value("0 9 * * *")
        expect(modal.locator(".cron-schedule-form__row .p-select-button__control")).to_have_attribute("modelvalue", "Asia/Seoul")
        shots.take("schedule-cron")
        modal.get_by_role("button", name="Close", exact=True).click()  # look, don't touch
        expect(modal).to_be_hidden()

    with shots.step("rollback-no-schedule"):
        open_deployment(page, stack, "emergency-rollback-t-developer")
        expect(page.locator(".deployment-details")).to_contain_text("Schedules")
        expect(page.locator(".deployment-schedule-card")).to_have_count(0)
        shots.take("no-schedule")


def test_daily_health_started_from_the_ui_completes_with_its_report(stack, page):
    shots = bs.Shots(page, "2-daily-health")
    with shots.step("quick-run"):
        open_deployment(page, stack, "daily-health-todo-app")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Quick run", exact=True).click()
        modal = page.locator(".p-modal")
        expect(modal).to_contain_text("Run Deployment")
        shots.take("quick-run-form")
        bs.dismiss_toasts(page)
        bs.click_until_accepted(page, modal.get_by_role("button", name="Run", exact=True), "/create_flow_run", "quick run")
        run_name, run_id = follow_run_toast(page)
        shots.take("run-started")

    with shots.step("completes"):
        expect(state_badge(page)).to_have_text("Completed", timeout=RUN_TIMEOUT_MS)
        shots.take("completed")
        run = stack.api.flow_run(run_id)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert stack.api.deployment(run["deployment_id"])["name"] == "daily-health-todo-app"
        assert run["parameters"]["system"] == "todo-app"
        assert [r["id"] for r in stack.api.runs_of(run["deployment_id"])] == [run_id]  # one click, one run

    with shots.step("artifact"):
        arts = {a["key"]: a for a in stack.api.artifacts_of(run_id)}
        report = arts.get("daily-health-todo-app")
        assert report and report["type"] == "markdown", sorted(arts)
        assert arts.get("daily-health-todo-app-findings", {}).get("type") == "table", sorted(arts)
        status = re.match(r"daily-health todo-app: (OK|WARN|UNKNOWN)\b", report["description"])
        assert status, report["description"]  # the headline; a CRIT run would have ended Failed

        page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
        card = page.locator("a", has=page.locator(".artifact-card__title").get_by_text("daily-health-todo-app", exact=True))
        # .first: under load the tab can render while its list is replaced (two cards of this one artifact, seen once)
        expect(card.locator(".artifact-card__description").first).to_have_text(report["description"])
        expect(page.locator(".artifact-card__title").get_by_text("daily-health-todo-app-findings", exact=True)).to_be_visible()
        shots.take("artifacts-tab", full_page=True)
        card.click()
        page.wait_for_url(re.compile(r"/artifacts/artifact/" + report["id"]))
        body = page.locator(".markdown-renderer", has=page.locator("h1")).first  # the report itself
        expect(body.locator("h1")).to_contain_text(f"daily-health · todo-app: {status.group(1)}")
        expect(body).to_contain_text("Checks run:")
        expect(page.get_by_role("link", name=run_name, exact=True).first).to_be_visible()  # the report's run
        shots.take("report-artifact", full_page=True)


def test_emergency_rollback_paused_approved_in_the_ui_completes(stack, page, monkeypatch):
    from opsbook import aws
    from opsbook.inventory import load_system
    from opsbook.mutation import statestore

    fault = stack.fault_info[("t-developer", "bad-deploy")]
    shots = bs.Shots(page, "3-rollback")
    with shots.step("custom-run"):
        open_deployment(page, stack, "emergency-rollback-t-developer")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run", exact=True).click()
        page.wait_for_url(re.compile(r"/run(\?|$)"))
        dry_run = page.locator(".schema-form-property", has=page.locator(".schema-form-property__label", has_text="dry_run"))
        switch = dry_run.get_by_role("switch")
        expect(switch).to_have_attribute("aria-checked", "true")  # the default is a dry run
        switch.click()
        expect(switch).to_have_attribute("aria-checked", "false")
        shots.take("custom-run-form", full_page=True)
        form_name = page.locator(".flow-run-name-input input").input_value()
        bs.dismiss_toasts(page)
        bs.click_until_accepted(page, page.get_by_role("button", name="Submit", exact=True), "/create_flow_run", "custom run")
        run_name, run_id = follow_run_toast(page)
        assert run_name == form_name

    with bs.RolloutCompleter(stack.sandbox, ECS_REGION, ECS_CLUSTER, ECS_SERVICE, fault["from"]) as rollout:
        with shots.step("paused"):
            expect(state_badge(page)).to_have_text("Paused", timeout=RUN_TIMEOUT_MS)
            resume = page.get_by_role("button", name="Resume", exact=True)
            expect(resume).to_be_visible()
            shots.take("paused")
            assert stack.api.flow_run(run_id)["parameters"]["dry_run"] is False
            stack.api.wait_pause_form(run_id)
            assert not rollout.done.is_set()  # nothing changed before approval

        with shots.step("approve"):
            resume.click()
            modal = page.locator(".p-modal")
            expect(modal).to_contain_text("Plan: emergency-rollback · t-developer")
            expect(modal).to_contain_text(f"{ECS_CLUSTER}/{ECS_SERVICE}")

            def field(label):
                return modal.locator(".schema-form-property", has=page.locator(".schema-form-property__label", has_text=label))

            approve = field("Approve").get_by_role("switch")
            approve.click()
            expect(approve).to_have_attribute("aria-checked", "true")
            field("Approver").locator("textarea").fill("oncall-browser")
            field("Reason").locator("textarea").fill("INC-808: bad deploy of t-developer")
            shots.take("approval-form")
            bs.click_until_accepted(page, modal.get_by_role("button", name="Submit", exact=True), f"/flow_runs/{run_id}/resume", "approval")
            expect(modal).to_be_hidden()

        with shots.step("completes"):
            expect(state_badge(page)).to_have_text("Completed", timeout=RUN_TIMEOUT_MS)
            shots.take("completed")
            assert rollout.done.is_set()

    run = stack.api.wait_final(run_id, timeout=10)
    assert run["state"]["type"] == "COMPLETED" and run["name"] == run_name, run["state"]
    assert stack.api.deployment(run["deployment_id"])["name"] == "emergency-rollback-t-developer"
    assert [r["id"] for r in stack.api.runs_of(run["deployment_id"])] == [run_id]
    svc = stack.sandbox.backend("ecs", ECS_REGION).services[f"{ECS_CLUSTER}:{ECS_SERVICE}"]
    assert svc.task_definition == fault["from"]
    report = {a["key"]: a for a in stack.api.artifacts_of(run_id)}.get("emergency-rollback-t-developer")
    assert report and "emergency-rollback t-developer: OK [done]" in report["description"], report
    for k, v in stack.sandbox.env().items():
        monkeypatch.setenv(k, v)
    aws.reset_clients()
    try:  # the durable record says who approved, through which channel
        [rec] = [r for r in statestore.read_records(load_system("t-developer")) if r["flow_run_id"] == run_id]
    finally:
        aws.reset_clients()
    assert (rec["approver"], rec["approved_via"], rec["status"]) == ("oncall-browser", "ui", "verified"), rec
    assert (rec["before"], rec["after"]) == (fault["to"], fault["from"])
