"""How the scripts use the package: through its public modules, never by path tricks or file names.

Code the scripts share lives in the package (``cnnjax.bench``) or in a sibling script that a
script imports the normal way (``python scripts/x.py`` puts ``scripts/`` on the path); a test
that needs a script's code runs the script, or loads one that imports no sibling. A run is read
through :class:`cnnjax.train.RunDir` (and ``restore_model``), whose readers own the run files'
names and schemas, so a script never names one.
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN_FILES = ("summary.json", "metrics.jsonl", "metrics.csv", "run.json", "config.json")
PATH_EDIT = re.compile(r"\bsys\.path\b")


def _sources(folder: str) -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh"))


def test_no_script_or_test_edits_the_import_path():
    this = pathlib.Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _sources("scripts") + _sources("tests")
        if path.resolve() != this
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if PATH_EDIT.search(line)
    ]
    assert not offenders, f"sys.path is edited at {offenders}; import through the package"


def test_no_script_names_a_run_file():
    offenders = [
        f"{path.relative_to(ROOT)}:{n} names {name}"
        for path in _sources("scripts")
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        for name in RUN_FILES
        if name in line
    ]
    assert not offenders, f"{offenders}; read runs through cnnjax.train.RunDir instead"
