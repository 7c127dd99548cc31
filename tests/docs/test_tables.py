"""Every table of figures in README.md and docs/ is what benchmarks/tables.py renders from the results JSON."""

import re

import pytest

from support import benchmark

tables = benchmark("tables")


@pytest.mark.parametrize("name", sorted(tables.TABLES))
def test_the_table_in_its_page_equals_what_its_json_renders(name):
    page, _ = tables.TABLES[name]
    assert tables.current(name) == tables.rendered(name), (
        f"{page}: table {name} is stale: run `python benchmarks/tables.py`"
    )


def test_every_table_block_in_the_docs_is_registered():
    pages = [tables.ROOT / "README.md", *sorted((tables.ROOT / "docs").glob("*.md"))]
    found = {name for page in pages for name in re.findall(r"<!-- table:([a-z0-9-]+) -->", page.read_text())}
    assert found == set(tables.TABLES)


def test_write_docs_replaces_only_the_block_between_the_markers(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- table:t -->\nold\n<!-- /table:t -->\nafter\n")
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(tables, "TABLES", {"t": ("page.md", lambda: "| a |\n| --- |\n| 1 |")})
    assert tables.stale() == ["t"]
    assert tables.write_docs() == ["t"]
    assert page.read_text() == "before\n<!-- table:t -->\n\n| a |\n| --- |\n| 1 |\n\n<!-- /table:t -->\nafter\n"
    assert tables.stale() == [] and tables.write_docs() == []


def test_a_page_without_the_markers_is_an_error_naming_the_page_and_table(tmp_path, monkeypatch):
    (tmp_path / "page.md").write_text("no markers here\n")
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(tables, "TABLES", {"t": ("page.md", lambda: "| a |")})
    with pytest.raises(ValueError, match=r"page\.md: expected the markers <!-- table:t -->"):
        tables.write_docs()


def test_check_exits_1_and_names_the_stale_tables(tmp_path, monkeypatch, capsys):
    (tmp_path / "page.md").write_text("<!-- table:t -->\nold\n<!-- /table:t -->\n")
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(tables, "TABLES", {"t": ("page.md", lambda: "| a |")})
    assert tables.main(["--check"]) == 1
    assert "stale: t in page.md" in capsys.readouterr().out
    assert tables.main([]) == 0 and tables.main(["--check"]) == 0


def test_tables_imports_only_the_standard_library():
    source = (tables.ROOT / "benchmarks" / "tables.py").read_text()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.M))
    assert imported <= {"__future__", "json", "pathlib", "re", "sys"}
