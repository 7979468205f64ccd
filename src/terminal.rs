//! What may reach a terminal: the one rule, used by every front end before it prints text
//! that came from a stranger (a torrent's name, comment and file names, a tracker's
//! messages, a peer's client name, an error quoting any of them, a log line).
//!
//! A terminal acts on some characters instead of showing them: C0 controls such as ESC
//! and BEL start escape sequences (clear the screen, set the window title, write to the
//! clipboard on some terminals), C1 controls (U+0080 to U+009F) are the same sequences
//! in one character, DEL erases, and the bidirectional formatting characters make the
//! rest of a line display in another order than it is read, so a name can pretend to end
//! in `.txt`. None of these may pass through. This module is pure: it knows nothing of
//! where text goes.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: every control character (C0, DEL,
/// C1; tab and newline included, since one line of output must stay one line), the
/// bidirectional embeddings, overrides, isolates and marks, and the Unicode line and
/// paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `s` with every character [`is_unsafe`] escaped as Rust writes it (`\u{1b}`, `\n`),
/// so the user still sees that something was there and what it was. Borrowed when
/// there is nothing to escape, which is almost always.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(printable("naïve ünïcode 日本"), Cow::Borrowed(_)));
        assert_eq!(printable("a \\ b"), "a \\ b");
    }

    #[test]
    fn escapes_c0_c1_del_and_newlines_are_escaped() {
        assert_eq!(printable("a\u{1b}[31mred\n"), "a\\u{1b}[31mred\\n");
        assert_eq!(printable("bell\u{7}"), "bell\\u{7}");
        assert_eq!(printable("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(printable("del\u{7f}"), "del\\u{7f}");
        assert_eq!(printable("\t\r"), "\\t\\r");
    }

    #[test]
    fn text_reordering_characters_are_escaped() {
        assert_eq!(printable("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(printable("\u{200F}\u{061C}"), "\\u{200f}\\u{61c}");
        assert_eq!(printable("a\u{2028}b"), "a\\u{2028}b");
    }

    proptest! {
        #[test]
        fn nothing_unsafe_survives(s in any::<String>()) {
            let shown = printable(&s);
            prop_assert!(!shown.chars().any(is_unsafe));
        }
    }
}
