"""A griffe extension for the docs site: the docstrings' reST idioms, as Markdown.

eventcore's docstrings are written for both ``help()`` and this site, in a few reST
idioms that Markdown would show verbatim. This extension rewrites, in every docstring:

- a Sphinx role (``:class:`~eventcore.Command```) to an optional autorefs link: a
  link when the target is rendered somewhere on the site, plain code otherwise (never
  a broken link). A name without a dot is looked up in the docstring's own module;
  ``~`` shows the last part only;
- a doctest (lines from ``>>>`` to the next blank line) to a fenced ``pycon`` block
  (Markdown would read ``>>>`` as nested quotes), without its ``# doctest:`` directives
  (they are for the doctest runner, not the reader);
- the ``::`` that introduces an indented literal block to ``:`` (the block itself is
  already code in Markdown);
- a bullet list right under a line of text (reST's definition list, or a list without a
  blank line before it) to a list Markdown sees: a blank line before it, dedented.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import griffe

LITERAL = re.compile(r"(?<=\S)::$", re.M)
DIRECTIVE = re.compile(r"\s*# doctest:[^\n]*$")
ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)\.?([\w.]+)`"
)


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the package's docstrings once it is loaded."""
        for obj in _objects(pkg):
            if obj.docstring is not None:
                module = obj.module.path if obj.module is not None else pkg.path
                link = functools.partial(_link, module=module)
                text = ROLE.sub(link, obj.docstring.value)
                text = LITERAL.sub(":", _fence_doctests(text))
                obj.docstring.value = _open_lists(text)


def _link(match: re.Match[str], module: str) -> str:
    short, target = match.group(1), match.group(2)
    identifier = target if "." in target else f"{module}.{target}"
    title = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    fence: str | None = None  # the open fence's indent
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(">>>"):
            fence = line[: len(line) - len(stripped)]
            out.append(f"{fence}```pycon")
        elif fence is not None and not stripped:
            out.append(f"{fence}```")
            fence = None
        out.append(DIRECTIVE.sub("", line) if fence is not None else line)
    if fence is not None:
        out.append(f"{fence}```")
    return "\n".join(out)


def _open_lists(text: str) -> str:
    out: list[str] = []
    in_list = False  # inside a list item (its first line or a continuation)
    body: tuple[int, int] | None = (
        None  # a dedented list: (its indent, columns removed)
    )
    for line in text.split("\n"):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if body is not None:
            if stripped and indent >= body[0]:
                out.append(line[body[1] :])
                continue
            body = None
        if stripped.startswith("- ") and not in_list and out and out[-1].strip():
            above = out[-1]
            above_indent = len(above) - len(above.lstrip())
            if not above.rstrip().endswith((":", ".")):
                out[-1] = above.rstrip() + ":"
            out.append("")
            if indent > above_indent:
                body = (indent, indent - above_indent)
                line = line[body[1] :]
        if stripped.startswith("- "):
            in_list = True
        elif not stripped:
            in_list = False
        out.append(line)
    return "\n".join(out)
