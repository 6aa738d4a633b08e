"""The README stays true: two set-up commands, CLI examples that use real options, a Python example that runs."""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import click

from slidelite.cli import COMMANDS, main
from tests._cli_fixtures import ROOT, SAMPLE, skimage_photo
from tests._runtime_fixtures import make_fixture_onnx

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(section: str, language: str) -> list:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)


def test_exactly_two_setup_commands() -> None:
    first, second = (block.strip() for block in _blocks("Set up (fresh clone)", "sh"))
    assert len(_blocks("Set up (fresh clone)", "sh")) == 2
    assert "\n" not in first and "\n" not in second
    assert "venv" in first and 'pip install ".[onnx]"' in first
    assert first.endswith("slidelite classify slidelite/samples/chelsea.jpg")
    assert (ROOT / "slidelite" / "samples" / "chelsea.jpg").is_file()
    assert second == "./scripts/test.sh" and (ROOT / "scripts" / "test.sh").is_file()


def test_cli_examples_use_real_commands_and_options() -> None:
    (block,) = _blocks("Command line", "sh")
    checked = 0
    for line in block.splitlines():
        words = shlex.split(line.split(" #")[0])
        if not words or words[0] != "slidelite":
            continue
        name = words[1]
        assert name in COMMANDS, line
        command = main.get_command(click.Context(main), name)
        if isinstance(command, click.Group):  # e.g. `slidelite metadata embed`: check the sub-command's options
            command = command.get_command(click.Context(command), words[2])
            assert command is not None, line
        known = {opt for param in command.params for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])}
        known |= {"--help", "-h"}
        for word in words[2:]:
            if word.startswith("-") and word != ">":
                assert word in known, f"{line}: {word} is not an option of slidelite {name}"
        checked += 1
    assert checked >= 10


def test_python_example_runs(tmp_path: Path, monkeypatch) -> None:
    (code,) = _blocks("Python API", "python")
    make_fixture_onnx(tmp_path / "model.onnx", labels=("tabby, tabby cat", *[f"class {i}" for i in range(1, 10)]))
    shutil.copy(SAMPLE, tmp_path / "photo.jpg")
    shutil.copy(SAMPLE, tmp_path / "a.jpg")
    from PIL import Image

    Image.fromarray(skimage_photo("coffee")).save(tmp_path / "b.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert len(namespace["results"]) == 2
    assert all(c.label != "tabby, tabby cat" for r in namespace["results"] for c in r.categories)
    assert len(namespace["result"].categories) == 5
