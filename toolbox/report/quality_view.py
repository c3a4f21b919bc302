"""The correctness check's results on screen: one line per configuration, the base they were measured against, errors."""

from __future__ import annotations

import math
from pathlib import Path

from toolbox.llamacpp import fa_name

_STYLE = {"same": "green", "degraded": "yellow", "broken": "bold red"}


def _fmt(x, spec: str) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def _kld(x) -> str:
    """KL divergence compactly: 0, 1.5e-05, 0.0306, 1.23 (llama-perplexity prints 6 decimals)."""
    if x is None:
        return ""
    if not math.isfinite(x):
        return str(x)
    if x == 0 or abs(x) >= 0.001:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"
    return f"{x:.1e}"


def render_table(results_: list[dict], title: str | None = None):
    """A rich table of check results: one line per configuration, verdict coloured (model column when several)."""
    from rich import box
    from rich.table import Table

    several = len({r.get("model_sha256") for r in results_}) > 1
    t = Table(title=title or "quality check: KL divergence to the cpu image's f16-KV logits", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ["backend", *(["model"] if several else []), "K/V", "fa", "PPL", "KLD", "p99", "top-1", "verdict"]
    for name in cols:
        t.add_column(name, justify="right" if name in ("PPL", "KLD", "p99", "top-1") else "left", no_wrap=True)
    for r in results_:
        fa = fa_name(r.get("flash_attn")) or str(r.get("flash_attn"))
        v = r.get("verdict")
        shown = f"[{_STYLE.get(v, '')}]{v}[/]" if v else "[red]not checked[/]"
        top1 = r.get("top1_agree")
        cells = [
            str(r.get("backend")),
            *([Path(str(r.get("model") or "")).name or str(r.get("model_sha256"))[:12]] if several else []),
            f"{r.get('type_k')}/{r.get('type_v')}",
            fa,
            _fmt(r.get("ppl"), ".5g"),
            _kld(r.get("kld_mean")),
            _kld(r.get("kld_p99")),
            "" if top1 is None else _fmt(100 * top1, ".1f") + "%",
            shown,
        ]
        t.add_row(*cells)
    return t


def describe_base(base: dict, ppl_base: float | None = None) -> str:
    """One line on the reference a set of results was measured against."""
    return (
        f"base: {base.get('image')} with f16 K and V, flash attention off, model {str(base.get('model_sha256'))[:12]}, "
        f"{base.get('chunks')} windows of {base.get('ctx')} tokens of toolbox/data/check-text.txt"
        + (f", PPL {ppl_base:.2f}" if ppl_base is not None else "")
        + (" (cached)" if base.get("cached") else "")
    )


def error_lines(results_: list[dict]) -> list[str]:
    """Why each configuration that has no verdict could not be checked."""
    return [
        f"{r.get('backend')} {r.get('type_k')}/{r.get('type_v')} on {Path(str(r.get('model') or r.get('model_sha256'))).name}: {r['error']}"
        + (f" (log: {r['log']})" if r.get("log") else "")
        for r in results_
        if r.get("verdict") is None and r.get("error")
    ]
