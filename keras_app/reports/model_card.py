"""The model card: one self-contained report.html a person can open (keras_app.model_card).

The page follows the sections of Mitchell et al., "Model Cards for Model Reporting"
(FAT* 2019) for a run, an evaluation, an ensemble or a sweep folder. Every value
comes from the folder's own files (`keras_app.artifacts`); what the folder did not
record reads "not recorded". Figures are embedded as base64 PNG, the style is
inline and there is no script: the file opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from keras_app.artifacts.folders import REPORT_HTML, kind_of
from keras_app.core.errors import UsageError
from keras_app.core.files import write_text_atomic
from keras_app.reports.card_blocks import NOT_RECORDED, PAPER, Section
from keras_app.reports.card_kinds import SECTIONS_OF

# --- HTML ----------------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.kv th{width:34%}.missing{color:#a33;font-style:italic}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}
.warning{background:#fff3cd;border:1px solid #e0c060;padding:.6em}
"""


def cell(text: str) -> str:
    escaped = html.escape(text)
    return f'<span class="missing">{escaped}</span>' if text == NOT_RECORDED else escaped


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_block(kind: str, payload) -> str:
    if kind == "p":
        return f"<p>{cell(payload)}</p>"
    if kind == "code":
        return f"<pre><code>{html.escape(payload)}</code></pre>"
    if kind == "kv":
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in payload)
        return f'<table class="kv">{rows}</table>'
    if kind == "table":
        header, rows = payload
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"
    path, caption = payload
    return (
        f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption, quote=True)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render(title: str, sections: Sequence[Section]) -> str:
    """The whole page: inline style, no script, no link or source outside the file."""
    body = [
        f"<h1>{html.escape(title)}</h1>",
        '<p class="warning"><strong>Not for diagnostic use.</strong> '
        f"Model card after {html.escape(PAPER)}. Values the folder did not record read "
        f'<span class="missing">{NOT_RECORDED}</span>.</p>',
    ]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [render_block(kind, payload) for kind, payload in section.blocks]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # No request may leave the file, whatever a value contains.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_model_card(folder: str | Path) -> Path:
    """Writes FOLDER/report.html for a run, evaluation, ensemble or sweep folder.

    Args:
        folder: the folder; its kind is told from its files.

    Returns:
        The path of report.html.

    Raises:
        UsageError: the folder is none of the four kinds.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"folder not found: {folder}")
    kind = kind_of(folder)
    if kind not in SECTIONS_OF:
        raise UsageError(
            f"{folder} is a {kind} folder; the model card covers run, evaluation, ensemble "
            "and sweep folders (each run folder inside it has its own)"
        )
    sections = SECTIONS_OF[kind](folder)
    page = render(f"Model card: {kind} {folder.resolve().name}", sections)
    path = folder / REPORT_HTML
    write_text_atomic(path, page)
    return path
