"""The bad-input corpus (``tests/corpus/make_corpus.py``): every case through the real CLI, one test.

For each case: the documented exit code; no traceback; for an error, exactly one ``error:`` line that names
the input and the problem; the good inputs of the same call still classified (``classify`` cases); for the
converter, no output file and no temp file left, and no code from a pickle ever run. Every case runs
in-process through click's CliRunner; a representative subset also runs in a real ``python -m slidelite``
process (where Python's warnings and native crashes would show), and permission cases run only there.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import asdict
from typing import Dict, Iterator

import pytest

from tests._cli_fixtures import CliRun, run_cli, run_subprocess
from tests.corpus.make_corpus import FAMILIES, SPECS, Case, Spec, spec_ids, write_corpus

SPECS_BY_ID: Dict[str, Spec] = {spec.id: spec for spec in SPECS}


def _params() -> Iterator[object]:
    for spec in SPECS:
        also = ("subprocess",) if spec.subprocess else ()
        runners = ("subprocess",) if spec.unprivileged else ("clirunner", *also)
        marks = (pytest.mark.convert, pytest.mark.slow) if spec.family == "checkpoint" else ()
        for runner in runners:
            yield pytest.param(spec.id, runner, id=f"{spec.family}-{spec.id}-{runner}", marks=marks)


class Corpus:
    """The corpus under ``root``: each family is written (into ``root/<family>``) when first needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: Dict[str, Dict[str, Case]] = {}

    def case(self, case_id: str) -> Case:
        """The written case ``case_id``."""
        family = SPECS_BY_ID[case_id].family
        if family not in self.written:
            self.written[family] = write_corpus(self.root / family, [family])
        return self.written[family][case_id]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))


def _run(case: Case, runner: str) -> CliRun:
    if runner == "clirunner":
        return run_cli(case.args, env=case.env)
    return run_subprocess(case.args, env=case.env, unprivileged=case.unprivileged)


@pytest.mark.parametrize("case_id, runner", list(_params()))
def test_corpus_case(corpus, case_id: str, runner: str) -> None:
    case = corpus.case(case_id)
    run = _run(case, runner)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.exit_code == case.exit_code, (run.stdout, run.stderr)
    if case.exit_code == 0:
        assert run.error_lines == [], run.stderr
    else:
        assert len(run.error_lines) == 1, run.stderr  # one line, no Python warning or native log around it
        (line,) = run.error_lines
        assert line.startswith("error: ") and case.named in line and case.fragment in line, line
        if case.family == "image":
            assert line.startswith(f"error: {case.named}: "), line
    if case.results is not None:
        assert [json.loads(text)["path"] for text in run.stdout.splitlines()] == list(case.results), run.stdout
    if case.output is not None:
        assert not Path(case.output).exists()
        assert os.listdir(Path(case.output).parent) == []  # no partial or temp file either
    if case.marker is not None:
        assert not Path(case.marker).exists(), "code from the pickle ran"


def test_the_corpus_is_declared_completely() -> None:
    """At least 40 cases over the three families; every error case documents its message."""
    ids = spec_ids()
    assert len(ids) == len(set(ids)) >= 40
    counts = {family: len(spec_ids([family])) for family in FAMILIES}
    assert min(counts.values()) >= 10, counts
    for spec in SPECS:
        assert spec.exit_code in (0, 1, 2)
        assert (spec.fragment is None) == (spec.exit_code == 0), spec.id


def test_manifest_lists_the_written_cases(corpus: Corpus) -> None:
    corpus.case(spec_ids(["model"])[0])
    manifest = json.loads((corpus.root / "model" / "manifest.json").read_text(encoding="utf-8"))
    cases = corpus.written["model"]
    assert [c["id"] for c in manifest["cases"]] == spec_ids(["model"]) == list(cases)
    assert manifest["cases"] == [json.loads(json.dumps(asdict(case))) for case in cases.values()]
