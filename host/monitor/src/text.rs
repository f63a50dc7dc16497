//! Untrusted text made safe for a log line or a terminal.
//!
//! A plugin controls much of what the host writes: its log messages and
//! fields, progress reports, error and failure reasons, the names of
//! programs it was refused. Written raw, a newline forges a whole
//! host-looking log line, and ESC, CR or BEL reach the operator's terminal.
//! Control characters are therefore written as Rust escapes (`\n`,
//! `\u{1b}`) wherever such text meets a line-oriented output: the text log
//! (through [`EscapingStderr`], which every log line passes, whoever wrote
//! it) and the CLI's tables and reports (through [`escape_control`]).
//!
//! The JSON log format needs none of this: JSON encodes every control
//! character by construction, and the text is kept exact there.

use std::borrow::Cow;
use std::io::Write;

/// `text` with every control character (C0, DEL, C1) and every Unicode
/// bidirectional override written as an escape; other text is unchanged.
/// Borrows when nothing needed escaping, which is the common case.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut escaped, c);
    }
    Cow::Owned(escaped)
}

/// Whether `c` must not reach a terminal or a log line raw: it moves the
/// cursor, ends a line, rings a bell, starts an escape sequence, or
/// reorders what the operator reads (the bidi overrides of "trojan source").
pub fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// The text log's writer: standard error, with every control character of
/// a formatted line escaped except the newline that ends it.
///
/// tracing's text formatter renders one whole event into a buffer and
/// hands it over in one write, so each write here is one line: a newline
/// inside it came from a field or a message (a plugin's, most likely) and
/// would forge a line of its own. ANSI colours are off for the same reason:
/// their ESC would be escaped too, and a terminal must never receive a raw
/// ESC from a line that may hold plugin text.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapingStderr {
    type Writer = EscapingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingStderr
    }
}

impl Write for EscapingStderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let (body, ending) = match line.strip_suffix(b"\n") {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let body = String::from_utf8_lossy(body);
        let mut escaped = escape_control(&body).into_owned();
        escaped.push_str(ending);
        // One write of the whole line, so lines of concurrent threads and of
        // the monitor workers (which share this stderr) do not interleave.
        std::io::stderr().lock().write_all(escaped.as_bytes())?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        let forged = "ok\n2026-11-29T10:00:00Z ERROR steward::node: forged\r\u{1b}[2J\u{7}";
        let escaped = escape_control(forged);
        assert!(!escaped.chars().any(needs_escape), "{escaped}");
        assert_eq!(escaped, "ok\\n2026-11-29T10:00:00Z ERROR steward::node: forged\\r\\u{1b}[2J\\u{7}");
        assert!(matches!(escape_control("plain, ünïcode and \\ kept"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\u{9b}b\u{202e}c"), "a\\u{9b}b\\u{202e}c");
    }
}
