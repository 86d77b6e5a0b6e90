"""Least privilege: every task that calls AWS declares the IAM actions it uses.

``aws_task(iam=[...])`` is the decorator for such tasks: a Prefect task whose
calls are checked, while it runs, against what it declared. A call the task
did not declare is recorded (``CallLog.undeclared``) and, with
``OPSBOOK_IAM_STRICT=1`` (the test suite), fails the call. ``policy_for``
prints the IAM policy a runbook needs from the tasks it uses.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

from prefect import Task
from prefect.utilities.annotations import opaque

# botocore service name -> IAM service prefix where they differ
_PREFIX = {
    "opensearch": "es",
    "resourcegroupstaggingapi": "tag",
    "elbv2": "elasticloadbalancing",
    "service-quotas": "servicequotas",
    "monitoring": "cloudwatch",
}

# (service, operation) -> IAM action where it is not prefix:Operation
_SPECIAL = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjectVersions"): "s3:ListBucketVersions",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "GetBucketLifecycleConfiguration"): "s3:GetLifecycleConfiguration",
    ("s3", "PutBucketLifecycleConfiguration"): "s3:PutLifecycleConfiguration",
    ("s3", "GetBucketReplication"): "s3:GetReplicationConfiguration",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    ("dynamodb", "BatchGetItem"): "dynamodb:BatchGetItem",
    ("s3", "CopyObject"): "s3:PutObject",  # plus s3:GetObject(Version) on the source
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("sts", "GetCallerIdentity"): None,  # needs no permission
    # a transaction needs each item's own action (PutItem, DeleteItem, ...); a ConditionCheck item needs this one
    ("dynamodb", "TransactWriteItems"): "dynamodb:ConditionCheckItem",
}

_declared: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("opsbook_iam", default=None)


def iam_action(service: str, operation: str) -> str | None:
    if (service, operation) in _SPECIAL:
        return _SPECIAL[(service, operation)]
    if service == "apigateway":
        # API Gateway's management API is authorised by HTTP verb.
        verb = "GET" if operation.startswith("Get") else "PATCH" if operation.startswith("Update") else "POST"
        return f"apigateway:{verb}"
    return f"{_PREFIX.get(service, service)}:{operation}"


class UndeclaredAction(PermissionError):
    pass


def check_call(service: str, operation: str) -> str | None:
    """Called for every AWS API call; returns the undeclared IAM action, if any."""
    declared = _declared.get()
    action = iam_action(service, operation)
    if declared is None or action is None or action in declared:
        return None
    if os.environ.get("OPSBOOK_IAM_STRICT") == "1":
        raise UndeclaredAction(f"{action} is not among the IAM actions this task declares: {sorted(declared)}")
    return action


def declares(iam: Iterable[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a plain function as using these IAM actions (checked while it runs)."""
    actions = frozenset(iam)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _declared.set(actions | (_declared.get() or frozenset()))
            try:
                return fn(*args, **kwargs)
            finally:
                _declared.reset(token)

        wrapper.iam_actions = tuple(sorted(actions))  # type: ignore[attr-defined]
        return wrapper

    return deco


def _retry_read(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a read task only when botocore itself gave up on a transient error."""
    from botocore.exceptions import ClientError, ReadTimeoutError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        state.result()
    except (BotoConnectionError, ReadTimeoutError):
        return True
    except ClientError as exc:
        return exc.response.get("Error", {}).get("Code") in {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"}
    except Exception:
        return False
    return False


def _is_inert(value: Any) -> bool:
    return getattr(type(value), "opsbook_inert", False)


def _inert(value: Any) -> Any:
    """An argument whose type says it holds no futures (``opsbook_inert``: an inventory, a finding, a report), marked so
    that Prefect hands it to the task as it is instead of walking every field for futures at submit and again at the run
    (~2 ms an inventory, 40-80 ms a report of 300 findings). The task that returned it stays the task's upstream in the
    run graph (Prefect looks the object itself up). A list is walked as usual: Prefect links a task to the items of
    another's returned list; a caller whose edges come from ``wait_for`` may pass ``opaque(findings)`` itself."""
    return opaque(value) if _is_inert(value) else value


class AwsTask(Task):  # type: ignore[type-arg]
    """A Prefect task whose inert arguments are not walked by Prefect (the task receives the same objects)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*map(_inert, args), **{k: _inert(v) for k, v in kwargs.items()})

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return super().submit(*map(_inert, args), **{k: _inert(v) for k, v in kwargs.items()})


def aws_task(*, iam: Iterable[str], name: str | None = None, read_only: bool = True, **task_kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """A Prefect task that calls AWS and declares its IAM actions.

    Read tasks retry once (after botocore's own retries gave up on a transient
    error); mutating tasks never retry at the Prefect level.
    """

    def deco(fn: Callable[..., Any]) -> Any:
        wrapped = declares(iam)(fn)
        opts: dict[str, Any] = {"name": name or fn.__name__.replace("_", "-"), "task_run_name": None}
        opts.pop("task_run_name")
        if read_only:
            opts.update(retries=1, retry_delay_seconds=1, retry_condition_fn=_retry_read)
        opts.update(task_kwargs)
        t = AwsTask(fn=wrapped, **opts)
        t.iam_actions = wrapped.iam_actions  # type: ignore[attr-defined]
        return t

    return deco


def policy_for(tasks: Iterable[Any], extra: Iterable[str] = ()) -> dict[str, Any]:
    actions = sorted({a for t in tasks for a in getattr(t, "iam_actions", ())} | set(extra))
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "OpsbookRunbook", "Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
