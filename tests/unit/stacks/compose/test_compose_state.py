"""A Compose stack's saved state is not trusted: it cannot name a program to run, nor make
`stack down` take another project down."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from drillkit.backends.compose import ComposeStack
from drillkit.stacks.plan import Endpoint, Port, Program, ServicePlan, StackPlan

STACK = "20260101-000000-aaaaaa"


def _state(**fields: Any) -> dict[str, Any]:
    plan = StackPlan(
        preset="compose",
        services=(
            ServicePlan(
                name="web", role="service", program=Program(executable="web"),
                ports=(Port(number=8000),),
            ),
        ),
        entry=Endpoint(service="web"),
    )  # fmt: skip
    data = {
        "id": STACK,
        "backend": "compose",
        "created_at": 1.0,
        "run_dir": f"/tmp/{STACK}",
        "plan": plan.model_dump(mode="json"),
        "project": f"drillkit-{STACK}",
        "file": "/srv/app/compose.yaml",
        "session": "s1",
    }
    data.update(fields)
    return data


def test_a_state_of_its_own_project_loads() -> None:
    state = ComposeStack.model_validate(_state())
    assert state.project == f"drillkit-{STACK}" and not state.attach
    attached = ComposeStack.model_validate(_state(project="shop", attach=True))
    assert attached.project == "shop"


@pytest.mark.parametrize(
    "fields",
    [
        {"project": "shop"},  # `stack down` would run `compose -p shop down -v`
        {"cli": ["/tmp/evil"]},  # the CLI is found on the machine, never read from a state
        {"file": "relative/compose.yaml"},
        {"sidecar_image": "evil image; rm -rf /"},
    ],
)
def test_a_tampered_state_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ComposeStack.model_validate(_state(**fields))
