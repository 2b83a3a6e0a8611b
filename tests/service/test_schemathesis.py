"""Schema-driven fuzzing of the whole API (RELIABILITY F3): every operation in the OpenAPI
spec, with generated valid and invalid input, must never answer 5xx and must answer what the
spec documents (status codes, content types, response schemas).

Runs in-process over ASGI against the real assistant, with an admin key (every route).
Examples per operation: ``LLMOS_SCHEMATHESIS_EXAMPLES`` (default 12) in the default suite;
the ``slow`` variant runs 100 per operation (the PR-tier figure of RELIABILITY F3)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from assistant.keys import generate_secret

MAX_EXAMPLES = int(os.environ.get("LLMOS_SCHEMATHESIS_EXAMPLES") or 12)  # per operation
SLOW_EXAMPLES = 100


FUZZ_KEY = generate_secret("admin")


@pytest.fixture(scope="module")
def fuzz_api(make_api):
    api = make_api(turn_timeout_s=10, demo_key=False)
    # a key for the fuzzer alone: no rate limit in the way of hundreds of requests
    api.keys.create_ephemeral("admin", name="fuzzer", rate_per_min=1_000_000, secret=FUZZ_KEY)
    return api


@pytest.fixture(scope="module")
def api_schema(fuzz_api):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_api.app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.auth()
class FuzzKey:
    """Sends the key, except in cases where the fuzzer leaves it out on purpose (expects 401)."""

    def get(self, case, ctx):
        return FUZZ_KEY

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "X-API-Key": data}


def _fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )


@schema.parametrize()
@_fuzz_settings(MAX_EXAMPLES)
def test_api_conforms_and_never_errors(case, fuzz_api):
    _check(case, fuzz_api)


@pytest.mark.slow
@schema.parametrize()
@_fuzz_settings(SLOW_EXAMPLES)
def test_api_conforms_and_never_errors_100_examples(case, fuzz_api):
    _check(case, fuzz_api)


def _check(case, fuzz_api) -> None:
    excluded = []
    if case.media_type == "multipart/form-data":
        # whether uploaded bytes are a valid PDF/CSV/... is beyond what a schema can say
        excluded.append(positive_data_acceptance)
    response = case.call()
    assert response.status_code < 500, response.text[:500]
    if response.status_code == 413:
        # the body limit answered before validation could; that is a rejection too
        sent = response.request.body or b""
        assert len(sent) > fuzz_api.app.state.settings.max_body_bytes
        excluded.append(negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)


def test_spec_documents_auth_and_errors(fuzz_api):
    spec = fuzz_api.client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("in") == "header" and s.get("name") == "X-API-Key" for s in schemes.values())
    for path, ops in spec["paths"].items():
        if path == "/healthz":
            continue
        for op in ops.values():
            assert {"401", "403", "429"} <= set(op["responses"]), path
