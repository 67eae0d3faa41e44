"""The README's configuration reference is the generated sample, and its first commands are the two."""

from __future__ import annotations

import re
from pathlib import Path

from objstore.sample_config import render_sample_config

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_configuration_reference_is_generated_from_the_model() -> None:
    block = re.search(
        r"<!-- config-reference:start -->\n```toml\n(.*?)```\n<!-- config-reference:end -->", README, re.S
    )
    assert block is not None
    assert block.group(1) == render_sample_config(None)


def test_readme_starts_with_the_two_commands() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.S)[:2]
    assert commands[0].endswith("uv run python examples/orchestrator.py")
    assert commands[1].endswith("uv run pytest")
    assert (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text().count("uv run pytest") == 1
