"""ECR: the latest pushed image of a repository and its scan's severity counts."""

from __future__ import annotations

from datetime import datetime, timezone

from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ImageScan(BaseModel):
    repository: str
    exists: bool = True
    image: str | None = None  # tag or digest of the latest pushed image; None: no image
    pushed: datetime | None = None
    scan_status: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    reason: str | None = None  # why there are no findings (no scan, scan failed)
    error: str | None = None


def read_image_scan(system: System, repo: str) -> ImageScan:
    c = aws.client("ecr", system.region)
    try:
        images = list(aws.paginate(c, "describe_images", "imageDetails", repositoryName=repo))
    except ClientError as exc:
        if aws.error_code(exc) == "RepositoryNotFoundException":
            return ImageScan(repository=repo, exists=False)
        raise
    if not images:
        return ImageScan(repository=repo, reason="the repository has no image")
    latest = max(images, key=lambda i: aws.utc(i.get("imagePushedAt")) or EPOCH)
    tags = latest.get("imageTags") or []
    s = ImageScan(repository=repo, image=tags[0] if tags else latest["imageDigest"], pushed=aws.utc(latest.get("imagePushedAt")))
    try:
        r = c.describe_image_scan_findings(repositoryName=repo, imageId={"imageDigest": latest["imageDigest"]}, maxResults=1)
    except ClientError as exc:
        if aws.error_code(exc) == "ScanNotFoundException":
            s.reason = "the latest image has never been scanned (enable scan on push, or aws ecr start-image-scan)"
            return s
        raise
    status = r.get("imageScanStatus", {})
    s.scan_status = status.get("status")
    if s.scan_status != "COMPLETE":
        s.reason = f"scan {s.scan_status or 'status unknown'}: {status.get('description', '')}".rstrip(": ")
        return s
    findings = r.get("imageScanFindings")
    if findings is None or "findingSeverityCounts" not in findings:
        s.reason = "the scan returned no severity counts"
        return s
    s.counts = {k: int(v) for k, v in findings["findingSeverityCounts"].items()}
    return s


@aws_task(iam=["ecr:DescribeImages", "ecr:DescribeImageScanFindings"], name="read-image-scans", cache_policy=NO_CACHE)
def read_image_scans(system: System, deadline: aws.Deadline) -> list[ImageScan]:
    repos = system.audit.ecr_repositories
    return [s if err is None else ImageScan(repository=r, error=aws.describe_error(err))
            for r, s, err in aws.parallel(lambda r: read_image_scan(system, r), repos, deadline=deadline)]
