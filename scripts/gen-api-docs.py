#!/usr/bin/env python3
"""Prints docs/api.md from the OpenAPI document.

    aragora openapi | scripts/gen-api-docs.py > docs/api.md      # with a built binary
    scripts/gen-api-docs.py > docs/api.md                        # builds and runs it via cargo

The document comes from the binary (`aragora openapi` needs no server or database), so rebuild
after changing routes.
"""

import json
import subprocess
import sys

if sys.stdin.isatty():
    doc = json.loads(subprocess.run(["cargo", "run", "-q", "-p", "aragora", "--", "openapi"],
                                    check=True, capture_output=True, text=True).stdout)
else:
    doc = json.load(sys.stdin)
out = ["# API reference", "",
       "Generated from the OpenAPI document (`aragora openapi`, or `GET /openapi.json` on a running "
       "server; a browsable UI is at `/docs`). Every route except `/healthz`, `/readyz`, `/metrics`, "
       "`/openapi.json` and `/docs` requires a token (`Authorization: Bearer ara_…` or `X-API-Key`). "
       "Errors use one shape: `{\"error\": {\"code\", \"message\", \"details\"}}`. A `limit` outside "
       "its documented range is clamped into it (`0` → 1, too large → the maximum); a `limit` that is "
       "not a whole number from 0 to 4294967295 (e.g. `-5`, `ten`) is a 422 naming `limit`.", ""]
by_tag = {}
for path, item in sorted(doc["paths"].items()):
    for method, op in item.items():
        tag = (op.get("tags") or ["other"])[0]
        by_tag.setdefault(tag, []).append((path, method.upper(), op))
for tag in sorted(by_tag):
    out += [f"## {tag}", ""]
    for path, method, op in by_tag[tag]:
        # The whole doc comment, unwrapped (utoipa puts it in `summary`, line breaks included).
        summary = " ".join(
            part for part in (op.get("summary"), op.get("description")) if part
        ).strip().replace("\n", " ")
        out.append(f"### `{method} {path}`")
        out.append("")
        if summary:
            out += [summary, ""]
        params = op.get("parameters") or []
        if params:
            out.append("| parameter | in | required | description |")
            out.append("|---|---|---|---|")
            for p in params:
                desc = (p.get("description") or "").replace("\n", " ")
                out.append(f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | {desc} |")
            out.append("")
        body = op.get("requestBody", {}).get("content", {})
        for ctype, media in body.items():
            ref = media.get("schema", {}).get("$ref", "")
            out += [f"Request body: `{ctype}` {('`' + ref.split('/')[-1] + '`') if ref else ''}", ""]
        codes = ", ".join(f"{code} {r.get('description', '')}".strip() for code, r in op.get("responses", {}).items())
        if codes:
            out += [f"Responses: {codes}", ""]
sys.stdout.write("\n".join(out) + "\n")
