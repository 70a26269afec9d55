"""schemathesis against the app's OpenAPI schema, in-process (ASGI), on a small generated
scene with the weight-free classic engine: no server errors, no status code the schema
does not list for the route, no response outside its documented schema or media type.

Bounded and deterministic: at most :data:`EXAMPLES` generated cases per operation with
Hypothesis derandomised (a fixed seed per operation), no example database.
"""

from __future__ import annotations

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install terramask[test])")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from helpers.scenes import write_geotiff  # noqa: E402

pytestmark = pytest.mark.slow

#: Generated cases per API operation.
EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    from terramask.web.server import create_server

    root = tmp_path_factory.mktemp("fuzz")
    pixels = np.full((3, 96, 128), 1000, dtype=np.uint16)
    pixels[:, 30:70, 40:90] += 3000
    scene = write_geotiff(root / "small.tif", pixels)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TERRAMASK_CACHE", str(root / "cache"))
        app = create_server([scene], model="classic", out_dir=root / "out", models=[], max_upload_mb=0.05)
        yield app
        app.state.views.close()


def test_api_conforms_to_its_schema(fuzz_app):
    """Every operation of /openapi.json, :data:`EXAMPLES` cases each; all failures are
    collected and reported together (operation, check and the case's curl line)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:

        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case):
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected, reported below with the operation
            failures.append(f"{operation.label}: {' '.join(str(exc).split())[:600]}")
    assert not failures, "\n".join(failures)
