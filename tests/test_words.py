"""Counts in messages read right: one of a thing is singular, any other number plural."""

import pytest

from forecaster.words import counted


@pytest.mark.parametrize(
    "count, noun, expected",
    [(1, "record", "1 record"), (2, "record", "2 records"), (0, "pipeline", "0 pipelines"), (1, "round", "1 round")],
)
def test_a_count_is_singular_only_for_one(count, noun, expected):
    assert counted(count, noun) == expected
