"""Export a conversation to Markdown, with each answer's numbered sources."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.store import Conversation, Message


def conversation_markdown(conversation: Conversation, messages: list[Message],
                          you: str = "You", assistant: str = "AstrAI", sources: str = "Sources") -> str:
    """The conversation as Markdown; role and heading names are passed in already translated."""
    lines = [f"# {conversation.title or 'AstrAI'}", ""]
    for m in messages:
        lines += [f"## {you if m.role == 'user' else assistant}", "", m.content.strip(), ""]
        if m.sources:
            lines += [f"**{sources}**", ""]
            for s in m.sources:
                page = f", p. {s['page']}" if s.get("page") else ""
                lines.append(f"{s.get('n', '?')}. `{s.get('file', '')}`{page}")
                quote = " ".join(str(s.get("text", "")).split())
                if quote:
                    lines.append(f"   > {quote[:300]}{'…' if len(quote) > 300 else ''}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
