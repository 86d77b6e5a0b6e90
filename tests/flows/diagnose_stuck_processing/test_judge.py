"""diagnose-stuck-processing's verdict on hand-made findings: each of the seed's causes, their order, and the edges."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flows.diagnose_stuck_processing.judge import IDEMPOTENCY, REPROCESS, VERDICT, first_failure, reprocess_plan, verdict
from opsbook.findings import Finding, Status
from opsbook.mutation.core import Identity, Plan
from opsbook.processing import BACKLOG, PROVIDER, TRIGGER, UPLOADS, WORKER_ERRORS

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)


def f(check, status=Status.OK, resource="r", summary="s", **details):
    return Finding(check=check, resource=resource, status=status, summary=summary, details=details)


OK = [f(TRIGGER, details_state="Enabled", mappings=1), f(BACKLOG), f(UPLOADS), f(WORKER_ERRORS, external=0, internal=0), f(PROVIDER), f("dlq-depth")]
MISSING = [{"key": "uploads/u/case-1/ev-1.pdf", "case_id": "case-1", "evidence_id": "ev-1", "uploaded_at": T0.isoformat()}]


def replace(findings, new):
    return [x for x in findings if x.check != new.check] + [new]


def cause(findings, changed=None):
    v = verdict("leh", "ap-northeast-2", findings, changed or {}, "OpenAI")
    assert v.check == VERDICT
    return v.details["cause"], v


def test_all_ok_is_nothing_stuck():
    c, v = cause(OK)
    assert (c, v.status, v.details["next"]) == ("none", Status.OK, [])


def test_trigger_disabled_comes_first_with_the_command_to_re_enable_it():
    findings = replace(OK, f(TRIGGER, Status.CRIT, summary="w's trigger from q is Disabled", uuid="u-1", mappings=1, queue="q", function="w"))
    findings = replace(findings, f(WORKER_ERRORS, Status.WARN, internal=3, external=0, first_internal_at=T0.isoformat()))
    c, v = cause(findings)
    assert (c, v.status) == ("trigger-off", Status.CRIT) and "update-event-source-mapping --uuid u-1 --enabled --region ap-northeast-2" in v.details["next"][0]


def test_reserved_concurrency_zero_is_named_before_anything_but_the_trigger():
    v = verdict("leh", "ap-northeast-2", replace(OK, f(BACKLOG, Status.CRIT)), {}, "OpenAI", {"w": 0, "other": None})
    assert (v.details["cause"], v.status) == ("throttled", Status.CRIT) and "delete-function-concurrency --function-name w" in v.details["next"][0]
    assert verdict("leh", "r", OK, {}, "OpenAI", {"w": 5}).details["cause"] == "none"
    assert verdict("leh", "r", OK, {}, "OpenAI", {"w": "GetFunctionConcurrency: access denied"}).details["cause"] == "none"


def test_missing_mapping_says_create_it():
    c, v = cause(replace(OK, f(TRIGGER, Status.CRIT, mappings=0, queue="q", function="w")))
    assert c == "trigger-off" and v.details["next"][0].startswith("create the event source mapping from q to w")


def test_breaker_pause_points_to_the_breakers_reset():
    c, v = cause(replace(OK, f(TRIGGER, Status.WARN, summary="paused by the circuit breaker", breaker={"state": "OPEN"})))
    assert (c, v.status) == ("breaker-pause", Status.WARN) and "--param mode=reset --param resume_service=true" in v.details["next"][0]


def test_provider_degraded_or_its_errors_dominating_is_an_external_outage():
    c, v = cause(replace(OK, f(PROVIDER, Status.WARN, summary="OpenAI reports major")))
    assert c == "external-outage" and v.details["next"][0].startswith("announce it: OpenAI is failing") and "dlq-redrive" in v.details["next"][1]
    c, _ = cause(replace(OK, f(WORKER_ERRORS, Status.WARN, external=5, internal=5)))
    assert c == "external-outage"
    c, _ = cause(replace(OK, f(WORKER_ERRORS, Status.WARN, external=4, internal=5, first_internal_at=T0.isoformat())))
    assert c == "code-bug"


def test_code_bug_says_deploy_the_fix_first_until_the_worker_changed_after_the_first_failure():
    findings = replace(OK, f(WORKER_ERRORS, Status.WARN, internal=7, external=0, first_internal_at=T0.isoformat(), internal_sample=["KeyError: 'pages'"]))
    findings = replace(findings, f(UPLOADS, Status.WARN, missing_items=MISSING, oldest_missing_at=(T0 + timedelta(minutes=5)).isoformat()))
    c, v = cause(findings, {"w": T0 - timedelta(days=2)})
    assert c == "code-bug" and v.details["next"][0].startswith("deploy the fix first (the worker last changed at 2026-12-02 10:00 UTC")
    assert "ev-1" in v.details["next"][1] and v.value == 1 and v.details["first_failure"] == T0.isoformat() and not v.details["fixed"]
    c, v = cause(findings, {"w": T0 + timedelta(hours=1)})
    assert v.details["fixed"]
    assert v.details["next"][0].startswith("w changed at 2026-12-04 11:00 UTC, after the failures began (2026-12-04 10:00 UTC): reprocess")
    c, v = cause(findings, {"w": T0})  # exactly at the first failure: not after it
    assert v.details["next"][0].startswith("deploy the fix first")
    c, v = cause(findings, {"w": None})
    assert v.details["next"][0].startswith("deploy the fix first:")


def test_dlq_messages_with_nothing_failing_now_is_transient_and_points_to_the_redrive():
    c, v = cause(replace(OK, f("dlq-depth", Status.WARN, summary="3 messages")))
    assert c == "transient" and v.details["next"][0].endswith("opsbook run dlq-redrive --system leh --execute")


def test_an_old_queue_with_nothing_erroring_is_stalled():
    c, v = cause(replace(OK, f(BACKLOG, Status.CRIT, summary="q: oldest message 90 min old")))
    assert (c, v.status) == ("stalled", Status.CRIT) and "reserved concurrency" in v.details["next"][0]


def test_reads_that_failed_with_nothing_else_wrong_is_unknown_never_ok():
    c, v = cause(replace(OK, f(BACKLOG, Status.UNKNOWN, summary="could not be read: denied")))
    assert (c, v.status) == ("unknown", Status.UNKNOWN)
    c, v = cause([])
    assert (c, v.status) == ("unknown", Status.UNKNOWN)


def test_first_failure_is_the_earliest_own_error_or_unprocessed_upload():
    assert first_failure(OK) is None
    later = (T0 + timedelta(hours=1)).isoformat()
    assert first_failure([f(WORKER_ERRORS, first_internal_at=later), f(UPLOADS, oldest_missing_at=T0.isoformat())]) == T0


def test_uploads_without_a_result_while_the_queue_is_empty_never_became_jobs():
    findings = replace(OK, f(UPLOADS, Status.WARN, summary="5 of 8 uploads have no result", missing_items=MISSING))
    findings = replace(findings, f(BACKLOG, visible=0, in_flight=0))
    c, v = cause(findings)
    assert (c, v.status) == ("not-enqueued", Status.WARN) and "enqueue" in v.details["next"][0]
    c, _ = cause(replace(findings, f(BACKLOG, visible=3, in_flight=0)))  # waiting, young: not yet judged old, still not moving
    assert c == "stalled"


# --- the plan ------------------------------------------------------------------------------------------------------

KEYS = ["case_id", "evidence_id"]


def plan_for(cause, fixed=False, stuck=MISSING, nxt=("do this",), max_items=50):
    v = f(VERDICT, details_cause=None, cause=cause, fixed=fixed, stuck_evidence=list(stuck), next=list(nxt))
    base = Plan(runbook="diagnose-stuck-processing", system="leh", identity=Identity(account="123456789012", region="ap-northeast-2", arn="arn:x"))
    return reprocess_plan(base, v, KEYS, "POST https://api/admin/reprocess-evidence {evidence_id}", "HTTP POST", max_items, "leh")


def test_a_fixed_code_bug_plans_one_reprocess_step_per_evidence_once_each():
    stuck = MISSING + MISSING + [{**MISSING[0], "evidence_id": "ev-2", "key": "uploads/u/case-1/ev-2.pdf"}]
    p = plan_for("code-bug", fixed=True, stuck=stuck)
    assert [(a.kind, a.resource, a.current, a.target, a.reversible) for a in p.actions] == [
        (REPROCESS, "case-1/ev-1", "no result", "result", False), (REPROCESS, "case-1/ev-2", "no result", "result", False)]
    assert IDEMPOTENCY in p.notes and any("dlq-redrive" in n for n in p.notes)


def test_the_plan_is_bounded_and_says_what_is_left():
    stuck = [{**MISSING[0], "evidence_id": f"ev-{i}"} for i in range(5)]
    p = plan_for("code-bug", fixed=True, stuck=stuck, max_items=3)
    assert len(p.actions) == 3 and "2 more stuck evidences are left for the next run" in p.notes[0]


def test_no_step_until_the_fix_is_deployed_and_transient_points_to_dlq_redrive():
    p = plan_for("code-bug", fixed=False, nxt=("deploy the fix first: hot-fix the worker",))
    assert p.actions == [] and p.notes == ["no reprocess-evidence step: deploy the fix first: hot-fix the worker"]
    p = plan_for("transient")
    assert p.actions == [] and p.notes == ["transient: redrive the DLQ, not a reprocess: opsbook run dlq-redrive --system leh --execute"]
    assert plan_for("trigger-off").notes == ["trigger-off: do this"] and plan_for("none", nxt=()).notes == ["none: nothing to reprocess"]


def test_a_failing_processing_result_with_nothing_else_wrong_is_named_never_nothing_stuck():
    trig = f(TRIGGER, Status.WARN, function="w", queue="q", last_processing_result="PROBLEM: Function call failed")
    c, v = cause(replace(OK, trig))
    assert (c, v.status) == ("trigger-failing", Status.WARN) and "execution role" in v.details["next"][0]
    c, _ = cause(replace(replace(OK, trig), f(WORKER_ERRORS, Status.WARN, internal=2, external=0, first_internal_at=T0.isoformat())))
    assert c == "code-bug"
