"""Secrets Manager: a secret's rotation settings and dates (never its value)."""

from __future__ import annotations

from datetime import datetime

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System


class SecretRotation(BaseModel):
    secret: str
    rotation_enabled: bool = False
    last_rotated: datetime | None = None
    created: datetime | None = None
    error: str | None = None


@aws_task(iam=["secretsmanager:DescribeSecret"], name="read-secret-rotation", cache_policy=NO_CACHE)
def read_secret_rotation(system: System, deadline: aws.Deadline) -> list[SecretRotation]:
    c = aws.client("secretsmanager", system.region)

    def one(name: str) -> SecretRotation:
        d = c.describe_secret(SecretId=name)
        return SecretRotation(secret=name, rotation_enabled=bool(d.get("RotationEnabled")), last_rotated=aws.utc(d.get("LastRotatedDate")),
                              created=aws.utc(d.get("CreatedDate")))

    return [s if err is None else SecretRotation(secret=n, error=aws.describe_error(err))
            for n, s, err in aws.parallel(one, system.audit.secrets, deadline=deadline)]
