"""MkDocs hooks for the documentation site (``hooks:`` in mkdocs.yml).

The docstrings use reStructuredText cross-reference roles (``:class:`~worker.app.App```) that
Markdown does not know, so the API reference would show ``:class:`` before the name. This hook
drops the role and, for a ``~`` target, keeps only the last dotted part, as Sphinx would.
"""

from __future__ import annotations

import re
from typing import Any

# After Markdown, ":meth:`send`" is ":meth:<code>send</code>".
ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def strip_role(match: re.Match[str]) -> str:
    """The code element alone; ``~a.b.C`` shows as ``C``."""
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **_: Any) -> str:
    """Rewrite every role in a rendered page (only the API reference has any)."""
    return ROLE.sub(strip_role, html)
