"""remediate-opensearch-red against the sandbox (moto + the OpenSearch test double): a red cluster whose shards
failed allocation too many times is retried behind approval and verified green; a disk-full red, a lost primary and
a yellow-by-design single node are explained and left alone; a green cluster plans nothing."""

from __future__ import annotations

import boto3
import pytest

from flows.remediate_opensearch_red import flow as ror
from flows.remediate_opensearch_red import judge
from flows.remediate_opensearch_red.flow import remediate_opensearch_red
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import OpenSearchDomain
from opsbook.mutation import statestore
from opsbook.mutation.core import Identity, Plan, Refused, ShellApproval, shell_approval
from opsbook.mutation.session import check_drift
from opsbook.report import RunReport
from sandbox.faults import apply_fault
from sandbox.opensearch_faults import apply_scenario
from tasks.opensearch import parse_explain, read_cluster_allocation, read_domain_status, read_restore_points

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR, LEH = "hr-resource-optimization", "leh"
HR_DOMAIN, LEH_DOMAIN = "hr-resource-optimization-team2", "leh-cases"
IDENTITY = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/moto", region="us-east-2")


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = remediate_opensearch_red(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    assert report.undeclared_iam_actions == []
    policy = set(policy_for(ror.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used <= policy, used - policy
    return report


def findings(report: RunReport, check: str) -> list:
    return [f for f in report.findings if f.check == check]


def one(report: RunReport, check: str, resource: str):
    hits = [f for f in report.findings if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, report.findings)
    return hits[0]


def target(inv, name: str) -> judge.Target:
    d = next(d for d in inv.opensearch_domains if d.name == name)
    info = read_domain_status.fn(inv, d)
    return judge.Target(domain=d, info=info, cluster=read_cluster_allocation.fn(inv, d, info, 10))


# --- the scenario that is fixed --------------------------------------------------------------


def test_failed_allocation_dry_run_then_execute_retries_verifies_green_records_and_rerun_plans_nothing(seeded, sandbox, capfd):
    hr = seeded(HR)
    apply_scenario(sandbox, hr, "failed-allocation", recovery_s=0.8)  # copies stay INITIALIZING a while
    # the dry run plans a retry and changes nothing
    report = run(HR)
    assert report.outcome == "planned" and report.dry_run and report.status is Status.CRIT  # the cluster is red
    [action] = report.plan["actions"]
    assert (action["kind"], action["resource"], action["iam_action"], action["reversible"]) == (
        "opensearch-retry-failed", HR_DOMAIN, "es:ESHttpPost", False)
    assert action["current"].startswith("red; 2 copy(ies) failed allocation: employee_profiles[0]p, employee_profiles[0]r")
    assert "max_retry" in action["evidence"] and action["target"].endswith("employee_profiles[0]p, employee_profiles[0]r")
    health = one(report, "opensearch-health", HR_DOMAIN)
    assert health.status is Status.CRIT and "failed-max-retries (employee_profiles[0]p)" in health.summary
    primary = one(report, "opensearch-shard", f"{HR_DOMAIN}/employee_profiles[0]p")
    assert primary.status is Status.CRIT and primary.summary.startswith("failed-max-retries: failed allocation 5 time(s)")
    assert one(report, "opensearch-shard", f"{HR_DOMAIN}/employee_profiles[0]r").summary.startswith("waits-for-primary")
    assert {f.status for f in findings(report, "opensearch-disk")} == {Status.OK} and not findings(report, "opensearch-storage")
    assert "2 x r6g.large.search, EBS gp3 100 GiB" in one(report, "opensearch-domain", HR_DOMAIN).summary
    assert sandbox.opensearch.cluster_status(HR_DOMAIN) == "red" and report.records == []
    # 1 DescribeDomain; health, _cat/allocation, _cat/indices, _cat/shards; one explain per distinct shard (p, r)
    assert report.api_calls_by_operation == {"sts:GetCallerIdentity": 1, "opensearch:DescribeDomain": 1,
                                             "es:ESHttpGet": 4, "es:ESHttpPost": 2}

    # executed
    report = run(HR, dry_run=False, approval="yes", approver="oncall-kim", settle_timeout_s=20, poll_s=0.2)
    assert report.outcome == "done" and report.status is Status.OK, report.findings
    assert sandbox.opensearch.cluster_status(HR_DOMAIN) == "green"
    [rec] = report.records
    assert (rec["status"], rec["approver"], rec["resource"]) == ("verified", "oncall-kim", HR_DOMAIN)
    assert rec["before"].startswith("red; 2 copy(ies)") and "red -> green" in rec["detail"]
    retry = one(report, "opensearch-retry", HR_DOMAIN)
    assert retry.status is Status.OK and retry.summary.startswith("red -> green after")
    assert one(report, "opensearch-health", HR_DOMAIN).summary.startswith("cluster green")  # the state after, not before
    assert not findings(report, "opensearch-shard")
    assert statestore.read_records(hr)[0]["resource"] == HR_DOMAIN
    err = capfd.readouterr().err
    assert "opsbook: remediate-opensearch-red: 0/1 done after" in err and "retried copy(ies) not started" in err

    again = run(HR, dry_run=False, approval="yes")
    assert again.outcome == "nothing-to-do" and again.status is Status.OK and again.plan["actions"] == []
    assert again.plan["unchanged"] == [f"{HR_DOMAIN}: cluster green"] and again.records == []
    assert again.api_calls_by_operation == {"sts:GetCallerIdentity": 1, "opensearch:DescribeDomain": 1, "es:ESHttpGet": 2,
                                            "dynamodb:Query": 1}  # the steps a killed run left open (none)

    undo = run(HR, undo_run=report.flow_run_id, dry_run=False, approval="yes")  # a retry has no inverse: said, nothing done
    assert undo.outcome == "nothing-to-do" and undo.plan["actions"] == [] and undo.records == []
    assert undo.plan["cannot"] == [f"{HR_DOMAIN}: opensearch-retry-failed has no undo: a retry only let the allocator try again; "
                                   "there is nothing to put back"]


# --- the scenarios that must be left alone --------------------------------------------------------


def test_disk_full_red_is_not_retried_and_storage_is_recommended(seeded, sandbox):
    hr = seeded(HR)
    apply_scenario(sandbox, hr, "disk-full", used_pct=96)
    report = run(HR, dry_run=False, approval="yes")
    assert report.outcome == "nothing-to-do" and report.plan["actions"] == [] and report.records == []
    assert report.status is Status.CRIT  # still red, and the run says why
    assert any("retry would not place them (disk-watermark)" in c for c in report.plan["cannot"])
    shard = one(report, "opensearch-shard", f"{HR_DOMAIN}/employee_profiles[0]p")
    assert shard.status is Status.CRIT and shard.summary.startswith("disk-watermark: disk watermark on 2/2 node(s) (and it failed")
    assert "high watermark" in shard.summary
    disks = findings(report, "opensearch-disk")
    assert len(disks) == 2 and all(f.status is Status.CRIT and "flood stage" in f.summary for f in disks)
    storage = one(report, "opensearch-storage", HR_DOMAIN)
    # fullest node: 96 GiB used; target 70 % (warn 85 - 15) -> 137.1 GiB -> 140 GiB per node
    assert storage.status is Status.CRIT and storage.value == 140
    assert storage.details["volume_size_gib"] == 100 and storage.details["proposed_instance_count"] == 3
    assert (f"aws opensearch update-domain-config --domain-name {HR_DOMAIN} --region us-east-2 "
            "--ebs-options EBSEnabled=true,VolumeType=gp3,VolumeSize=140") in storage.summary
    assert "volume_size = 140" in storage.summary and "NOT applied" in storage.summary
    assert sandbox.opensearch.cluster_status(HR_DOMAIN) == "red"  # nothing was touched
    es = boto3.client("opensearch", region_name="us-east-2", endpoint_url=sandbox.endpoint)
    assert es.describe_domain(DomainName=HR_DOMAIN)["DomainStatus"]["EBSOptions"]["VolumeSize"] == 100


def test_single_node_yellow_is_explained_and_left_alone(seeded, sandbox):
    leh = seeded(LEH)
    apply_scenario(sandbox, leh, "single-node-yellow")
    assert sandbox.opensearch.cluster_status(LEH_DOMAIN) == "yellow"
    t = target(leh, LEH_DOMAIN)
    plan = judge.decide(leh, IDENTITY, [t])
    assert plan.actions == [] and plan.unchanged == [f"{LEH_DOMAIN}: yellow by design (1 data node(s) cannot hold the replicas); left alone"]
    out = {(f.check, f.resource): f for f in judge.judge_domain(leh, t)}
    health = out[("opensearch-health", LEH_DOMAIN)]
    assert health.summary.startswith("cluster yellow by design") and "number_of_replicas to 0" in health.summary
    shard = out[("opensearch-shard", f"{LEH_DOMAIN}/evidence[0]r")]
    assert shard.status is Status.OK and shard.summary.startswith("too-few-nodes: 1 data node(s)")


def test_lost_primary_recommends_the_exact_restore(seeded, sandbox):
    hr = seeded(HR)
    apply_scenario(sandbox, hr, "primary-lost")
    t = target(hr, HR_DOMAIN)
    t.restore = read_restore_points.fn(hr, t.domain, t.info.endpoint, ["employee_profiles"])
    plan = judge.decide(hr, IDENTITY, [t])
    assert plan.actions == [] and any("restoring lost indices" in n for n in plan.notes)
    out = {(f.check, f.resource): f for f in judge.judge_domain(hr, t)}
    assert out[("opensearch-health", HR_DOMAIN)].status is Status.CRIT
    assert out[("opensearch-shard", f"{HR_DOMAIN}/employee_profiles[0]p")].summary.startswith("no-valid-copy")
    restore = out[("opensearch-restore", f"{HR_DOMAIN}/employee_profiles")]
    assert restore.status is Status.CRIT and "NOT applied" in restore.summary
    assert ('`POST _snapshot/backup_repo/snapshot_sandbox/_restore {"indices": "employee_profiles", "ignore_unavailable": true, '
            '"include_global_state": false, "rename_pattern": "(.+)", "rename_replacement": "restored_$1"}`') in restore.summary


def test_the_demo_fault_and_no_snapshot_repository(seeded, sandbox):
    """sandbox/faults.py's opensearch-red on leh, whose inventory names no snapshot repository."""
    leh = seeded(LEH)
    apply_fault(sandbox, leh, "opensearch-red")
    t = target(leh, LEH_DOMAIN)
    plan = judge.decide(leh, IDENTITY, [t])
    assert plan.actions == [] and plan.cannot == []
    out = judge.judge_domain(leh, t)
    restore = [f for f in out if f.check == "opensearch-restore"]
    assert [f.resource for f in restore] == [f"{LEH_DOMAIN}/evidence"]
    assert "the inventory names no snapshot_repository" in restore[0].summary and "GET _snapshot/_all" in restore[0].summary


def test_systems_without_a_domain_have_nothing_to_check(seeded):
    seeded("t-developer")
    report = run("t-developer", dry_run=False, approval="yes")
    assert report.outcome == "nothing-to-do" and report.status is Status.OK
    [f] = report.findings
    assert (f.check, f.status) == ("opensearch-domains", Status.OK) and "nothing to check" in f.summary
    assert report.api_calls_by_operation == {"sts:GetCallerIdentity": 1, "dynamodb:Query": 1}  # and the open steps of a killed run: none


# --- failures, UNKNOWN, drift, processing (task level: no flow run needed) ---------------------------


def test_unreachable_cluster_is_unknown_and_plans_nothing(seeded, sandbox):
    hr = seeded(HR)
    apply_fault(sandbox, hr, "opensearch-unreachable")
    t = target(hr, HR_DOMAIN)
    out = judge.judge_domain(hr, t)
    health = next(f for f in out if f.check == "opensearch-health")
    assert health.status is Status.UNKNOWN and "unreachable" in health.summary
    plan = judge.decide(hr, IDENTITY, [t])
    assert plan.actions == [] and "could not be read" in plan.notes[0]


def test_missing_domain_and_failed_explain(seeded, sandbox):
    hr = seeded(HR)
    ghost = OpenSearchDomain(name="no-such-domain")
    info = read_domain_status.fn(hr, ghost)
    assert info.exists is False
    [f] = judge.judge_domain(hr, judge.Target(domain=ghost, info=info))
    assert f.status is Status.CRIT and "does not exist" in f.summary
    bad = parse_explain({}).model_copy(update={"error": "cluster API answered 500"})
    assert judge.classify(bad, 2).cause is judge.Cause.UNKNOWN


def test_processing_domain_is_not_retried(seeded, sandbox):
    hr = seeded(HR)
    apply_scenario(sandbox, hr, "failed-allocation")
    apply_scenario(sandbox, hr, "domain-processing")
    t = target(hr, HR_DOMAIN)
    assert t.info.processing
    plan = judge.decide(hr, IDENTITY, [t])
    assert plan.actions == [] and "configuration change is in progress" in plan.cannot[0]
    assert next(f for f in judge.judge_domain(hr, t) if f.check == "opensearch-domain").status is Status.WARN


def test_drift_between_plan_and_act_refuses(seeded, sandbox):
    hr = seeded(HR)
    apply_scenario(sandbox, hr, "failed-allocation")
    t = target(hr, HR_DOMAIN)
    plan = judge.decide(hr, IDENTITY, [t])
    steps = ror.appliers({HR_DOMAIN: t.info.endpoint})
    check_drift.fn(hr, plan, steps)  # unchanged: passes
    sandbox.opensearch.heal(HR_DOMAIN)  # someone fixed it meanwhile
    with pytest.raises(Refused, match="changed since the plan was made"):
        check_drift.fn(hr, plan, steps)
    assert ror.appliers({})[judge.RETRY_KIND].read(hr, HR_DOMAIN) == judge.failed_state("green", [])  # a re-run finds the endpoint
    assert isinstance(plan, Plan)


def test_explanations_are_bounded(seeded, sandbox):
    hr = seeded(HR)
    for index in ("employee_profiles", "project_requirements"):
        sandbox.opensearch.make_red(HR_DOMAIN, index, reason="ALLOCATION_FAILED")
    d = hr.opensearch_domains[0]
    cluster = read_cluster_allocation.fn(hr, d, read_domain_status.fn(hr, d), 3)
    assert [s.key for s in cluster.shards] == ["employee_profiles[0]p", "project_requirements[0]p", "employee_profiles[0]r"]
    assert cluster.unexplained == ["project_requirements[0]r"]
    assert cluster.failed_copies == sorted(f"{i}[0]{p}" for i in ("employee_profiles", "project_requirements") for p in "pr")
