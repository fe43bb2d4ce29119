"""How a construct reports what its rules (:mod:`training_cluster.rules`) find in its props."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import jsii
from aws_cdk import Annotations, Token
from constructs import Construct, IValidation

from ..errors import Finding
from ..rules import raise_errors


def check_props(construct: Construct, findings: Iterable[Finding], *, values: Mapping[str, object]) -> None:
    """Raise one :class:`~training_cluster.rules.PropsError` listing every error; add each warning
    to ``construct`` as a CDK warning (``training-cluster:<prop>``).

    ``values``: the props (or their parts: ``capacity.reservation_id``) the findings may be about,
    by the name the findings use. A finding about a prop whose value is an
    unresolved token (a parameter, another resource's attribute) is dropped: synthesis cannot
    know the value, and CloudFormation or the service checks it at deploy time.
    """
    unresolved = {name for name, value in values.items() if Token.is_unresolved(value)}
    known = [f for f in findings if not any(_about(f.path, prop) for prop in unresolved)]
    name = f"{type(construct).__name__} {construct.node.path!r}"
    for warning in raise_errors(name, known):
        Annotations.of(construct).add_warning_v2(f"training-cluster:{warning.path}", str(warning))


def _about(path: str, prop: str) -> bool:
    """Whether a finding at ``path`` is about ``prop`` or a part of it (``prop.x``, ``prop[0]``)."""
    return path == prop or path.startswith((f"{prop}.", f"{prop}["))


@jsii.implements(IValidation)
class SynthesisCheck:
    """A check of what is known only once the whole app is built (``node.add_validation``):
    ``check`` returns the problems, each a sentence naming the prop."""

    def __init__(self, check: Callable[[], list[str]]) -> None:
        self._check = check

    def validate(self) -> list[str]:
        return self._check()
