//! Which characters text from a caller may hold.

/// Whether `c` is a bidirectional embedding, override or isolate (U+202A–U+202E,
/// U+2066–U+2069). Such a character makes the text after it display in an
/// order other than its own: a user, group or host name carrying one can show
/// as another's ("Trojan Source", CVE-2021-42574), in the portal, the audit log
/// and a terminal alike. Text written right to left needs none of them; the
/// marks that only nudge neutral characters (U+200E, U+200F, U+061C) stay allowed.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` may appear in a single-line name or value: no control
/// character (line breaks and tabs included) and no bidirectional control.
pub fn is_name_char(c: char) -> bool {
    !c.is_control() && !is_bidi_control(c)
}

/// Whether `c` may appear in free text: a name's characters, plus the tab and
/// line breaks of multi-line text.
pub fn is_text_char(c: char) -> bool {
    is_name_char(c) || matches!(c, '\t' | '\n' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_embeddings_and_isolates_are_refused_and_marks_are_not() {
        for c in ['\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}'] {
            assert!(is_bidi_control(c) && !is_text_char(c), "{c:?}");
        }
        for c in ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'] {
            assert!(is_bidi_control(c) && !is_name_char(c), "{c:?}");
        }
        // Marks, joiners and right-to-left letters are text.
        for c in [
            '\u{200E}', '\u{200F}', '\u{061C}', '\u{200D}', 'ש', 'ع', 'é',
        ] {
            assert!(is_name_char(c), "{c:?}");
        }
        assert!(!is_name_char('\0') && !is_name_char('\n') && !is_name_char('\u{7f}'));
        assert!(is_text_char('\n') && is_text_char('\t') && is_text_char('\r'));
        assert!(!is_text_char('\0') && !is_text_char('\u{1b}'));
    }
}
