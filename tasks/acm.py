"""ACM: the certificate covering a domain name, its status, expiry and use."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CertificateState(BaseModel):
    domain: str
    arn: str | None = None  # None: no certificate for the domain
    status: str | None = None
    not_after: datetime | None = None
    in_use_by: int = 0
    error: str | None = None


def cert_domains(c: dict[str, Any]) -> set[str]:
    return {c.get("DomainName", ""), *c.get("SubjectAlternativeNameSummaries", [])}


@aws_task(iam=["acm:ListCertificates", "acm:DescribeCertificate"], name="read-certificates", cache_policy=NO_CACHE)
def read_certificates(system: System, deadline: aws.Deadline) -> list[CertificateState]:
    """Per ``audit.certificate_domains``: the certificate covering it that expires last (a renewal supersedes the old one)."""
    domains = system.audit.certificate_domains
    if not domains:
        return []
    c = aws.client("acm", system.region)
    summaries = list(aws.paginate(c, "list_certificates", "CertificateSummaryList"))

    def one(domain: str) -> CertificateState:
        arns = [x["CertificateArn"] for x in summaries if domain in cert_domains(x)]
        found = []
        for arn in arns:
            d = c.describe_certificate(CertificateArn=arn)["Certificate"]
            found.append(CertificateState(domain=domain, arn=arn, status=d.get("Status"), not_after=aws.utc(d.get("NotAfter")),
                                          in_use_by=len(d.get("InUseBy", []))))
        return max(found, key=lambda x: x.not_after or EPOCH) if found else CertificateState(domain=domain)

    return [s if err is None else CertificateState(domain=d, error=aws.describe_error(err)) for d, s, err in aws.parallel(one, domains, deadline=deadline)]
