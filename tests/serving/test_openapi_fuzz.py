"""Property-based run of the OpenAPI document (schemathesis against the ASGI app, in-process): whatever
the generated requests, schema-valid or not, the service never answers 5xx, answers only the statuses it
documents, and its bodies match its response schemas. Bounded: MAX_EXAMPLES per operation and mode.

The operations are driven through hypothesis directly (`operation.as_strategy()`), not through
schemathesis's pytest plugin, whose lazy fixture loader does not run under pytest 9.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from serving.app import create_app

MAX_EXAMPLES = 30
OPERATIONS = ["GET /health", "GET /v1/info", "POST /v1/embed", "POST /v1/search", "GET /v1/objects/{object_id}"]
PARAMETERLESS = {"GET /health", "GET /v1/info"}  # nothing to make invalid: no negative mode
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(serve_config, service):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(serve_config, service))


def test_every_route_is_fuzzed(api_schema):
    assert sorted(result.ok().label for result in api_schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("label, mode", [(label, mode) for label in OPERATIONS for mode in GenerationMode
                                         if mode is GenerationMode.POSITIVE or label not in PARAMETERLESS],
                         ids=lambda value: getattr(value, "value", value))
def test_no_server_errors(api_schema, label, mode):
    operation = next(r.ok() for r in api_schema.get_all_operations() if r.ok().label == label)
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        calls.append(case.call_and_validate(checks=CHECKS).status_code)

    run()
    assert calls, f"no request generated for {label}"
