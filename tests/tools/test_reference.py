"""docs/configuration.md's reference is generated from the schema and must match it."""

from pathlib import Path

from forecaster.config import Pipeline, Settings
from forecaster.schema import documented_fields
from forecaster.tools import reference

CONFIGURATION_PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_page_reference_matches_the_schema():
    assert reference.embedded(CONFIGURATION_PAGE.read_text()) == reference.markdown(), (
        "docs/configuration.md's configuration reference is stale: "
        "run `python -m forecaster.tools.reference --write docs/configuration.md`"
    )


def test_every_configuration_key_is_in_the_reference():
    text = reference.markdown()
    for cls in (Settings, Pipeline):
        for path, _, _, doc in documented_fields(cls):
            assert f"| `{path}` |" in text and doc


def test_the_readme_holds_no_reference_of_its_own():
    readme = (CONFIGURATION_PAGE.parents[1] / "README.md").read_text()
    assert "<!-- config-reference:begin -->" not in readme
