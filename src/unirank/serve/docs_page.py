"""The ``/docs`` page: one self-contained HTML document (inline CSS and script, nothing from another host).

FastAPI's default docs load swagger-ui from a CDN, so they are blank on a machine without internet. This page
fetches the app's own OpenAPI JSON (same origin, under the ``root_path``) and renders every route, its
parameters, request and response schemas, with a small form to try a request (API key optional).
Its ``Content-Security-Policy`` header forbids loading anything from elsewhere.

>>> html = docs_html("/openapi.json", "unirank")
>>> "https://" in html or "http://" in html, "/openapi.json" in html
(False, True)
"""

from __future__ import annotations

import html as _html
import json

__all__ = ["CSP", "docs_html"]

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.1em;margin:0}.op{border:1px solid #ccc;border-radius:6px;margin:.8em 0}
.op>summary{padding:.5em;cursor:pointer;list-style:none}.op[open]>summary{border-bottom:1px solid #ddd}
.m{display:inline-block;min-width:4.5em;font-weight:700;text-transform:uppercase}.get{color:#2a7}.post{color:#27c}
.body{padding:.5em 1em}pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:24em}
textarea{width:100%;min-height:8em;font-family:monospace}input{width:22em}button{margin:.3em 0}
"""

_SCRIPT = r"""
const SPEC_URL = __SPEC_URL__;
const el = (tag, attrs, ...kids) => { const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k); return e; };
function deref(spec, s, depth) {
  if (!s || typeof s !== 'object' || depth > 8) return s;
  if (s.$ref) return deref(spec, s.$ref.split('/').slice(1).reduce((o, k) => o[k], spec), depth + 1);
  if (Array.isArray(s)) return s.map(x => deref(spec, x, depth + 1));
  const out = {}; for (const [k, v] of Object.entries(s)) out[k] = deref(spec, v, depth + 1); return out;
}
function example(schema) {
  if (!schema) return null;
  if (schema.examples && schema.examples.length) return schema.examples[0];
  if (schema.example !== undefined) return schema.example;
  return null;
}
async function main() {
  const root = document.getElementById('ops');
  let spec;
  try { spec = await (await fetch(SPEC_URL)).json(); }
  catch (err) { root.textContent = 'could not load ' + SPEC_URL + ': ' + err; return; }
  document.getElementById('title').textContent = spec.info.title + ' ' + spec.info.version;
  document.getElementById('desc').textContent = spec.info.description || '';
  const base = SPEC_URL.slice(0, SPEC_URL.lastIndexOf('/'));
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const body = el('div', {class: 'body'});
      if (op.description) body.append(el('p', {}, op.description));
      const req = op.requestBody && deref(spec, op.requestBody.content['application/json'].schema, 0);
      let input = null;
      if (req) {
        body.append(el('h2', {}, 'Request body'), el('pre', {}, JSON.stringify(req, null, 1)));
        input = el('textarea', {}); input.value = JSON.stringify(example(req) || {}, null, 2);
      }
      for (const [code, r] of Object.entries(op.responses || {})) {
        const c = r.content && r.content['application/json'];
        body.append(el('h2', {}, 'Response ' + code + ' ' + (r.description || '')));
        if (c && c.schema) body.append(el('pre', {}, JSON.stringify(deref(spec, c.schema, 0), null, 1)));
      }
      const key = el('input', {placeholder: 'API key (optional)', type: 'password'});
      const out = el('pre', {}); const go = el('button', {}, 'Send');
      go.onclick = async () => {
        const headers = {'content-type': 'application/json'};
        if (key.value) headers['authorization'] = 'Bearer ' + key.value;
        try {
          const r = await fetch(base + path, {method: method.toUpperCase(), headers,
            body: input ? input.value : undefined});
          out.textContent = r.status + '\n' + await r.text();
        } catch (err) { out.textContent = String(err); }
      };
      body.append(el('h2', {}, 'Try it'));
      if (input) body.append(input);
      body.append(el('br'), key, el('br'), go, out);
      const head = el('summary', {}, el('span', {class: 'm ' + method}, method), ' ' + path + '  ',
        el('small', {}, op.summary || ''));
      root.append(el('details', {class: 'op'}, head, body));
    }
  }
}
main();
"""


def docs_html(openapi_url: str, title: str) -> str:
    """The page for the OpenAPI document at ``openapi_url`` (a path on the same host)."""
    script = _SCRIPT.replace("__SPEC_URL__", json.dumps(openapi_url).replace("</", "<\\/"))
    link = f"<a href={_html.escape(json.dumps(openapi_url))}>{_html.escape(openapi_url)}</a>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_html.escape(title)} API</title><style>{_STYLE}</style></head><body>"
        f"<h1 id=title>{_html.escape(title)}</h1><p id=desc></p>"
        f"<p>OpenAPI JSON: {link}</p>"
        f"<div id=ops>loading…</div><script>{script}</script></body></html>"
    )
