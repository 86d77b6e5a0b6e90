"""opsbook/params.py: what every runbook's parameters look like to Prefect (its form) and to a caller."""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError, SignatureMismatchError
from prefect.utilities.callables import parameter_schema

from opsbook.registry import RUNBOOKS


@pytest.mark.parametrize("name", sorted(RUNBOOKS))
def test_every_parameter_of_every_runbook_is_described_with_a_plain_default(name):
    props = parameter_schema(RUNBOOKS[name].load()).model_dump()["properties"]
    assert "approval" not in props  # the shell's business (tasks.mutation.shell_approval), never a parameter
    for key, prop in props.items():
        assert len(prop.get("description", "")) > 15, (key, prop)
        assert "anyOf" not in prop and prop.get("default", "given") is not None, (key, prop)


def test_bounds_reach_the_form_and_are_enforced():
    from flows.emergency_rollback.flow import emergency_rollback
    from flows.scale_service.flow import scale_service

    props = parameter_schema(scale_service).model_dump()["properties"]
    assert (props["desired"]["minimum"], props["desired"]["maximum"], props["desired"]["default"]) == (-1, 5000, -1)
    with pytest.raises(ParameterTypeError, match="to_revision"):
        emergency_rollback.validate_parameters({"system": "todo-app", "to_revision": -1})
    with pytest.raises(SignatureMismatchError, match="approval"):  # gone: a deployment run cannot skip the approval
        emergency_rollback.validate_parameters({"system": "todo-app", "approval": "yes"})
    assert emergency_rollback.validate_parameters({"system": "todo-app", "to_revision": 3})["to_revision"] == 3


def test_names_take_a_list_a_comma_separated_string_or_nothing():
    from flows.remediate_dynamodb_throttling.flow import remediate_dynamodb_throttling as flow

    def tables(value):
        return flow.validate_parameters({"system": "x", "tables": value})["tables"]

    assert tables("a, b,,c") == ["a", "b", "c"]  # --param tables=a,b on the shell
    assert tables(["a", " b "]) == ["a", "b"] and tables(None) == [] and tables("") == []
    with pytest.raises(ParameterTypeError):
        tables(5)
