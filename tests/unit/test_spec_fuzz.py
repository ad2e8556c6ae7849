"""Job specs broken in bulk: each gives a Job or a ValidationError naming the field."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.errors import ValidationError
from podium.model import spec
from podium.model.types import Job
from support.mutate import MUTATIONS, mutate, valid_job

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine; no example database
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**120), max_value=10**120)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def check_outcome(doc: Any) -> Job | None:
    """The contract: a Job, or a ValidationError whose problems each name where they are."""
    try:
        job = spec.validate(spec.canonicalize(doc))
    except ValidationError as e:
        assert e.problems
        for problem in e.problems:
            assert problem.message, problem
            # Only a document that is not a mapping at all gets a problem without a path.
            assert problem.path or not isinstance(doc, dict), problem
            str(problem).encode("utf-8")  # printable in an HTTP response
        return None
    # A valid job survives storage and a display/edit/resubmit round trip unchanged.
    assert msgspec.json.decode(msgspec.json.encode(job), type=Job) == job
    assert spec.validate(spec.canonicalize(spec.job_to_dict(job))) == job
    return job


def test_base_job_is_valid() -> None:
    assert check_outcome(valid_job()) is not None


def test_mutate_is_deterministic_and_leaves_its_input_alone() -> None:
    base = valid_job()
    first = [mutate(base, random.Random(seed)) for seed in range(20)]
    again = [mutate(base, random.Random(seed)) for seed in range(20)]
    assert json.dumps(first, default=repr) == json.dumps(again, default=repr)
    assert base == valid_job()


@pytest.mark.parametrize("chunk", range(5))
def test_500_mutations(chunk: int) -> None:
    outcomes = {"valid": 0, "invalid": 0}
    for seed in range(chunk * 100, chunk * 100 + 100):
        doc = mutate(valid_job(), random.Random(seed))
        outcome = check_outcome(doc)
        outcomes["valid" if outcome else "invalid"] += 1
        # The same document as a JSON file goes through the text path just as safely.
        try:
            spec.load_job(json.dumps(doc), filename="fuzz.json")
        except ValidationError:
            pass
    assert outcomes["invalid"] > 50  # the mutations really break things


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_each_mutation_kind(mutation: Any) -> None:
    for seed in range(30):
        doc = valid_job()
        mutation(doc, random.Random(seed))
        check_outcome(doc)


@FUZZ
@given(json_values)
def test_arbitrary_values_as_a_job(value: Any) -> None:
    check_outcome(value)


@FUZZ
@given(st.data())
def test_arbitrary_value_anywhere_in_a_valid_job(data: st.DataObject) -> None:
    doc = valid_job()
    slots: list[tuple[Any, Any]] = []
    stack: list[Any] = [doc]
    while stack:
        container = stack.pop()
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            slots.append((container, key))
            if isinstance(container[key], dict | list):
                stack.append(container[key])
    container, key = data.draw(st.sampled_from(slots))
    container[key] = data.draw(json_values)
    check_outcome(doc)


@FUZZ
@given(st.dictionaries(st.sampled_from(["name", "type", "groups", "x", "priority"]), json_values))
def test_arbitrary_job_fields(doc: dict[str, Any]) -> None:
    check_outcome(doc)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    try:
        raw = spec.parse_job_text(text)
    except ValidationError as e:
        assert all(p.message for p in e.problems)
        return
    check_outcome(raw)


@FUZZ
@given(st.text(alphabet="{}[]:,-\"' \n\tab1&*!|>#", max_size=80))
def test_yamlish_text(text: str) -> None:
    for filename in ("job.yaml", "job.json"):
        try:
            check_outcome(spec.parse_job_text(text, filename=filename))
        except ValidationError:
            pass


@FUZZ
@given(st.one_of(json_values, st.text(alphabet="0123456789.smhdun-µ ", max_size=12)))
def test_parse_duration_raises_only_value_error(value: Any) -> None:
    try:
        seconds = spec.parse_duration(value)
    except ValueError as e:
        assert str(e).startswith("expected")
        return
    assert 0 <= seconds <= spec.MAX_DURATION
