"""tasks.tagging's and tasks.ec2's pure helpers (no AWS)."""

from __future__ import annotations

from tasks.ec2 import ingress_rules
from tasks.tagging import name_of


def test_name_of_arns():
    assert name_of("arn:aws:lambda:r:1:function:f") == ("lambda", "f")
    assert name_of("arn:aws:lambda:r:1:function:f:live") == ("lambda", "f")
    assert name_of("arn:aws:dynamodb:r:1:table/t") == ("dynamodb", "t")
    assert name_of("arn:aws:dynamodb:r:1:table/t/stream/x") is None
    assert name_of("arn:aws:s3:::b") == ("s3", "b") and name_of("arn:aws:s3:::b/key") is None
    assert name_of("arn:aws:sqs:r:1:q") == ("sqs", "q")
    assert name_of("arn:aws:logs:r:1:log-group:/g:*") == ("logs", "/g")
    assert name_of("arn:aws:es:r:1:domain/d") is None and name_of("bad") is None


def test_ingress_rules_one_per_source_range():
    group = {"IpPermissions": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}, {"CidrIp": "10.0.0.0/8"}],
                                "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
                               {"IpProtocol": "-1", "IpRanges": [], "UserIdGroupPairs": [{"GroupId": "sg-2"}]}]}
    assert [(r.protocol, r.from_port, r.cidr) for r in ingress_rules(group)] == [("tcp", 22, "0.0.0.0/0"), ("tcp", 22, "10.0.0.0/8"), ("tcp", 22, "::/0")]
    assert ingress_rules({}) == []
