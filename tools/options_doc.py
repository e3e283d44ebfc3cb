"""Write ``docs/options.md``, every command's options, from the commands' parsers themselves.

::

    python tools/options_doc.py --write     # rewrite docs/options.md
    python tools/options_doc.py             # print the page
    python tools/options_doc.py --check     # exit 1 if docs/options.md differs from the parsers

The page is rendered from the parsers' actions (option strings, metavar or choices, the help with
``%(default)s`` expanded as argparse expands it), as Markdown tables of its own, not argparse's formatted
``-h`` (whose layout changes between Python versions): the page is the same on any Python 3.11+.
``tests/test_options_doc.py`` keeps the file equal to this output, and ``tests/test_help.py`` reads
:func:`all_parsers` to check every command's help.

The six dataset scripts share one parser (:func:`common.cli.build_parser`): its options are shown once,
with :data:`SHOWN_SCRIPT`'s texts, an option that not every script has marked with the scripts that have
it, then one table of the settings' values per dataset and preset.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTPUT = Path("docs") / "options.md"
#: The dataset script whose texts the page shows for the scripts' shared options.
SHOWN_SCRIPT = "Kidney.py"
#: How the help of a settings switch ends (:func:`common.cli.add_switches`).
PRESET_VALUES = re.compile(r" \(default preset: (?P<default>.*); study: (?P<study>.*); demo: (?P<demo>.*)\)$")


def dataset_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each dataset script's parser, by script name, as the script builds it (its ``task = N`` line read)."""
    from common.cli import build_parser
    from common.datasets import DATASETS, script_task

    return {
        entry.script: build_parser(entry.spec, entry.study, entry.demo, script_task(entry), prog=entry.script)
        for entry in DATASETS.values()
    }


def _module(name: str) -> Callable[[], argparse.ArgumentParser]:
    def build() -> argparse.ArgumentParser:
        import importlib

        return importlib.import_module(name).build_parser()

    return build


#: The other commands, in the page's order: how each is run, and its parser.
COMMANDS: list[tuple[str, Callable[[], argparse.ArgumentParser]]] = [
    ("python -m common.predict", _module("common.predict")),
    ("python -m common.score", _module("common.score")),
    ("python -m common.gather", _module("common.gather")),
    ("python -m common.experiment", _module("common.experiment")),
    ("python -m common.comparison", _module("common.comparison")),
    ("python -m common.demo", _module("common.demo")),
    ("python -m common.data.anatomy", _module("common.data.anatomy")),
    ("python -m common.data.volume_demo", _module("common.data.volume_demo")),
    ("python bench/benchmark.py", _module("bench.benchmark")),
    ("python bench/backends.py", _module("bench.backends")),
    ("python bench/data_check.py", _module("bench.data_check")),
    ("python bench/volume_data.py", _module("bench.volume_data")),
    ("python bench/predict.py", _module("bench.predict")),
]


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[argparse.Action, dict[str, argparse.ArgumentParser]]]:
    """The parser's subcommand actions, each with its subparsers by name."""
    return [(a, dict(a.choices)) for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser (a subcommand's too), labelled as it is run."""
    found = [(f"python {script}", parser) for script, parser in dataset_parsers().items()]
    for label, build in COMMANDS:
        parser = build()
        found.append((label, parser))
        for _, choices in subcommands(parser):
            found += [(f"{label} {name}", sub) for name, sub in choices.items()]
    return found


def expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's help as ``-h`` prints it: ``%(default)s`` and the like expanded, on one line."""
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def shown_actions(actions) -> list[argparse.Action]:
    """What ``-h`` lists, less ``-h`` itself and the subcommand list (shown as its own table)."""
    return [
        a
        for a in actions
        if a.help != argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def synopsis(action: argparse.Action) -> str:
    """``--image-size N``, ``--demo [{synthetic}]``, ``RUN [RUN ...]``: the option and what it takes."""
    if action.choices is not None and action.metavar is None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.metavar or (action.dest if not action.option_strings else action.dest.upper())
    if action.nargs == 0:
        taken = ""
    elif action.nargs == "?":
        taken = f"[{metavar}]"
    elif action.nargs == "+":
        taken = f"{metavar} [{metavar} ...]"
    elif action.nargs == "*":
        taken = f"[{metavar} ...]"
    elif isinstance(action.nargs, int):
        taken = " ".join([metavar] * action.nargs)
    else:
        taken = metavar
    return " ".join(part for part in (", ".join(action.option_strings), taken) if part)


def code(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def prose(text: str) -> str:
    """Text in a Markdown table cell: what Markdown would read as markup escaped."""
    for char in ("\\", "*", "<", "|"):
        text = text.replace(char, "\\" + char)
    return text


def table(rows: list[tuple[str, str]], header: tuple[str, str] = ("option", "meaning")) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return lines + [f"| {left} | {prose(right)} |" for left, right in rows]


def option_cell(action: argparse.Action) -> str:
    """The synopsis as code; a required option says so (argparse's usage line shows it without brackets)."""
    return code(synopsis(action)) + (" (required)" if action.required and action.option_strings else "")


def group_sections(parser: argparse.ArgumentParser, level: str, meaning=None) -> list[str]:
    """One table per argument group that lists anything (``options`` and ``arguments`` merged first)."""
    meaning = meaning or (lambda action: expanded_help(parser, action))
    plain = [g for g in parser._action_groups if g in (parser._positionals, parser._optionals)]
    named = [g for g in parser._action_groups if g not in plain]
    lines: list[str] = []
    first = [a for g in plain for a in shown_actions(g._group_actions)]
    for action, choices in subcommands(parser):
        lines += [expanded_help(parser, action), ""] if action.help else []
        names = {a.dest: expanded_help(parser, a) for a in action._choices_actions}
        lines += table([(code(name), names.get(name, "")) for name in choices], ("command", "meaning")) + [""]
    if first:
        lines += table([(option_cell(a), meaning(a)) for a in first]) + [""]
    for group in named:
        actions = shown_actions(group._group_actions)
        if not actions:
            continue
        lines += [f"{level} {group.title}", ""]
        if group.description:
            lines += [prose(group.description), ""]
        lines += table([(option_cell(a), meaning(a)) for a in actions]) + [""]
    return lines


def only_in(option: str, parsers: dict[str, argparse.ArgumentParser]) -> list[str]:
    return [script for script, parser in parsers.items() if option in parser._option_string_actions]


def dataset_section() -> list[str]:
    """The scripts' options once (``SHOWN_SCRIPT``'s texts), what differs by script, the settings' values."""
    from common.cli import demo_kinds, demo_root
    from common.datasets import DATASETS, script_task
    from common.switches import SWITCHES

    parsers = dataset_parsers()
    shown = parsers[SHOWN_SCRIPT]
    widest = max(parsers.values(), key=lambda p: len(p._actions))
    missing = {a.option_strings[0] for p in parsers.values() for a in p._actions if a.option_strings} - set(
        widest._option_string_actions
    )
    if missing:  # the page takes the order of the script with every option
        raise SystemExit(f"no dataset script has every option; also wanted: {', '.join(sorted(missing))}")
    scripts = ", ".join(f"`{script}`" for script in parsers)
    lines = [
        "## The dataset scripts",
        "",
        f"{scripts}: one parser (`common/cli.py`, `build_parser`). The texts below are `{SHOWN_SCRIPT}`'s; where a "
        "script's differ (its tasks, experts, demo data), the first table says how. An option that not every "
        "script has says which have it.",
        "",
        "| script | dataset | `--task` | experts | `--demo`: its data root | `--ct-window` | `--slice-margin` |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in DATASETS.values():
        spec = entry.spec
        tasks = ", ".join(map(str, spec.valid_tasks))
        demos = ", ".join(f"{kind} (`{demo_root(spec, kind)}`)" for kind in demo_kinds(spec))
        lines.append(
            f"| `{entry.script}` | {spec.name} | {tasks} (default {script_task(entry)}) | {spec.experts} | {demos} | "
            f"{'yes' if spec.modality == 'CT' else 'no (MRI)'} | {'yes' if spec.volumetric else 'no (2D images)'} |"
        )
    lines.append("")

    def meaning(action: argparse.Action) -> str:
        option = action.option_strings[0]
        parser = shown if option in shown._option_string_actions else parsers[only_in(option, parsers)[0]]
        text = expanded_help(parser, parser._option_string_actions[option])
        if action.dest.startswith("switch_"):
            base = SWITCHES[action.dest.removeprefix("switch_")].help
            if not text.startswith(base) or not PRESET_VALUES.search(text):
                raise SystemExit(f"{option}: its help is not the switch's text and its preset values")
            text = f"{base} (default: the preset's value, see below)"
        having = only_in(option, parsers)
        if len(having) < len(parsers):
            text += f" (only {', '.join(having)})"
        return text

    lines += group_sections(widest, "###", meaning)
    return lines + settings_values(parsers)


def settings_values(parsers: dict[str, argparse.ArgumentParser]) -> list[str]:
    """The settings' values per script and preset, read from each script's help."""
    switches = [
        a for a in max(parsers.values(), key=lambda p: len(p._actions))._actions if a.dest.startswith("switch_")
    ]
    lines = [
        "### The settings' values per dataset and preset",
        "",
        "Each cell is the value of the `default` preset / the `study` preset / the `demo` preset (the one `--demo` "
        "starts from), or one value where the three agree; a dash where the script has no such option. "
        "`--preset` picks the preset; a setting given on the command line replaces its value.",
        "",
        "| setting | " + " | ".join(f"`{script}`" for script in parsers) + " |",
        "|---" * (len(parsers) + 1) + "|",
    ]
    for switch in switches:
        option = switch.option_strings[0]
        cells = []
        for parser in parsers.values():
            action = parser._option_string_actions.get(option)
            if action is None:
                cells.append("-")
                continue
            values = PRESET_VALUES.search(expanded_help(parser, action)).groupdict()
            shown = list(dict.fromkeys(values.values()))
            cells.append(prose(shown[0] if len(shown) == 1 else " / ".join(values.values())))
        lines.append(f"| {code(option)} | " + " | ".join(cells) + " |")
    return lines + [""]


def command_section(label: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"## `{label}`", ""]
    if parser.description:
        lines += [prose(" ".join(parser.description.split())), ""]
    lines += group_sections(parser, "###")
    for _, choices in subcommands(parser):
        for name, sub in choices.items():
            lines += [f"### `{label} {name}`", ""]
            if sub.description:
                lines += [prose(" ".join(sub.description.split())), ""]
            lines += group_sections(sub, "####")
    return lines


def render() -> str:
    """The whole page."""
    lines = [
        "_Generated from the commands' parsers by `python tools/options_doc.py --write`; do not edit by hand._",
        "",
        "# Command-line options",
        "",
        "Every option of every command, as its `-h` states it. Each command also takes `-h`/`--help`.",
        "",
    ]
    lines += dataset_section()
    for label, build in COMMANDS:
        lines += command_section(label, build())
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/options_doc.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT.as_posix()} instead of printing it")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if {OUTPUT.as_posix()} differs from the parsers' page"
    )
    args = parser.parse_args(argv)
    page = render()
    path = ROOT / OUTPUT
    if args.check:
        if not path.is_file() or path.read_text() != page:
            print(f"{OUTPUT.as_posix()} is out of date; regenerate it: python tools/options_doc.py --write")
            return 1
        return 0
    if args.write:
        path.write_text(page)
        print(f"wrote {OUTPUT.as_posix()}")
        return 0
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
