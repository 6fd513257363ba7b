"""The docs cannot rot: every public name is in the API reference, and every Python
snippet of the user guide runs, in order, in one namespace."""

import pathlib
import re
import types

import pytest

import odejax

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def public_names():
    return sorted(
        name
        for name in dir(odejax)
        if not name.startswith("_") and not isinstance(getattr(odejax, name), types.ModuleType)
    )


def test_every_public_name_in_api_docs():
    api = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^::: odejax\.(\w+)\s*$", api, re.MULTILINE))
    missing = [name for name in public_names() if name not in documented]
    assert not missing, f"public names without a `::: odejax.NAME` entry in docs/api.md: {missing}"
    stale = sorted(documented - set(public_names()))
    assert not stale, f"docs/api.md documents names that odejax does not export: {stale}"
    for name in public_names():
        summary = re.search(rf"^- `{name}`: \S", api, re.MULTILINE)
        assert summary, f"docs/api.md has no one-line summary `- `{name}`: ...` for {name}"


def python_blocks(path):
    """The ```python fenced blocks of a Markdown file, with the line each starts on."""
    text = path.read_text()
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```\s*$", text, re.DOTALL | re.MULTILINE)
    ]


@pytest.mark.parametrize("page", ["index.md", "getting-started.md", "../README.md"])
def test_doc_snippets_run(page):
    path = (DOCS / page).resolve()
    blocks = python_blocks(path)
    assert blocks, f"no ```python blocks found in {path}"
    namespace = {"__name__": f"docs.{path.stem}"}
    for line, code in blocks:
        # Tracebacks point at `docs/<page>:<line>` with the line numbers of the file.
        source = "\n" * (line - 1) + code
        exec(compile(source, str(path), "exec"), namespace)  # noqa: S102
