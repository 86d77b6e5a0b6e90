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


# --- issue 19: parameters out of range are refused before any call ---------------------------------------------------


def _numbers(name):
    props = parameter_schema(RUNBOOKS[name].load()).model_dump()["properties"]
    return {k: p for k, p in props.items() if p.get("type") in ("integer", "number")}


@pytest.mark.parametrize("name", sorted(RUNBOOKS))
def test_every_numeric_parameter_is_bounded_below_and_above(name):
    """A deadline of 1e308, a revision of 10**15, a count below zero: each number has both bounds in the form and the check."""
    for key, prop in _numbers(name).items():
        assert {"minimum", "exclusiveMinimum"} & set(prop) and {"maximum", "exclusiveMaximum"} & set(prop), (key, prop)


BAD_PARAMETERS = [
    ("scale-service", {"desired": -3}, "greater than or equal to -1"),
    ("scale-service", {"delta": 10**6}, "less than or equal to 5000"),
    ("scale-service", {"read_units": 10**15}, "less than or equal to 1000000"),
    ("emergency-rollback", {"to_revision": -3}, "greater than or equal to 0"),
    ("emergency-rollback", {"to_revision": 10**15}, "less than or equal to 2147483647"),
    ("emergency-check", {"deadline_seconds": -1}, "greater than 0"),
    ("emergency-check", {"deadline_seconds": 1e308}, "less than or equal to 300"),
    ("emergency-check", {"deadline_seconds": float("inf")}, "less than or equal to 300"),
    ("emergency-check", {"deadline_seconds": float("nan")}, "less than or equal to 300"),
    ("daily-health", {"deadline_seconds": 0}, "greater than 0"),
    ("dlq-redrive", {"max_messages": 10**12}, "less than or equal to 1000000000"),
]


@pytest.mark.parametrize("name,params,said", BAD_PARAMETERS, ids=[f"{n}:{next(iter(p))}={next(iter(p.values()))}" for n, p, _ in BAD_PARAMETERS])
def test_a_parameter_out_of_range_is_refused_by_validation(name, params, said):
    with pytest.raises(ParameterTypeError, match=said):
        RUNBOOKS[name].load().validate_parameters({"system": "todo-app", **params})


@pytest.mark.parametrize("name", sorted(n for n in RUNBOOKS if "undo_run" in parameter_schema(RUNBOOKS[n].load()).model_dump()["properties"]))
def test_undo_run_is_a_flow_run_id_or_empty(name):
    flow = RUNBOOKS[name].load()
    run_id = "1f0c2b8e-5d2a-4c6e-9b1a-2f3d4e5f6a7b"
    base = {"system": "leh", **({"case_id": "2024001"} if name == "reindex-case" else {})}
    assert flow.validate_parameters({**base, "undo_run": run_id})["undo_run"] == run_id  # the twins
    assert flow.validate_parameters({**base, "undo_run": ""})["undo_run"] == ""
    for bad in ("not-a-run-id", "$(rm -rf /)", run_id + "0", run_id.replace("-", ""), " " + run_id):
        with pytest.raises(ParameterTypeError, match="is not a flow run id: give the UUID of the earlier run"):
            flow.validate_parameters({**base, "undo_run": bad})
    prop = parameter_schema(flow).model_dump()["properties"]["undo_run"]
    assert prop["pattern"].startswith("^(") and len(prop["description"]) > 15  # the form refuses it too
