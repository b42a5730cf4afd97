"""schemathesis (every check, every phase) against the live engine's `/openapi.json`: the
reading routes. The writing ones (definitions, scale, the archive's controls, revocations,
ingest: `GET /v1/osmand` sends a ping) would change the engine the other tests share; the unit
tier fuzzes them over stand-ins."""

import pytest
import requests
import schemathesis
from schemathesis.engine import events

from tests.openapi_cases import DOOR_SPACE_IDS, config, load, register_formats

pytestmark = pytest.mark.integration


def test_schemathesis_finds_nothing(live):
    register_formats(live.engine.topology.engine_spec().res)
    # door spaces other tests defined on the shared engine: a path through one is refused
    # (it has no area), as the cases know of the workload's own
    listed = requests.get(
        live.http + "/v1/spaces", headers={"Authorization": f"Bearer {live.admin}"}, timeout=30
    ).json()["spaces"]
    DOOR_SPACE_IDS.update(s["space"] for s in listed if s["kind"] == "door")
    schema = schemathesis.openapi.from_url(live.http + "/openapi.json", config=config(live.admin))
    schema = load(schema).include(method="GET").exclude(path="/v1/osmand")
    failures, errors, scenarios = set(), [], 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(str(getattr(event, "info", event)))
        elif isinstance(event, events.ScenarioFinished):
            scenarios += 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        info = check.failure_info
                        failures.add(
                            f"{info.failure.title}: {info.failure.message}\n{info.code_sample}"
                        )
    assert not errors, errors
    assert not failures, "\n\n".join(sorted(failures))

    assert scenarios >= 10  # every reading route, in each phase
