"""Property: every mutation of every example ends in a config error with the field's path, or in a
valid config that builds and synthesizes; never in a traceback (issue 9, section 1).

In-process and bounded: a fixed number of derandomized cases, each parsed and checked the way
``app.py`` does (:func:`training_cluster.build.build_cluster`); the first few valid ones are built
and synthesized too (a synthesis takes seconds), the rest stop after the checks.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CDK_CONTEXT, EXAMPLES, ROOT
from training_cluster import ClusterConfig, ConfigError
from training_cluster.build import build_cluster

CASES = 800
SYNTHESIZED = 4
EXAMPLE_DATA = [(p.name, yaml.safe_load(p.read_text())) for p in EXAMPLES]

Path_ = tuple[Any, ...]


def paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every place in a config: mapping keys and list items, depth first."""
    out: list[Path_] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((*prefix, key))
        out += paths(child, (*prefix, key))
    return out


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_WORDS = [
    "yes", "on", "1_200", "079", "\u0667\u0669", "us-east-\u0661", "/proc/self/mem", "/fsx/../etc", "/etc/", "//fsx",
    "$(reboot)", "a'b", "line\nbreak", "169.254.0.0/16", "10.0.0.0/28", "sudo", "", " ", "\x00", "\ufeff",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**31, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_WORDS),
    st.binary(max_size=16),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=10), scalars, max_size=3),
    st.integers(min_value=40, max_value=150).map(nested),  # deeper than MAX_DEPTH; yaml.safe_dump recurses
)


def set_at(data: Any, path: Path_, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def drop_at(data: Any, path: Path_) -> None:
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A mutation of an example, as the bytes of a config file."""
    name, example = draw(st.sampled_from(EXAMPLE_DATA))
    data = yaml.safe_load(yaml.safe_dump(example))  # a deep copy
    kind = draw(st.sampled_from(["drop", "replace", "replace", "add", "bytes", "line"]))
    places = paths(data)
    if kind == "drop":
        drop_at(data, draw(st.sampled_from(places)))
    elif kind == "replace":
        set_at(data, draw(st.sampled_from(places)), draw(values))
    elif kind == "add":
        parents = [p for p in places if isinstance(_get(data, p), dict)] + [()]
        parent = draw(st.sampled_from(parents))
        _get(data, parent)[draw(st.one_of(st.text(max_size=12), st.sampled_from(["count", "name", "efa"])))] = draw(
            values
        )
    text = yaml.safe_dump(data, allow_unicode=True).encode()
    if kind == "bytes":
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    elif kind == "line":
        lines = text.split(b"\n")
        at = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        lines[at] = draw(st.text(max_size=40)).encode()
        text = b"\n".join(lines)
    return f"{name}/{kind}", text


def _get(data: Any, path: Path_) -> Any:
    for key in path:
        data = data[key]
    return data


def test_every_mutation_of_every_example_is_a_field_error_or_a_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(ROOT / "examples" / "scripts", tmp_path / "scripts")
    config = tmp_path / "cluster.yaml"
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=CASES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=mutated())
    def run(case: tuple[str, bytes]) -> None:
        _, content = case
        config.write_bytes(content)
        try:
            if outcomes["synthesized"] < SYNTHESIZED:
                app = App(context=CDK_CONTEXT, outdir=str(tmp_path / f"out-{outcomes['synthesized']}"))
                assert build_cluster(app, config).artifact.template["Resources"]
                outcomes["synthesized"] += 1
            else:
                ClusterConfig.from_yaml(config)
                outcomes["valid, checked"] += 1
        except ConfigError as exc:
            assert exc.findings and str(exc).startswith(f"{len(exc.findings)} problem")
            for finding in exc.findings:
                assert finding.message and len(str(finding)) < 1000, finding
                # a problem with the file as a whole has no field; any other names its field
                assert finding.path or _file_level(finding.message), finding
            outcomes["field error" if any(f.path for f in exc.findings) else "file error"] += 1

    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nhostile configs: {sum(outcomes.values())} cases in {seconds:.1f} s: {dict(outcomes)}")
    assert sum(outcomes.values()) >= CASES // 2
    assert outcomes["field error"] > CASES // 4 and outcomes["synthesized"] >= 1


FILE_LEVEL = (
    "not UTF-8 text",
    "not valid YAML",
    "not a readable value",
    "appears twice in one mapping",
    "nested more than",
    "stands for more than",
    "recursive anchors",
    "a config is a mapping of keys",
    "cannot read the file",
)


def _file_level(message: str) -> bool:
    return message.startswith(FILE_LEVEL) or any(words in message for words in FILE_LEVEL)
