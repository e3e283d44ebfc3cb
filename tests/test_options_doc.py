"""docs/options.md is generated from the parsers (tools/options_doc.py) and must stay equal to them."""

from __future__ import annotations

from tools import options_doc

REGENERATE = "python tools/options_doc.py --write"


def test_the_options_page_is_the_parsers():
    page = (options_doc.ROOT / options_doc.OUTPUT).read_text()
    assert page == options_doc.render(), f"docs/options.md differs from the parsers; regenerate it: {REGENERATE}"


def test_the_page_depends_on_no_environment(monkeypatch):
    monkeypatch.setenv("QUBIQ_DATA", "/data/qubiq")
    monkeypatch.setenv("COLUMNS", "40")
    page = options_doc.render()
    assert "/data/qubiq" not in page and page == (options_doc.ROOT / options_doc.OUTPUT).read_text()


def test_the_page_opens_by_saying_it_is_generated_and_check_says_how_to_regenerate(capsys, tmp_path, monkeypatch):
    page = options_doc.render()
    assert page.splitlines()[0].startswith("_Generated from the commands' parsers by `" + REGENERATE + "`")
    assert options_doc.main(["--check"]) == 0
    monkeypatch.setattr(options_doc, "ROOT", tmp_path)  # no docs/options.md there
    assert options_doc.main(["--check"]) == 1
    assert REGENERATE in capsys.readouterr().out
