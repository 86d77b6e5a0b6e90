"""tasks/apigateway.py's pure helper: the Lambda function an integration URI names."""

from __future__ import annotations

from tasks.apigateway import ApiInfo, Route, function_from_uri

PREFIX = "arn:aws:apigateway:us-east-2:lambda:path/2015-03-31/functions/"


def test_function_from_uri():
    assert function_from_uri(f"{PREFIX}arn:aws:lambda:us-east-2:123456789012:function:todo-api:LIVE/invocations") == ("todo-api", "LIVE", None)
    assert function_from_uri(f"{PREFIX}arn:aws:lambda:us-east-2:123456789012:function:ResumeParser/invocations") == ("ResumeParser", None, None)
    assert function_from_uri(f"{PREFIX}arn%3Aaws%3Alambda%3Aus-east-2%3A1%3Afunction%3AEnc/invocations") == ("Enc", None, None)  # URL-encoded
    assert function_from_uri(f"{PREFIX}bare-name/invocations") == ("bare-name", None, None)
    fn, _, problem = function_from_uri(f"{PREFIX}arn:aws:lambda:us-east-2:1:function:${{stageVariables.fn}}/invocations")
    assert fn is None and "stage variable" in problem
    fn, _, problem = function_from_uri(f"{PREFIX}arn:aws:states:us-east-2:1:stateMachine/invocations")
    assert fn is None and problem.startswith("unrecognised Lambda ARN")
    assert function_from_uri("http://example.com/x") == (None, None, None)
    assert function_from_uri(None) == (None, None, None)


def test_integrated_functions_each_once_sorted():
    info = ApiInfo(name="a", routes=[Route(path="/", method="GET", function="b"), Route(path="/", method="POST", function="a"),
                                     Route(path="/x", method="GET", function="b", qualifier="LIVE"), Route(path="/h", method="GET")])
    assert info.integrated_functions() == ["a", "b"]
