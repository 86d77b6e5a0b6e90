"""RDS: an instance's status, backup retention and its automated snapshots."""

from __future__ import annotations

from datetime import datetime, timezone

from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System


class RdsSnapshots(BaseModel):
    instance: str
    max_age_hours: float
    missing: bool = False
    status: str | None = None
    retention_days: int | None = None
    latest_id: str | None = None
    latest: datetime | None = None
    count: int = 0
    error: str | None = None


def read_instance(system: System, identifier: str, max_age_hours: float) -> RdsSnapshots:
    c = aws.client("rds", system.region)
    s = RdsSnapshots(instance=identifier, max_age_hours=max_age_hours)
    try:
        inst = c.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except ClientError as exc:
        if aws.error_code(exc) == "DBInstanceNotFound":
            s.missing = True
            return s
        raise
    s.status, s.retention_days = inst.get("DBInstanceStatus"), inst.get("BackupRetentionPeriod")
    snaps = [x for x in aws.paginate(c, "describe_db_snapshots", "DBSnapshots", DBInstanceIdentifier=identifier, SnapshotType="automated")
             if x.get("Status") == "available" and x.get("SnapshotCreateTime")]
    s.count = len(snaps)
    if snaps:
        latest = max(snaps, key=lambda x: x["SnapshotCreateTime"])
        s.latest_id, s.latest = latest["DBSnapshotIdentifier"], latest["SnapshotCreateTime"].astimezone(timezone.utc)
    return s


@aws_task(iam=["rds:DescribeDBInstances", "rds:DescribeDBSnapshots"], name="read-rds-snapshots", cache_policy=NO_CACHE)
def read_rds_snapshots(system: System, deadline: aws.Deadline) -> list[RdsSnapshots]:
    out = []
    for r, s, err in aws.parallel(lambda r: read_instance(system, r.identifier, r.snapshot_max_age_hours), system.rds_instances, deadline=deadline):
        out.append(s if err is None else RdsSnapshots(instance=r.identifier, max_age_hours=r.snapshot_max_age_hours, error=aws.describe_error(err)))
    return out
