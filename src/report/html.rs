//! A self-contained HTML page (inline CSS, no scripts, no external links) for reports: a header
//! with a key/value table, a grid of figures and free text.

/// One figure of the grid: an image file beside the page and its caption.
pub struct Figure {
    /// Link relative to the page (a bare file name: the PNGs live beside the HTML).
    pub src: String,
    pub alt: String,
    pub caption: String,
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const CSS: &str = "\
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1600px;\
padding:0 1em;color:#222;background:#fff}\
h1{font-size:1.4em;margin:0 0 .6em}\
h2{font-size:1.15em;margin:1.4em 0 .5em}\
table.summary{border-collapse:collapse;font-size:.92em}\
table.summary th{text-align:left;padding:2px 14px 2px 0;color:#555;font-weight:normal;\
vertical-align:top}\
table.summary td{padding:2px 0;font-family:'DejaVu Sans Mono',Menlo,monospace}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}\
figure{margin:0;border:1px solid #ddd;padding:6px;background:#fafafa}\
figure img{width:100%;max-width:500px;height:auto;display:block;margin:0 auto}\
figcaption{font-size:.88em;color:#444;margin-top:4px}\
.howto{max-width:60em;line-height:1.45}\
.howto li{margin-bottom:.35em}";

/// The whole page. `how_to_read_html` is trusted HTML (written by us); everything else is
/// escaped.
pub fn page(
    title: &str,
    summary: &[(String, String)],
    figures: &[Figure],
    how_to_read_html: &str,
) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!("<title>{}</title>\n", escape(title)));
    h.push_str(&format!("<style>{CSS}</style>\n</head>\n<body>\n"));
    h.push_str(&format!("<h1>{}</h1>\n", escape(title)));
    if !summary.is_empty() {
        h.push_str("<table class=\"summary\">\n");
        for (k, v) in summary {
            h.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                escape(k),
                escape(v)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Figures</h2>\n<div class=\"grid\">\n");
    for f in figures {
        h.push_str(&format!(
            "<figure><img src=\"{}\" alt=\"{}\" width=\"500\"><figcaption>{}</figcaption></figure>\n",
            escape(&f.src),
            escape(&f.alt),
            escape(&f.caption)
        ));
    }
    h.push_str("</div>\n<h2>How to read this</h2>\n<div class=\"howto\">\n");
    h.push_str(how_to_read_html);
    h.push_str("\n</div>\n</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_links_relative() {
        let p = page(
            "a <b> & \"c\"",
            &[("flux".into(), "1 < 2".into())],
            &[Figure {
                src: "x-report-mean.png".into(),
                alt: "mean".into(),
                caption: "posterior mean".into(),
            }],
            "<p>ok</p>",
        );
        assert!(p.contains("<h1>a &lt;b&gt; &amp; &quot;c&quot;</h1>"));
        assert!(p.contains("<td>1 &lt; 2</td>"));
        assert!(p.contains("src=\"x-report-mean.png\""));
        assert!(!p.contains("http"), "self-contained: no external links");
        assert!(!p.contains("<script"));
    }
}
