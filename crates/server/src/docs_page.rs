//! The `/docs` page: Scalar's API reference, which loads its viewer from a CDN, plus a plain
//! offline fallback — when the viewer cannot load (no internet, a blocked CDN), the page lists
//! every operation from the embedded OpenAPI document and links `/openapi.json`.

use utoipa::openapi::OpenApi;
use utoipa_scalar::{Scalar, Servable};

const VIEWER_TAG: &str =
    r#"<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>"#;

/// Builds the list from the document Scalar embedded (`#api-reference`); text only, no HTML from
/// the document is interpreted.
const FALLBACK: &str = r#"<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference" onload="window.aragoraViewerLoaded = true" onerror="aragoraOfflineDocs()"></script>
<script>
function aragoraOfflineDocs() {
  if (window.aragoraViewerLoaded || document.getElementById('aragora-offline-docs')) return;
  var doc = JSON.parse(document.getElementById('api-reference').textContent);
  var root = document.createElement('main');
  root.id = 'aragora-offline-docs';
  root.style.fontFamily = 'sans-serif';
  root.style.margin = '2em';
  var h = document.createElement('h1');
  h.textContent = doc.info.title + ' ' + doc.info.version;
  root.appendChild(h);
  var p = document.createElement('p');
  p.textContent = 'The interactive viewer could not be loaded (it comes from a CDN). The full description is at ';
  var a = document.createElement('a');
  a.href = '/openapi.json';
  a.textContent = '/openapi.json';
  p.appendChild(a);
  root.appendChild(p);
  var table = document.createElement('table');
  Object.keys(doc.paths).sort().forEach(function (path) {
    Object.keys(doc.paths[path]).forEach(function (method) {
      var op = doc.paths[path][method];
      if (!op || typeof op !== 'object' || !op.responses) return;
      var tr = document.createElement('tr');
      [method.toUpperCase(), path, op.summary || ''].forEach(function (text) {
        var td = document.createElement('td');
        td.textContent = text;
        td.style.padding = '0.2em 1em 0.2em 0';
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
  });
  root.appendChild(table);
  document.body.appendChild(root);
}
// A CDN that never answers fires no error: give it 8 seconds.
setTimeout(function () { if (!window.aragoraViewerLoaded) aragoraOfflineDocs(); }, 8000);
</script>"#;

/// The HTML of `/docs` for `doc`.
pub fn html(doc: OpenApi) -> String {
    let page = Scalar::with_url("/docs", doc).to_html();
    debug_assert!(page.contains(VIEWER_TAG), "utoipa-scalar changed its page");
    page.replacen(VIEWER_TAG, FALLBACK, 1).replacen(
        "<title>Scalar</title>",
        "<title>Aragora API</title>",
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_the_document_and_an_offline_fallback() {
        let doc = utoipa::openapi::OpenApiBuilder::new()
            .info(utoipa::openapi::Info::new("Aragora API", "9.9.9"))
            .build();
        let page = html(doc);
        assert!(page.contains(r#"onerror="aragoraOfflineDocs()""#), "{page}");
        assert_eq!(page.matches("cdn.jsdelivr.net").count(), 1, "{page}");
        assert!(page.contains(r#""version":"9.9.9""#), "{page}");
        assert!(page.contains("<title>Aragora API</title>"));
        assert!(page.contains("a.href = '/openapi.json'"));
    }
}
