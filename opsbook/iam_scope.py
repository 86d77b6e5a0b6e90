"""Scoped IAM: the policy a runbook needs for one system, naming that system's resources.

Every action a task declares (opsbook.iam) has an entry in ``ACTION_RESOURCES``: the resource types the IAM Service
Authorization Reference gives it, or ``()`` where the action supports no resource-level permission (most List* and
some Describe*: it takes ``"*"``). ``scoped_policy`` turns a runbook's actions into statements grouped by resource
type:

- the inventory's resources (``inventory_names``), as ARNs in the inventory's region and partition, in its
  ``account_id`` or, where none is pinned, the policy variable ``${aws:PrincipalAccount}``;
- resources found by tag (``discovery.tags``): a condition on ``aws:ResourceTag/<key>`` where the service supports
  one, else any name, said in the statement's Sid (``...AnyNameTagDiscoveryWithoutTagCondition``);
- the runbook's own per-run copies (``Copies``, declared by the flow module as ``IAM_COPIES``): name patterns, and a
  tag condition where the runbook tags them and the service supports it. Destructive actions (``DESTRUCTIVE``) are
  granted only there, never on the inventory's resources nor on ``"*"``.

Without a system (``pattern_policy``) the same statements use each resource type's pattern with every region,
account and name as ``*`` (copies keep their name patterns).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from opsbook.inventory import System

PRINCIPAL_ACCOUNT = "${aws:PrincipalAccount}"

# resource type -> its ARN in the Service Authorization Reference, with {partition} {region} {account} and one {name}
# (the reference's ${TableName}, ${FunctionName}, ...; for an ECS service "cluster/service", for an object "bucket/key")
RESOURCE_TYPES: dict[str, str] = {
    "dynamodb:table": "arn:{partition}:dynamodb:{region}:{account}:table/{name}",
    "dynamodb:index": "arn:{partition}:dynamodb:{region}:{account}:table/{name}/index/*",
    "dynamodb:backup": "arn:{partition}:dynamodb:{region}:{account}:table/{name}/backup/*",
    "lambda:function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "lambda:event-source-mapping": "arn:{partition}:lambda:{region}:{account}:event-source-mapping:{name}",
    "sqs:queue": "arn:{partition}:sqs:{region}:{account}:{name}",
    "logs:log-group": "arn:{partition}:logs:{region}:{account}:log-group:{name}",
    "ecs:service": "arn:{partition}:ecs:{region}:{account}:service/{name}",
    "s3:bucket": "arn:{partition}:s3:::{name}",
    "s3:object": "arn:{partition}:s3:::{name}",
    "es:domain": "arn:{partition}:es:{region}:{account}:domain/{name}",
    "sns:topic": "arn:{partition}:sns:{region}:{account}:{name}",
    "kms:key": "arn:{partition}:kms:{region}:{account}:key/{name}",
    "secretsmanager:secret": "arn:{partition}:secretsmanager:{region}:{account}:secret:{name}",
    "cognito-idp:userpool": "arn:{partition}:cognito-idp:{region}:{account}:userpool/{name}",
    "rds:db": "arn:{partition}:rds:{region}:{account}:db:{name}",
    "rds:snapshot": "arn:{partition}:rds:{region}:{account}:snapshot:{name}",
    "ecr:repository": "arn:{partition}:ecr:{region}:{account}:repository/{name}",
    "acm:certificate": "arn:{partition}:acm:{region}:{account}:certificate/{name}",
    "iam:role": "arn:{partition}:iam::{account}:role/{name}",
    "iam:policy": "arn:{partition}:iam::{account}:policy/{name}",
    "apigateway:restapis": "arn:{partition}:apigateway:{region}::/restapis{name}",
    "application-autoscaling:scalable-target": "arn:{partition}:application-autoscaling:{region}:{account}:scalable-target/{name}",
}

# resource types whose actions take an aws:ResourceTag/<key> condition (S3 buckets and objects do not)
TAG_CONDITIONS = frozenset({"dynamodb:table", "dynamodb:index", "lambda:function", "sqs:queue", "logs:log-group", "ecs:service",
                            "es:domain", "sns:topic", "kms:key", "secretsmanager:secret", "cognito-idp:userpool", "rds:db",
                            "ecr:repository"})

# the resource types tag discovery finds (opsbook.resources.RESOURCE_TYPES) -> the types their actions act on
DISCOVERED = {"dynamodb:table": "dynamodb:table", "dynamodb:index": "dynamodb:table", "dynamodb:backup": "dynamodb:table",
              "lambda:function": "lambda:function", "sqs:queue": "sqs:queue", "logs:log-group": "logs:log-group",
              "ecs:service": "ecs:service", "s3:bucket": "s3:bucket", "s3:object": "s3:bucket", "es:domain": "es:domain"}

_T, _I, _B = "dynamodb:table", "dynamodb:index", "dynamodb:backup"
_F, _Q, _LG, _SVC = "lambda:function", "sqs:queue", "logs:log-group", "ecs:service"
_BK, _OB, _D, _SEC = "s3:bucket", "s3:object", "es:domain", "secretsmanager:secret"

# action -> the resource types it is authorised on; () = no resource-level permission ("*")
ACTION_RESOURCES: dict[str, tuple[str, ...]] = {
    "acm:DescribeCertificate": ("acm:certificate",), "acm:ListCertificates": (),
    "apigateway:GET": ("apigateway:restapis",),
    "application-autoscaling:DescribeScalableTargets": (),
    "application-autoscaling:RegisterScalableTarget": ("application-autoscaling:scalable-target",),
    "ce:GetCostAndUsage": (),
    "cloudwatch:DescribeAlarms": (), "cloudwatch:GetMetricData": (), "cloudwatch:ListMetrics": (),
    "cognito-idp:AdminDisableUser": ("cognito-idp:userpool",), "cognito-idp:AdminEnableUser": ("cognito-idp:userpool",),
    "cognito-idp:AdminGetUser": ("cognito-idp:userpool",), "cognito-idp:AdminUserGlobalSignOut": ("cognito-idp:userpool",),
    "cognito-idp:ListUserPools": (),
    "dynamodb:BatchGetItem": (_T,), "dynamodb:BatchWriteItem": (_T,), "dynamodb:ConditionCheckItem": (_T,),
    "dynamodb:CreateBackup": (_T,), "dynamodb:CreateTable": (_T,), "dynamodb:DeleteItem": (_T,), "dynamodb:DeleteTable": (_T,),
    "dynamodb:DescribeBackup": (_B,), "dynamodb:DescribeContinuousBackups": (_T,), "dynamodb:DescribeTable": (_T,),
    "dynamodb:DescribeTimeToLive": (_T,), "dynamodb:GetItem": (_T,), "dynamodb:ListBackups": (), "dynamodb:ListTables": (),
    "dynamodb:ListTagsOfResource": (_T,), "dynamodb:PutItem": (_T,), "dynamodb:Query": (_T, _I),
    "dynamodb:RestoreTableFromBackup": (_B, _T), "dynamodb:RestoreTableToPointInTime": (_T,), "dynamodb:Scan": (_T, _I),
    "dynamodb:TagResource": (_T,), "dynamodb:UpdateContinuousBackups": (_T,), "dynamodb:UpdateItem": (_T,),
    "dynamodb:UpdateTable": (_T,), "dynamodb:UpdateTimeToLive": (_T,),
    "ec2:DescribeSecurityGroups": (),
    "ecr:DescribeImageScanFindings": ("ecr:repository",), "ecr:DescribeImages": ("ecr:repository",),
    "ecs:DescribeServices": (_SVC,), "ecs:ListTaskDefinitions": (), "ecs:UpdateService": (_SVC,),
    "elasticloadbalancing:DescribeTargetGroups": (), "elasticloadbalancing:DescribeTargetHealth": (),
    "es:DescribeDomain": (_D,), "es:DescribeDomains": (_D,), "es:ESHttpDelete": (_D,), "es:ESHttpGet": (_D,),
    "es:ESHttpPost": (_D,), "es:ESHttpPut": (_D,),
    "iam:GetPolicy": ("iam:policy",), "iam:GetPolicyVersion": ("iam:policy",), "iam:GetRole": ("iam:role",),
    "iam:GetRolePolicy": ("iam:role",), "iam:ListAttachedRolePolicies": ("iam:role",), "iam:ListRolePolicies": ("iam:role",),
    "iam:ListRoles": (),
    "kms:Decrypt": ("kms:key",), "kms:DisableKeyRotation": ("kms:key",), "kms:EnableKeyRotation": ("kms:key",),
    "kms:GenerateDataKey": ("kms:key",), "kms:GetKeyRotationStatus": ("kms:key",), "kms:ListAliases": (),
    "lambda:GetAlias": (_F,), "lambda:GetFunction": (_F,), "lambda:GetFunctionConcurrency": (_F,),
    "lambda:GetFunctionConfiguration": (_F,), "lambda:ListEventSourceMappings": (), "lambda:ListVersionsByFunction": (_F,),
    "lambda:UpdateAlias": (_F,), "lambda:UpdateEventSourceMapping": ("lambda:event-source-mapping",),
    "lambda:UpdateFunctionConfiguration": (_F,),
    "logs:DeleteRetentionPolicy": (_LG,), "logs:DescribeLogGroups": (), "logs:FilterLogEvents": (_LG,),
    "logs:PutRetentionPolicy": (_LG,),
    "rds:DescribeDBInstances": ("rds:db",), "rds:DescribeDBSnapshots": ("rds:db", "rds:snapshot"),
    "s3:CreateBucket": (_BK,), "s3:DeleteBucket": (_BK,), "s3:DeleteBucketPolicy": (_BK,), "s3:DeleteObject": (_OB,),
    "s3:GetBucketPolicy": (_BK,), "s3:GetBucketTagging": (_BK,), "s3:GetBucketVersioning": (_BK,),
    "s3:GetLifecycleConfiguration": (_BK,), "s3:GetObject": (_OB,), "s3:GetObjectVersion": (_OB,),
    "s3:GetReplicationConfiguration": (_BK,), "s3:ListBucket": (_BK,), "s3:ListBucketVersions": (_BK,),
    "s3:PutBucketPolicy": (_BK,), "s3:PutBucketTagging": (_BK,), "s3:PutBucketVersioning": (_BK,),
    "s3:PutLifecycleConfiguration": (_BK,), "s3:PutObject": (_OB,),
    "secretsmanager:DescribeSecret": (_SEC,), "secretsmanager:GetSecretValue": (_SEC,), "secretsmanager:PutSecretValue": (_SEC,),
    "secretsmanager:RotateSecret": (_SEC,), "secretsmanager:UpdateSecretVersionStage": (_SEC,),
    "servicequotas:ListAWSDefaultServiceQuotas": (), "servicequotas:ListServiceQuotas": (),
    "sns:GetTopicAttributes": ("sns:topic",), "sns:Publish": ("sns:topic",),
    "sqs:ChangeMessageVisibility": (_Q,), "sqs:DeleteMessage": (_Q,), "sqs:GetQueueAttributes": (_Q,), "sqs:GetQueueUrl": (_Q,),
    "sqs:ListQueueTags": (_Q,), "sqs:ReceiveMessage": (_Q,), "sqs:SendMessage": (_Q,), "sqs:SetQueueAttributes": (_Q,),
    "sts:AssumeRole": ("iam:role",), "sts:GetCallerIdentity": (),
    "tag:GetResources": (),
}

# granted only on a runbook's own copies (Copies), never on the inventory's resources or "*"
DESTRUCTIVE = frozenset({"dynamodb:DeleteTable", "s3:DeleteBucket", "s3:DeleteObject", "es:ESHttpDelete"})

# resource types whose names the inventory does not hold (ids AWS makes): any name, said in the Sid
ANY_NAME = {"iam:role": "RoleNamesNotInInventory", "iam:policy": "PolicyNamesNotInInventory",
            "acm:certificate": "CertificateIdsNotInInventory", "kms:key": "KeyIdsNotInInventory",
            "application-autoscaling:scalable-target": "ScalableTargetIdsNotInInventory",
            "lambda:event-source-mapping": "MappingIdsNotInInventory", "rds:snapshot": "SnapshotNamesNotInInventory",
            "apigateway:restapis": "ApiIdsNotInInventory"}


@dataclass(frozen=True)
class Copies:
    """Resources a runbook makes for itself each run and removes (restored copies, a test bucket): where its destructive
    actions are allowed. ``names(system, account)``: name patterns of the resource type (``account`` may be the policy
    variable); ``pattern``: the same without a system; ``tag``: the tag key the runbook puts on them and
    ``tag_values(system)`` its values, for a condition where the service supports one."""

    resource_type: str
    pattern: str
    names: Callable[[System, str], list[str]]
    tag: str | None = None
    tag_values: Callable[[System], list[str]] | None = None


@lru_cache(maxsize=64)
def partition(region: str) -> str:
    """The region's partition (aws, aws-cn, aws-us-gov, ...) from botocore's partition data."""
    import botocore

    data = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text(encoding="utf-8"))
    for p in data["partitions"]:
        if region in p.get("regions", {}) or re.match(p.get("regionRegex", "^$"), region):
            return str(p["id"])
    return "aws"


def _opt(*values: str | None) -> list[str]:
    return [v for v in values if v]


def inventory_names(system: System) -> dict[str, list[str]]:
    """The inventory's resources by resource type, as the {name} of RESOURCE_TYPES (patterns where a resource type's
    ARN goes below the name: a function's versions and aliases, a log group's streams, a bucket's objects, a domain's paths)."""
    bs, cs, sp = system.bill_shock, system.case_store, system.stuck_processing
    tables = [t.name for t in system.dynamodb_tables] + _opt(system.mutations.state_table, bs and bs.breaker_table,
                                                              cs and cs.evidence_table, sp and sp.results_table)
    functions = ([f.name for f in system.lambda_functions] + [f for a in system.api_gateway_apis for f in a.functions]
                 + [q.consumer_function for q in system.sqs_queues if q.consumer_function] + _opt(bs and bs.worker_function))
    queues = [q.name for q in system.sqs_queues] + [q.dlq for q in system.sqs_queues if q.dlq] + _opt(bs and bs.source_queue)
    queues += [f.sqs_source for f in system.lambda_functions if f.sqs_source]
    groups = ([g.name for g in system.all_log_groups()] + [s.log_group for s in system.ecs_services if s.log_group]
              + _opt(system.security_logs and system.security_logs.log_group, bs and bs.upload_log_group))
    buckets = ([b.name for b in system.s3_buckets] + list(system.security.buckets)
               + _opt(system.dr.test_bucket, system.reporting.report_bucket, bs and bs.uploads_bucket, sp and sp.uploads_bucket))
    domains = [d.name for d in system.opensearch_domains] + _opt(system.dr.opensearch_dr_domain, cs and cs.opensearch_domain)
    secrets = list(system.security.secrets) + list(system.audit.secrets) + _opt(cs and cs.database and cs.database.password_secret)
    pool = system.cognito.user_pool_id or "*" if system.cognito else None  # a pool named but not by id: any pool
    names = {
        _T: tables, _I: tables, _B: tables,
        _F: [n for f in functions for n in (f, f"{f}:*")],
        _Q: queues,
        _LG: [n for g in groups for n in (g, f"{g}:*")],
        _SVC: [f"{s.cluster}/{s.service}" for s in system.ecs_services],
        _BK: buckets, _OB: [f"{b}/*" for b in buckets],
        _D: [n for d in domains for n in (d, f"{d}/*")],
        "sns:topic": _opt(system.notifications.sns_topic),  # a name, or an ARN kept as it is (another account's topic)
        _SEC: [f"{s}-??????" if not s.startswith("arn:") else s for s in secrets],  # AWS appends 6 characters to the name
        "cognito-idp:userpool": _opt(pool),
        "rds:db": [r.identifier for r in system.rds_instances],
        "ecr:repository": list(system.audit.ecr_repositories),
        "apigateway:restapis": ["", "/*"] if system.api_gateway_apis or system.discovery.tags else [],
    }
    for kind in ANY_NAME:
        names.setdefault(kind, ["*"])
    return {k: list(dict.fromkeys(v)) for k, v in names.items()}


@dataclass
class _Grant:
    sid: str
    resources: list[str]
    condition: dict[str, Any] | None = None
    actions: set[str] = field(default_factory=set)


def _sid(kind: str, what: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", kind)) + what


class _Builder:
    def __init__(self, part: str, region: str, account: str) -> None:
        self.part, self.region, self.account = part, region, account
        self.grants: dict[str, _Grant] = {}

    def arn(self, kind: str, name: str) -> str:
        if name.startswith("arn:"):
            return name
        return RESOURCE_TYPES[kind].format(partition=self.part, region=self.region, account=self.account, name=name)

    def grant(self, sid: str, action: str, resources: list[str], condition: dict[str, Any] | None = None) -> None:
        g = self.grants.setdefault(sid, _Grant(sid, list(dict.fromkeys(resources)), condition))
        g.actions.add(action)

    def policy(self) -> dict[str, Any]:
        statements = []
        for g in sorted(self.grants.values(), key=lambda g: (g.resources != ["*"], g.sid)):
            st: dict[str, Any] = {"Sid": g.sid, "Effect": "Allow", "Action": sorted(g.actions),
                                  "Resource": g.resources[0] if g.resources == ["*"] else g.resources}
            if g.condition:
                st["Condition"] = g.condition
            statements.append(st)
        return {"Version": "2012-10-17", "Statement": statements}


def resource_types(action: str) -> tuple[str, ...]:
    if action not in ACTION_RESOURCES:
        raise KeyError(f"{action} has no entry in opsbook.iam_scope.ACTION_RESOURCES: add its resource types from the IAM Service "
                       "Authorization Reference (or () where it supports no resource-level permission)")
    return ACTION_RESOURCES[action]


def _copy_grants(b: _Builder, action: str, kind: str, copies: Iterable[Copies], system: System | None) -> None:
    """The runbook's copies by name pattern; a destructive action also only while the copy carries the runbook's tag
    (where the service has the condition): a copy is made and read before it can be tagged, removed only once it is."""
    for i, c in enumerate(x for x in copies if x.resource_type == kind):
        names = c.names(system, b.account) if system is not None else [c.pattern]
        if not names:
            continue
        arns, n = [b.arn(kind, x) for x in names], i or ""
        if action in DESTRUCTIVE and c.tag and kind in TAG_CONDITIONS:
            values = c.tag_values(system) if (system is not None and c.tag_values) else ["*"]
            b.grant(_sid(kind, f"RunbookCopiesTagged{n}"), action, arns, {"StringLike": {f"aws:ResourceTag/{c.tag}": values}})
            # a copy a killed run restored and could not tag yet (DynamoDB tags a table only once it is ACTIVE): its name
            # is the runbook's and it carries no tag of the key at all (a copy tagged for another system stays refused)
            b.grant(_sid(kind, f"RunbookCopiesNotYetTagged{n}"), action, arns, {"Null": {f"aws:ResourceTag/{c.tag}": "true"}})
        else:
            b.grant(_sid(kind, f"RunbookCopies{n}"), action, arns)


def _inventory_grants(b: _Builder, action: str, kind: str, system: System, names: dict[str, list[str]]) -> None:
    if names.get(kind):
        b.grant(_sid(kind, "Inventory" if kind not in ANY_NAME else "AnyName" + ANY_NAME[kind]), action,
                [b.arn(kind, n) for n in names[kind]])
    tags = system.discovery.tags
    if not tags or kind not in DISCOVERED:
        return
    any_name = "*/*" if kind == _OB else "*"
    if kind in TAG_CONDITIONS:
        b.grant(_sid(kind, "TagDiscovery"), action, [b.arn(kind, any_name)],
                {"StringEquals": {f"aws:ResourceTag/{k}": v for k, v in sorted(tags.items())}})
    else:
        b.grant(_sid(kind, "AnyNameTagDiscoveryWithoutTagCondition"), action, [b.arn(kind, any_name)])


def scoped_policy(actions: Iterable[str], system: System, copies: Iterable[Copies] = ()) -> dict[str, Any]:
    """The runbook's actions on this system's resources (see the module docstring)."""
    b = _Builder(partition(system.region), system.region, system.account_id or PRINCIPAL_ACCOUNT)
    names = inventory_names(system)
    _grant_each(b, actions, copies, system, lambda action, kind: _inventory_grants(b, action, kind, system, names))
    _kms_via_secrets(b, system)
    managed = b.grants.get(_sid("iam:policy", "AnyName" + ANY_NAME["iam:policy"]))
    if managed is not None:  # a role's attached policies include AWS managed ones (account "aws")
        managed.resources.append(f"arn:{b.part}:iam::aws:policy/*")
    return b.policy()


def _kms_via_secrets(b: _Builder, system: System) -> None:
    """KMS through Secrets Manager only (the secrets' keys are not in the inventory)."""
    g = b.grants.get(_sid("kms:key", "AnyName" + ANY_NAME["kms:key"]))
    if g is None:
        return
    aliases = list(system.audit.kms_key_aliases)
    via = {"kms:Decrypt", "kms:GenerateDataKey"} & g.actions
    rest = g.actions - via
    del b.grants[g.sid]
    for a in sorted(via):
        b.grant("KmsKeyViaSecretsManager", a, g.resources, {"StringEquals": {"kms:ViaService": f"secretsmanager.{system.region}.amazonaws.com"}})
    for a in sorted(rest):
        if aliases:
            b.grant("KmsKeyByAlias", a, g.resources, {"ForAnyValue:StringEquals": {"kms:ResourceAliases": [
                x if x.startswith("alias/") else f"alias/{x}" for x in aliases]}})
        else:
            b.grant(g.sid, a, g.resources)


def pattern_policy(actions: Iterable[str], copies: Iterable[Copies] = ()) -> dict[str, Any]:
    """Without a system: each resource type's pattern, every region, account and name as ``*``; destructive actions on the
    runbook's copies' name patterns."""
    b = _Builder("aws", "*", "*")
    _grant_each(b, actions, copies, None, lambda action, kind: b.grant(_sid(kind, "AnyName"), action, [b.arn(kind, "*/*" if kind == _OB else "*")]))
    return b.policy()


def _grant_each(b: _Builder, actions: Iterable[str], copies: Iterable[Copies], system: System | None,
                non_destructive: Callable[[str, str], None]) -> None:
    """Every action on each resource type it takes: "*" for an action without resource-level permissions, the
    runbook's copies, and (destructive actions excepted) ``non_destructive(action, kind)``."""
    copies = list(copies)
    for action in sorted(set(actions)):
        kinds = resource_types(action)
        if not kinds:
            b.grant("NoResourceLevelPermissions", action, ["*"])
        for kind in kinds:
            _copy_grants(b, action, kind, copies, system)
            if action not in DESTRUCTIVE:
                non_destructive(action, kind)
