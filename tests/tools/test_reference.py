"""The README's configuration reference is generated from the schema and must match it."""

from pathlib import Path

from forecaster.tools import reference
from forecaster.config import Pipeline, Settings
from forecaster.schema import documented_fields

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_configuration_reference_matches_the_schema():
    assert reference.embedded(README.read_text()) == reference.markdown(), (
        "README.md's configuration reference is stale: run `python -m forecaster.tools.reference --write README.md`")


def test_every_configuration_key_is_in_the_reference():
    text = reference.markdown()
    for cls in (Settings, Pipeline):
        for path, _, _, doc in documented_fields(cls):
            assert f"| `{path}` |" in text and doc
