"""The tags of the system's functions, tables, buckets and queues: read once by the run's resolution
(``opsbook.resources.resolve``: tag discovery gives the tagged ones' tags, the lookup of a named resource discovery
did not see gives its own), so reading them costs no call here."""

from __future__ import annotations

from pydantic import BaseModel, Field

from opsbook.resources import Resolved, kind_name

TAG_KINDS = ("lambda", "dynamodb", "s3", "sqs")
name_of = kind_name  # (kind, name) of a function, table, bucket, queue or log group ARN


class ResourceTags(BaseModel):
    kind: str
    name: str
    tags: dict[str, str] = Field(default_factory=dict)
    error: str | None = None  # why its tags could not be read


def resource_tags(res: Resolved) -> list[ResourceTags]:
    """Tags of every resolved function, table, bucket and queue (named and tag-discovered; the missing ones are not
    there). A resource whose tags could not be read carries the reason."""
    out = []
    for kind in TAG_KINDS:
        for n in res.names(kind):
            tags = res.tags.get(f"{kind}:{n}")
            reason = res.unreadable.get(f"{kind}:{n}") or ("its tags were not read" if tags is None else None)
            out.append(ResourceTags(kind=kind, name=n, tags=tags or {}, error=reason))
    return out
