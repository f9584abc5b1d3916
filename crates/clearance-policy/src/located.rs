//! Cedar's errors with the place they point at: `policies:3:14: unexpected token ';'`.
//! Cedar reports its errors as diagnostics with source spans; the bundle's two texts are
//! named `schema` and `policies`, which a client that read them from files replaces with
//! the file names.

use miette::Diagnostic;

/// What a located message starts with for each text of a bundle.
pub const SCHEMA_SOURCE: &str = "schema";
pub const POLICIES_SOURCE: &str = "policies";

/// Each message of `error` (and of the errors it relates), prefixed with
/// `source:line:column` when Cedar gave a span. `base` is the offset in `text` of the
/// piece Cedar parsed (a chunk of a large policy text).
pub(crate) fn messages(source: &str, text: &str, base: usize, error: &dyn Diagnostic) -> Vec<String> {
    let mut out = Vec::new();
    collect(source, text, base, error, &mut out, 0);
    if out.is_empty() {
        out.push(error.to_string());
    }
    out
}

fn collect(source: &str, text: &str, base: usize, d: &dyn Diagnostic, out: &mut Vec<String>, depth: usize) {
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| base + l.offset());
    let mut message = match offset {
        Some(offset) => {
            let (line, column) = line_column(text, offset);
            format!("{source}:{line}:{column}: {d}")
        }
        None => d.to_string(),
    };
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    out.push(message);
    // Cedar relates the further errors of one parse to the first; a bound keeps a
    // pathological chain short.
    if depth < 4
        && let Some(related) = d.related()
    {
        for r in related.take(20) {
            collect(source, text, base, r, out, depth + 1);
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_from_one_in_characters() {
        let text = "ab\ncé;x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        // `;` follows a two-byte character: column 3, not 4.
        assert_eq!(line_column(text, text.find(';').unwrap_or_default()), (2, 3));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
