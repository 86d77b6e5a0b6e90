"""Throttling (issue 19, item 3): daily-health on a sandbox that answers a share of the AWS calls with each service's own
throttling error (sandbox.server._Throttle) gives the findings of an unthrottled run; where a read still gives up, the
difference is an UNKNOWN with its reason, never a finding gone missing. The battery over seeds and shares is `make chaos`;
one 20 % run is in the normal suite."""

from __future__ import annotations

import json

import pytest

from flows.daily_health.flow import daily_health
from opsbook.findings import Status
from opsbook.report import RunReport

pytestmark = pytest.mark.usefixtures("prefect_harness")

EXTRA = {"functions": 3, "tables": 2}  # tag-only resources: what only discovery finds
BIG = {"functions": 24, "tables": 12, "alarms": 12}  # the battery's HR: 32 functions, 17 tables (discovery pages)


def run(system: str) -> RunReport:
    state = daily_health(system=system, notify=False, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def keyed(report: RunReport) -> dict[tuple[str, str], str]:
    """(check, resource) -> status; a key found more than once keeps every status, sorted."""
    out: dict[tuple[str, str], list[str]] = {}
    for f in report.findings:
        out.setdefault((f.check, f.resource), []).append(f.status.value)
    return {k: ",".join(sorted(v)) for k, v in out.items()}


def resource_of(name: str) -> str:
    """A function's log group is the function's (its log-errors finding is about the function discovery found)."""
    return name.removeprefix("/aws/lambda/")


def compare(base: RunReport, other: RunReport) -> dict[str, list]:
    """How ``other`` differs from ``base``: findings whose status changed to UNKNOWN (with the reason), other changes,
    findings of ``base`` missing from ``other`` (their resource in no UNKNOWN finding, nor their check: a count over a
    check's resources, as "declared alarms", is not made when they are UNKNOWN), and new ones."""
    a, b = keyed(base), keyed(other)
    blind = {resource_of(f.resource) for f in other.findings if f.status is Status.UNKNOWN}
    blind_checks = {f.check for f in other.findings if f.status is Status.UNKNOWN}
    reasons = {(f.check, f.resource): f.summary for f in other.findings if f.status is Status.UNKNOWN}
    out: dict[str, list] = {"unknown": [], "changed": [], "missing": [], "added": []}
    for k, status in a.items():
        if k not in b:
            (out["unknown"] if resource_of(k[1]) in blind or k[0] in blind_checks else out["missing"]).append(k)
        elif b[k] != status:
            (out["unknown"] if b[k] == "UNKNOWN" else out["changed"]).append((k, status, b[k], reasons.get(k, "")))
    out["added"] = [(k, b[k], reasons.get(k, "")) for k in b if k not in a]
    return out


def throttled_run(sandbox, system: str, pct: float, seed: int, services: set[str] | None = None) -> RunReport:
    sandbox.set_throttle_pct(pct, seed, services)
    try:
        return run(system)
    finally:
        sandbox.set_throttle_pct(0)


def test_a_fifth_of_calls_throttled_gives_the_same_findings_and_a_dead_discovery_names_what_it_missed(seeded, sandbox, monkeypatch):
    """HR with tag-only resources: healthy, then 20 % of its calls throttled (the same findings; every attempt counted,
    the retries apart), then tag discovery throttled through every retry (each tag-only resource UNKNOWN with the
    reason, the named ones checked as before). Backoff shortened to keep the suite fast (the retry logic is the same)."""
    from opsbook import resources

    monkeypatch.setenv("OPSBOOK_MAX_BACKOFF", "0.05")
    seeded("hr-resource-optimization", extra=EXTRA)
    base = run("hr-resource-optimization")
    assert base.api_retries == 0 and not [f for f in base.findings if f.status is Status.UNKNOWN]

    report = throttled_run(sandbox, "hr-resource-optimization", 20, seed=3)
    assert sum(sandbox.throttle.throttled.values()) == 0  # turned off again
    assert keyed(report) == keyed(base)
    assert report.api_retries > 0 and report.api_calls == sum(report.api_calls_by_operation.values())
    assert report.api_retries == sum(report.api_retries_by_operation.values()) and report.api_calls > report.api_calls - report.api_retries

    monkeypatch.setenv("OPSBOOK_THROTTLE_RETRIES", "1")
    monkeypatch.setattr(resources, "_sleep", lambda s: None)
    blind = throttled_run(sandbox, "hr-resource-optimization", 100, seed=0, services={"tagging"})
    diff = compare(base, blind)
    assert diff["missing"] == [] and diff["changed"] == [] and all(status == "UNKNOWN" for _, status, _ in diff["added"])
    extras = {f"hr-resource-optimization-extra-fn-{i}" for i in range(3)} | {f"hr-resource-optimization-extra-table-{i}" for i in range(2)}
    unseen = {f.resource: f.summary for f in blind.findings if f.check == "discovery" and f.status is Status.UNKNOWN}
    assert extras <= set(unseen) and all("not seen this run (GetResources: ThrottlingException" in unseen[n] for n in extras)
    named = {(f.check, f.resource): f.status for f in blind.findings if f.check == "lambda-state"}
    assert len(named) == 8 and set(named.values()) == {Status.OK}  # the inventory's functions, checked as before


def row(system: str, pct: float, seed: int, base: RunReport, report: RunReport) -> dict:
    diff = compare(base, report)
    return {"system": system, "pct": pct, "seed": seed, "findings": len(report.findings), "base_findings": len(base.findings),
            "identical": not any(diff.values()), "unknown": len(diff["unknown"]), "changed": len(diff["changed"]),
            "missing": len(diff["missing"]), "added": len(diff["added"]), "api_calls": report.api_calls,
            "added_not_unknown": sum(status != "UNKNOWN" for _, status, _ in diff["added"]),
            "api_retries": report.api_retries, "duration_s": report.duration_s, "base_duration_s": base.duration_s,
            "examples": [str(x)[:300] for x in (diff["missing"] + diff["changed"] + diff["unknown"] + diff["added"])[:4]]}


SYSTEMS = ["todo-app", "hr-resource-optimization"]
SEEDS_20 = [1, 2, 3, 4, 5, 6]
SEEDS_50 = [1, 2, 3]


@pytest.mark.chaos
def test_throttling_battery(seeded, sandbox, capsys, figure):
    rows = []
    for system in SYSTEMS:
        seeded(system, extra=BIG if system.startswith("hr") else EXTRA)
        base = run(system)
        assert not [f for f in base.findings if f.status is Status.UNKNOWN], keyed(base)
        runs = [(20, seed, None) for seed in SEEDS_20] + [(50, seed, None) for seed in SEEDS_50]
        runs += [(100, 0, {"tagging"})] if system.startswith("hr") else []  # tag discovery throttled through every retry
        for pct, seed, services in runs:
            rows.append(row(system, pct, seed, base, throttled_run(sandbox, system, pct, seed, services)))
            with capsys.disabled():
                print("throttling-battery", json.dumps(rows[-1]), flush=True)
    r20, r50, dead = ([r for r in rows if r["pct"] == p] for p in (20, 50, 100))
    summary = (f"throttling battery: 20 %: {sum(r['identical'] for r in r20)}/{len(r20)} runs identical; "
               f"50 %: {sum(r['identical'] for r in r50)}/{len(r50)} identical, {sum(r['unknown'] + r['added'] for r in r50)} UNKNOWN, "
               f"{sum(r['missing'] + r['changed'] for r in r50)} missing; discovery throttled out: "
               f"{sum(r['unknown'] + r['added'] for r in dead)} UNKNOWN, {sum(r['missing'] + r['changed'] for r in dead)} missing; "
               f"retries {sum(r['api_retries'] for r in r20)} of {sum(r['api_calls'] for r in r20)} calls at 20 %, "
               f"{sum(r['api_retries'] for r in r50)} of {sum(r['api_calls'] for r in r50)} at 50 %")
    with capsys.disabled():
        print(summary, flush=True)
    figure(summary)
    assert all(r["identical"] for r in r20), [r for r in r20 if not r["identical"]]
    assert all(r["api_retries"] > 0 for r in r20 + r50)
    bad = [r for r in r50 + dead if r["missing"] or r["changed"] or r["added_not_unknown"]]
    assert not bad, bad  # differences only as UNKNOWN with reasons
