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
/// The separators U+2028 and U+2029 are not controls: they show, and every
/// page escapes them where they could end a script's string.
pub fn is_name_char(c: char) -> bool {
    !c.is_control() && !is_bidi_control(c)
}

/// Why a name was refused. Its text completes a sentence that starts with
/// the field's name ("userName may not contain …").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameRefusal {
    #[error("may not contain control characters or line breaks")]
    Control,
    #[error(
        "may not contain bidirectional overrides (such as U+202E), which show a name in another order"
    )]
    BidiControl,
    #[error(
        "may not contain U+{0:04X}, an invisible character that lets one name pass for another"
    )]
    Invisible(u32),
    #[error(
        "must be in Unicode normal form C (accents composed with their letters, as keyboards type them)"
    )]
    NotNormalized,
}

/// Where an invisible character (Unicode's Default_Ignorable_Code_Point)
/// may stand in a name. Each lets two names that differ look the same
/// ("ada@acme.example" and "ada\u{200B}@acme.example"), so none may follow
/// ASCII, where no script needs them; the few that scripts and emoji do need
/// may follow other characters.
enum Invisible {
    /// Nowhere: zero-width space, word joiner, soft hyphen, byte-order mark,
    /// Hangul fillers, invisible operators and the like.
    Refused,
    /// Right after a character outside ASCII: the joiners of Persian and
    /// Indic words and of emoji, variation selectors, Mongolian free
    /// variation selectors, and the direction marks of right-to-left text.
    AfterNonAscii,
    /// Inside an emoji tag sequence (U+1F3F4 and tags: the flags of
    /// England, Scotland and Wales); elsewhere tags spell hidden ASCII.
    Tag,
}

/// The Default_Ignorable_Code_Point ranges of Unicode 15.1
/// (DerivedCoreProperties.txt), bidirectional controls aside: written out
/// because the property is a short fixed list and no small crate exposes it.
fn invisible(c: char) -> Option<Invisible> {
    Some(match c {
        '\u{061C}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200C}'..='\u{200F}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{E0100}'..='\u{E01EF}' => Invisible::AfterNonAscii,
        '\u{E0020}'..='\u{E007F}' => Invisible::Tag,
        '\u{00AD}'
        | '\u{034F}'
        | '\u{115F}'..='\u{1160}'
        | '\u{17B4}'..='\u{17B5}'
        | '\u{200B}'
        | '\u{2060}'..='\u{2065}'
        | '\u{206A}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E001F}'
        | '\u{E0080}'..='\u{E00FF}'
        | '\u{E01F0}'..='\u{E0FFF}' => Invisible::Refused,
        _ => return None,
    })
}

/// Why `name` may not be a name (of a user, a group, a device, a token, an
/// account), or `None` when it may.
///
/// Names are compared and kept unique by their lower case, so two names
/// that look alike must not both pass: besides control characters and
/// bidirectional controls, this refuses invisible characters where no
/// script needs them, and a name not in normal form C ("e" and a combining
/// accent instead of "é"), which would be a second name that looks like the
/// first. Look-alike letters of different scripts (Cyrillic "а" for Latin
/// "a") are not refused: telling them apart needs a per-script policy.
pub fn name_refusal(name: &str) -> Option<NameRefusal> {
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_control() {
            return Some(NameRefusal::Control);
        }
        if is_bidi_control(c) {
            return Some(NameRefusal::BidiControl);
        }
        let allowed = match invisible(c) {
            None => true,
            Some(Invisible::Refused) => false,
            Some(Invisible::AfterNonAscii) => previous.is_some_and(|p| !p.is_ascii()),
            Some(Invisible::Tag) => {
                previous.is_some_and(|p| p == '\u{1F3F4}' || matches!(p, '\u{E0020}'..='\u{E007F}'))
            }
        };
        if !allowed {
            return Some(NameRefusal::Invisible(u32::from(c)));
        }
        previous = Some(c);
    }
    (!unicode_normalization::is_nfc(name)).then_some(NameRefusal::NotNormalized)
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

    #[test]
    fn names_that_would_pass_for_another_are_refused() {
        use NameRefusal::*;
        let refused = [
            ("ada\u{200B}@acme.example", Invisible(0x200B)),
            ("\u{FEFF}ada", Invisible(0xFEFF)),
            ("ad\u{00AD}a", Invisible(0xAD)),
            ("ada\u{2060}", Invisible(0x2060)),
            ("\u{3164}", Invisible(0x3164)),
            ("Engineering\u{E0041}", Invisible(0xE0041)),
            // Joiners, marks and selectors after ASCII hide, whatever follows.
            ("ada\u{200D}@acme.example", Invisible(0x200D)),
            ("ada\u{200C}", Invisible(0x200C)),
            ("ada\u{200E}@acme.example", Invisible(0x200E)),
            ("\u{200F}ada", Invisible(0x200F)),
            ("a\u{FE0F}", Invisible(0xFE0F)),
            ("Jos\u{0065}\u{0301}", NotNormalized),
            ("ada\tlovelace", Control),
            ("ada\u{202E}cam", BidiControl),
        ];
        for (name, why) in refused {
            assert_eq!(name_refusal(name), Some(why), "{name:?}");
        }
    }

    #[test]
    fn names_of_every_script_and_emoji_sequences_pass() {
        for name in [
            "ada@acme.example",
            "José Ñúñez",
            "Zoë O'Brien-Smith",
            // Persian: the zero-width non-joiner inside a word.
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
            // Devanagari: a virama and a joiner.
            "\u{0915}\u{094D}\u{200D}\u{0937}",
            "שלום\u{200F} 123",
            "\u{1F468}\u{200D}\u{1F4BB} Engineers",
            "\u{2764}\u{FE0F} Care team",
            // The flag of England: a black flag and its tags.
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F} Team",
            "経理部",
            "Ελληνικά",
        ] {
            assert_eq!(name_refusal(name), None, "{name:?}");
        }
    }

    #[test]
    fn every_default_ignorable_code_point_is_refused_after_ascii() {
        // Unicode 15.1's Default_Ignorable_Code_Point, as ranges.
        let ranges = [
            (0xAD, 0xAD),
            (0x34F, 0x34F),
            (0x61C, 0x61C),
            (0x115F, 0x1160),
            (0x17B4, 0x17B5),
            (0x180B, 0x180F),
            (0x200B, 0x200F),
            (0x202A, 0x202E),
            (0x2060, 0x206F),
            (0x3164, 0x3164),
            (0xFE00, 0xFE0F),
            (0xFEFF, 0xFEFF),
            (0xFFA0, 0xFFA0),
            (0xFFF0, 0xFFF8),
            (0x1BCA0, 0x1BCA3),
            (0x1D173, 0x1D17A),
            (0xE0000, 0xE0FFF),
        ];
        for (first, last) in ranges {
            for c in (first..=last).filter_map(char::from_u32) {
                let name = format!("ada{c}");
                assert!(name_refusal(&name).is_some(), "U+{:04X}", u32::from(c));
            }
        }
    }
}
