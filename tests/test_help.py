"""Every command's -h reads right: one row per command (its parser from its build function), a few rules.

The rules: every option and argument has a help text; no "(default: None)"; no absolute path (no path of
this machine: the help is the same everywhere, and docs/options.md is made from it); no default stated
twice; every settings switch of a dataset script says "default preset:" (``--demo`` starts from the demo
preset, so a plain "default:" would be wrong for it); no reference to the team's tracker ("issue 25"). Each
rule fails on a deliberately bad parser below.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tools.options_doc import all_parsers, expanded_help

ROOT = Path(__file__).resolve().parents[1]


def documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """What -h lists, -h itself aside."""
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def formatted(parser: argparse.ArgumentParser, monkeypatch) -> str:
    """The whole -h text on unwrapped lines (argparse wraps at $COLUMNS), whitespace runs made one space."""
    monkeypatch.setenv("COLUMNS", "100000")
    return " ".join(parser.format_help().split())


def missing_help(parser, text) -> list[str]:
    return [", ".join(a.option_strings) or a.dest for a in documented(parser) if not (a.help or "").strip()]


def default_none(parser, text) -> list[str]:
    return ["(default: None)"] if "(default: None)" in text else []


#: A path from the root (``/tmp/x``, ``/work/...``; not ``./x``, ``a/b``, ``<pred>/x``, ``LEVEL/WIDTH``) or a drive.
ABSOLUTE = re.compile(r"(?<![\w.$>*/\]])/[A-Za-z][^\s,;)]*|\b[A-Z]:\\\S*")


def absolute_path(parser, text) -> list[str]:
    found = ABSOLUTE.findall(text)
    return found + ([str(ROOT)] if str(ROOT) in text else [])


#: "default" as a word, not the preset called 'default' in quotes.
DEFAULT_WORD = re.compile(r"(?<!')\bdefault\b(?!')")


def default_twice(parser, text) -> list[str]:
    return [
        f"{', '.join(a.option_strings) or a.dest}: {expanded_help(parser, a)}"
        for a in documented(parser)
        if len(DEFAULT_WORD.findall(expanded_help(parser, a))) > 1
    ]


def settings_without_preset(parser, text) -> list[str]:
    """A settings switch (the scripts' ``settings`` group, ``switch_*``) that does not say "default preset:"."""
    return [
        a.option_strings[0]
        for a in documented(parser)
        if a.dest.startswith("switch_") and "default preset: " not in expanded_help(parser, a)
    ]


def tracker_reference(parser, text) -> list[str]:
    """The team's tracker is not the reader's (tests/test_docs.py holds the pages to the same rule)."""
    return re.findall(r"\bissues? \d+", text, flags=re.I)


RULES = {
    "missing help": missing_help,
    "(default: None)": default_none,
    "absolute path": absolute_path,
    "default twice": default_twice,
    "settings without 'default preset:'": settings_without_preset,
    "tracker reference": tracker_reference,
}


# Deliberately bad parsers: each breaks one rule, so that each rule is seen to fail.


def bad_missing_help():
    parser = argparse.ArgumentParser(prog="bad")
    parser.add_argument("--quiet", action="store_true", help="fine")
    parser.add_argument("--tree")
    return parser


def bad_default_none():
    parser = argparse.ArgumentParser(prog="bad")
    parser.add_argument("--out", default=None, help="the folder (default: %(default)s)")
    return parser


def bad_absolute_path():
    parser = argparse.ArgumentParser(prog="bad")
    parser.add_argument("--work", default=Path("/tmp/qubiq-volume-bench"), help="where (default: %(default)s)")
    return parser


def bad_checkout_path():
    parser = argparse.ArgumentParser(prog="bad")
    parser.add_argument("--out", default=ROOT / "bench" / "results", help="results (default: %(default)s)")
    return parser


def bad_default_twice():
    parser = argparse.ArgumentParser(prog="bad", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    return parser


def bad_settings():
    parser = argparse.ArgumentParser(prog="bad")
    group = parser.add_argument_group("settings")
    group.add_argument("--depth", dest="switch_depth", help="poolings (default: 5; study: 5; demo: 4)")
    return parser


def bad_tracker_reference():
    return argparse.ArgumentParser(prog="bad", description="The data check's time (issue 25).")


BAD = [
    ("missing help", bad_missing_help, {"missing help"}),
    ("(default: None)", bad_default_none, {"(default: None)"}),
    ("absolute path", bad_absolute_path, {"absolute path"}),
    ("path of this checkout", bad_checkout_path, {"absolute path"}),
    ("default twice", bad_default_twice, {"default twice"}),
    ("settings switch", bad_settings, {"settings without 'default preset:'"}),
    ("tracker reference", bad_tracker_reference, {"tracker reference"}),
]
COMMANDS = all_parsers()


@pytest.mark.parametrize(
    "parser, expected",
    [pytest.param(parser, set(), id=label) for label, parser in COMMANDS]
    + [pytest.param(build(), broken, id=f"bad: {label}") for label, build, broken in BAD],
)
def test_help_rules(parser, expected, monkeypatch):
    text = formatted(parser, monkeypatch)
    found = {name: rule(parser, text) for name, rule in RULES.items()}
    assert {name for name, problems in found.items() if problems} == expected, {k: v for k, v in found.items() if v}


def test_every_command_is_a_row():
    labels = [label for label, _ in COMMANDS]
    scripts = sorted(p.name for p in ROOT.glob("*.py"))
    assert [f"python {s}" for s in scripts] == sorted(
        label for label in labels if "/" not in label and label.endswith(".py")
    )
    for command in (
        "python -m common.predict",
        "python -m common.score",
        "python -m common.gather",
        "python -m common.experiment",
        "python -m common.comparison",
        "python -m common.demo",
        "python -m common.data.anatomy",
        "python -m common.data.volume_demo",
        "python bench/benchmark.py",
        "python bench/backends.py",
        "python bench/backends.py worker",
        "python bench/backends.py compare",
        "python bench/backends.py gpu",
        "python bench/data_check.py",
        "python bench/volume_data.py",
        "python bench/predict.py",
    ):
        assert command in labels


def test_settings_say_the_default_preset_and_slice_margin_is_the_volume_scripts_only():
    parsers = dict(COMMANDS)
    kidney = " ".join(parsers["python Kidney.py"].format_help().split())
    assert "(default preset: 512; study: 512; demo: 128)" in kidney and "--slice-margin" not in kidney
    assert "--slice-margin" in parsers["python Pancreas.py"].format_help()
    task = expanded_help(
        parsers["python Brain_Tumor.py"], parsers["python Brain_Tumor.py"]._option_string_actions["--task"]
    )
    assert task == "task to run: 1, 2 or 3 (default: the script's 'task = 1')"
