"""Scoped IAM, held by every flow test: each AWS call a runbook makes while a test here runs it is recorded (with its
parameters: opsbook.aws.recording) and, when the test ends, checked against ``opsbook policy RUNBOOK --system X`` for the
system it ran on (opsbook.iam_scope, opsbook.iam_check). A call outside that policy fails the test that made it (an error
at its teardown naming the call), so no flow test can pass on a call the printed policy would refuse on AWS.

Tags the policy's conditions read (``aws:ResourceTag/...``) come from the run's own tagging calls and, for what was
tagged before (the sandbox's seeded tags: discovery by tag), from the sandbox's Resource Groups Tagging API.
"""

from __future__ import annotations

from typing import Any

import pytest

SANDBOX_ACCOUNT = "123456789012"  # moto's default account: what STS answers in the sandbox


class FlowCalls:
    """The AWS calls runbooks made in one test: [(runbook, System, Call, account)], attributed by the Prefect flow run
    making them; the account is the assumed role's (the fleet's targets), else the sandbox's."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, Any, str]] = []
        self._runs: dict[Any, tuple[Any, Any] | None] = {}

    def __call__(self, service: str, operation: str, region: str, params: dict[str, Any]) -> None:
        from prefect.context import FlowRunContext

        from opsbook import aws
        from opsbook.iam_check import Call

        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            return  # a test's own set-up or a task run outside a flow: no runbook to hold it to
        key = ctx.flow_run.id
        if key not in self._runs:
            self._runs[key] = _runbook_and_system(ctx)
        run = self._runs[key]
        if run is not None:
            role = aws.current_role()
            self.calls.append((*run, Call(service, operation, region, dict(params)), role.account if role else SANDBOX_ACCOUNT))


def _runbook_and_system(ctx: Any) -> tuple[Any, Any] | None:
    import importlib

    from opsbook import inventory
    from opsbook.registry import RUNBOOKS

    rb = RUNBOOKS.get(getattr(ctx.flow, "name", None))
    system = (ctx.parameters or {}).get("system")
    if rb is None or not isinstance(system, str):
        return None  # not a runbook (the fleet's per-target flow), or no system parameter
    load = getattr(importlib.import_module(rb.module), "load_system", inventory.load_system)  # as the flow loads it (a test's patch)
    try:
        return rb, load(system)
    except inventory.InventoryError:
        return None


def tag_ledger(calls: list[Any], account: str) -> dict[str, dict[str, str]]:
    """Tags the recorded calls put on resources, by ARN (TagResource, CreateTable's Tags, PutBucketTagging)."""
    tags: dict[str, dict[str, str]] = {}
    for c in calls:
        p = c.params
        if c.service == "dynamodb" and c.operation in ("TagResource", "CreateTable"):
            arn = p.get("ResourceArn") or f"arn:aws:dynamodb:{c.region}:{account}:table/{p.get('TableName')}"
            tags.setdefault(arn, {}).update({t["Key"]: t["Value"] for t in p.get("Tags", [])})
        elif c.service == "s3" and c.operation == "PutBucketTagging":
            tags.setdefault(f"arn:aws:s3:::{p['Bucket']}", {}).update({t["Key"]: t["Value"] for t in p["Tagging"]["TagSet"]})
    return tags


def seeded_tags(endpoint: str, regions: set[str]) -> dict[str, dict[str, str]]:
    import boto3

    out: dict[str, dict[str, str]] = {}
    for region in regions:
        c = boto3.client("resourcegroupstaggingapi", region_name=region, endpoint_url=endpoint)
        for page in c.get_paginator("get_resources").paginate():
            for r in page["ResourceTagMappingList"]:
                out[r["ResourceARN"]] = {t["Key"]: t["Value"] for t in r.get("Tags", [])}
    return out


def key_aliases(endpoint: str, regions: set[str]) -> dict[str, list[str]]:
    """KMS key ARN -> its aliases (kms:ResourceAliases)."""
    import boto3

    out: dict[str, list[str]] = {}
    for region in regions:
        c = boto3.client("kms", region_name=region, endpoint_url=endpoint)
        for page in c.get_paginator("list_aliases").paginate():
            for a in page["Aliases"]:
                if a.get("TargetKeyId"):
                    out.setdefault(f"arn:aws:kms:{region}:{SANDBOX_ACCOUNT}:key/{a['TargetKeyId']}", []).append(a["AliasName"])
    return out


def refusals(recorded: list[tuple[Any, Any, Any, str]], endpoint: str | None) -> list[str]:
    """Every recorded call the runbook's scoped policy for its system refuses, said once each."""
    from opsbook.iam_check import refusal, tag_facts
    from opsbook.iam_scope import scoped_policy

    calls = [c for _, _, c, _ in recorded]
    regions = {c.region for c in calls}
    tags, aliases = tag_ledger(calls, SANDBOX_ACCOUNT), None
    if endpoint and any(s.discovery.tags for _, s, _, _ in recorded):
        tags = {**seeded_tags(endpoint, regions), **tags}
    if endpoint and any(c.service == "kms" for c in calls):
        aliases = key_aliases(endpoint, regions)
    facts = tag_facts(tags, aliases)
    policies: dict[tuple[str, int], dict[str, Any]] = {}
    out: list[str] = []
    for rb, system, call, account in recorded:
        key = (rb.name, id(system))  # one inventory a run (the fleet runs one name in several regions)
        if key not in policies:
            policies[key] = scoped_policy(rb.actions(), system, rb.copies())
        why = refusal(policies[key], call, account, facts)
        if why:
            line = f"{rb.name} --system {system.name}: {why} ({call.service}.{call.operation})"
            if line not in out:
                out.append(line)
    return out


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "outside_scoped_iam(*patterns, reason): calls this test makes on purpose outside the "
                                       "runbook's scoped policy (a parameter naming a resource the inventory does not), as "
                                       "globs over 'ACTION on ARN'")


@pytest.fixture(autouse=True)
def scoped_iam_held(request: pytest.FixtureRequest) -> Any:
    from opsbook import aws
    from opsbook.iam_check import matches

    recorder = FlowCalls()
    with aws.recording(recorder):
        yield recorder
    if not recorder.calls:
        return
    endpoint = request.getfixturevalue("sandbox_server").endpoint if "sandbox" in request.fixturenames else None
    expected = [p for m in request.node.iter_markers("outside_scoped_iam") for p in m.args]
    refused = [r for r in refusals(recorder.calls, endpoint) if not any(matches(f"*: {p} (*", r) for p in expected)]
    if refused:
        pytest.fail("calls outside the runbook's scoped IAM policy (`opsbook policy RUNBOOK --system X`; opsbook/iam_scope.py):\n  "
                    + "\n  ".join(refused[:20]), pytrace=False)
