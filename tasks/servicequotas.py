"""Service Quotas: a service's quotas in force in the region, with AWS's defaults (read-only)."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System


class Quota(BaseModel):
    code: str
    name: str
    value: float
    default: float | None = None
    adjustable: bool | None = None
    unit: str | None = None


class QuotaSet(BaseModel):
    error: str | None = None
    defaults_error: str | None = None
    quotas: list[Quota] = Field(default_factory=list)


@aws_task(iam=["servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"], cache_policy=NO_CACHE)
def read_quotas(system: System, service_code: str) -> QuotaSet:
    """A service's quotas in force in the region (every page) and, for comparison, AWS's defaults."""
    c = aws.client("service-quotas", system.region)
    try:
        applied = list(aws.paginate(c, "list_service_quotas", "Quotas", ServiceCode=service_code))
    except Exception as exc:
        return QuotaSet(error=aws.describe_error(exc))
    out = QuotaSet()
    defaults: dict[str, float] = {}
    try:
        defaults = {q["QuotaCode"]: q["Value"] for q in aws.paginate(c, "list_aws_default_service_quotas", "Quotas", ServiceCode=service_code)}
    except Exception as exc:  # only a comparison: the quotas in force stand without it
        out.defaults_error = aws.describe_error(exc)
    out.quotas = [Quota(code=q["QuotaCode"], name=q["QuotaName"], value=q["Value"], default=defaults.get(q["QuotaCode"]),
                        adjustable=q.get("Adjustable"), unit=q.get("Unit")) for q in applied]
    return out
