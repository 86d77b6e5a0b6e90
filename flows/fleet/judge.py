"""fleet's judgement (pure): which runbooks may run on a fleet (read-only ones only), whether an assumed
role landed in the target's account, a target's outcome reduced to its result, and the targets' results
combined into findings, one status and the table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flows.fleet.targets import FleetError, Target, TargetResult
from opsbook import registry
from opsbook.findings import Finding, Status, overall
from opsbook.masking import mask, mask_obj

if TYPE_CHECKING:
    from opsbook.report import RunReport

RUNBOOK = "fleet"
TARGET_FLOW = "fleet-target"


def refuse_mutating(runbook: str, params: dict[str, Any] | None = None) -> registry.Runbook:
    """The runbook to fan out, or a clear refusal."""
    if runbook in (RUNBOOK, TARGET_FLOW):
        raise FleetError("refusing to run the fleet over itself; name a read-only runbook (e.g. daily-health)")
    try:
        rb = registry.get(runbook)
    except KeyError as exc:
        raise FleetError(str(exc.args[0])) from None
    if rb.mutating:
        read_only = ", ".join(n for n, r in sorted(registry.RUNBOOKS.items()) if not r.mutating and n != RUNBOOK)
        raise FleetError(f"refusing to fan out {runbook!r}: it changes resources. Mutating runbooks run one system at a "
                         f"time behind their own approval (opsbook run {runbook} --system S). Read-only runbooks: {read_only}")
    if params and "system" in params:
        raise FleetError("params must not set `system`: each target names its system")
    return rb


def check_account(target: Target, account: str) -> None:
    """The account STS put the assumed role in must be the target's."""
    if account != target.account_id:
        raise FleetError(f"AssumeRole({target.role_arn}) returned credentials for account {account}, "
                         f"not {target.account_id}; fix the target's role_arn")


def outcome_fields(target: Target, runbook: str, outcome: RunReport | str, calls: dict[str, int]) -> dict[str, Any]:
    """A target's status, headline, counts and API calls (the fleet's own ``calls`` plus the runbook's);
    ``outcome`` is the runbook's report, or why there is none: UNKNOWN with that reason."""
    by_op = dict(calls)
    if isinstance(outcome, str):
        return {"status": Status.UNKNOWN, "headline": mask(f"{runbook} {target.key}: {outcome}"), "counts": {}, "error": mask(outcome),
                "runbook_flow_run_id": None, "api_calls": sum(by_op.values()), "api_calls_by_operation": by_op}
    for op, n in outcome.api_calls_by_operation.items():
        by_op[op] = by_op.get(op, 0) + n
    return {"status": outcome.status, "headline": mask(outcome.headline()), "counts": outcome.counts(), "error": None,
            "runbook_flow_run_id": outcome.flow_run_id, "api_calls": sum(by_op.values()), "api_calls_by_operation": by_op}


def unknown_result(t: Target, runbook: str, reason: str, run_id: str | None = None) -> TargetResult:
    """A target without a result of its own: UNKNOWN with the reason, never dropped."""
    return TargetResult(target=t.key, account_id=t.account_id, region=t.region, system=t.system, runbook=runbook,
                        status=Status.UNKNOWN, headline=mask(f"{runbook} {t.key}: {reason}"), error=mask(reason), flow_run_id=run_id)


def judge_targets(runbook: str, results: list[TargetResult], limits: dict[str, str]) -> list[Finding]:
    """One finding per target (its status, headline and calls), and one for the shared rate limits."""
    findings = [Finding(check=runbook, resource=r.target, status=r.status, summary=r.headline, value=r.api_calls,
                        details={"worker": r.worker, "host": r.host, "pid": r.pid, "ppid": r.ppid, "flow_run_id": r.flow_run_id, "identity": r.identity,
                                 "counts": r.counts, "rate_limits": r.rate_limits, "calls": r.api_calls_by_operation})
                for r in results]
    made = sorted(n for n, s in limits.items() if s != "kept")
    findings.append(Finding(check="rate-limits", resource=f"{len(limits)} limits", status=Status.OK, value=len(limits),
                            summary=f"{len(limits)} shared rate limits in place ({len(made)} created or repaired now)",
                            details={"limits": limits}))
    return findings


def target_rows(results: list[TargetResult], findings: list[Finding]) -> list[dict[str, Any]]:
    """The table: target, status, calls, worker; and the total (the fleet's status, every call, the workers)."""
    rows = [mask_obj({"target": r.target, "status": r.status.value, "calls": r.api_calls, "worker": r.worker or "-"}) for r in results]
    workers = sorted({r.worker for r in results if r.worker})
    rows.append({"target": f"TOTAL ({len(results)} targets)", "status": overall(findings).value, "calls": sum(r.api_calls for r in results),
                 "worker": f"{len(workers)} worker(s)"})
    return rows


def calls_by_operation(results: list[TargetResult]) -> dict[str, int]:
    by_op: dict[str, int] = {}
    for r in results:
        for op, n in r.api_calls_by_operation.items():
            by_op[op] = by_op.get(op, 0) + n
    return by_op
