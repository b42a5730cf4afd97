"""schemathesis (every check) against the live engine's `/openapi.json`: the reading routes.
The writing ones (definitions, scale, the archive's controls, revocations) would change the
engine the other tests share; the unit tier fuzzes them over stand-ins."""

import pytest
import schemathesis

from tests.openapi_cases import SETTINGS, config, load, register_formats

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def schema(live):
    register_formats(live.engine.topology.engine_spec().res)
    loaded = schemathesis.openapi.from_url(live.http + "/openapi.json", config=config(live.admin))
    return load(loaded).include(method="GET")


api = schemathesis.pytest.from_fixture("schema")


@api.parametrize()
@SETTINGS
def test_schemathesis_finds_nothing(case):
    case.call_and_validate()
