"""bertviz's head view and model view, from saved attention, offline and without torch.

bertviz's Python side (`head_view`, `model_view`) needs torch tensors and writes a page that
fetches require.js, d3 and jQuery from a CDN. The report uses bertviz's own JavaScript, read
from the installed package's files (the package is located, not imported), and feeds it the
attention that `interp attn-diff` saved: [layer][head][query][key] for one example and run.
static/bertviz-offline.js answers its require calls from local copies of d3 and jQuery.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

MARKER = "const params = PYTHON_PARAMS;"
PRETTY = (("Ġ", " "), ("▁", " "), ("</w>", ""))  # as bertviz's format_special_chars


def safe_json(value: object) -> str:
    """JSON that can sit inside a <script> element: no '<', '>' or '&' can end it or open a comment."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def bertviz_dir() -> Path | None:
    spec = importlib.util.find_spec("bertviz")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class View:
    kind: str  # "head" or "model"
    div_id: str
    script: str


def pretty_tokens(tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        for old, new in PRETTY:
            token = token.replace(old, new)
        out.append(token)
    return out


def attention_data(full: list, tokens: list[str], decimals: int = 4) -> str:
    """The JSON block both views read: {"attn": [layer][head][q][k], "tokens": [...]}, rounded."""
    def rounded(x):
        return [rounded(v) for v in x] if isinstance(x, list) else round(x, decimals)
    return safe_json({"attn": rounded(full), "tokens": pretty_tokens(tokens)})


def views(data_id: str, layers: int, heads: int, prefix: str) -> list[View]:
    """Head and model view scripts reading the attention JSON in the element `data_id`."""
    root = bertviz_dir()
    if root is None:
        raise FileNotFoundError("bertviz is not installed: no head or model view")
    extra = {
        "head": {"layer": layers - 1, "heads": None, "include_layers": list(range(layers))},
        "model": {"display_mode": "light", "include_layers": list(range(layers)), "include_heads": list(range(heads)),
                  "total_heads": heads},
    }
    out = []
    for kind in ("head", "model"):
        source = (root / f"{kind}_view.js").read_text(encoding="utf-8")
        if MARKER not in source:
            raise ValueError(f"{root / f'{kind}_view.js'}: no '{MARKER}' to fill; unsupported bertviz version")
        div_id = f"{prefix}-{kind}"
        params = dict(extra[kind], root_div_id=div_id)
        call = f"const params = interpBertvizParams({safe_json(data_id)}, {safe_json(params)});"
        out.append(View(kind=kind, div_id=div_id, script=source.replace(MARKER, call)))
    return out
