//! Pre-tokenizers of `tokenizer.json`: split normalized text into words before the model.
//!
//! The GPT-2 byte-level regex
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! is implemented by hand with Oniguruma's semantics (first matching alternative wins,
//! `\s` = Unicode White_Space).

use serde_json::Value;
use unicode_general_category::{get_general_category, GeneralCategory as G};

use super::json::{bool_or, field, opt_str, str_field, string_pattern, type_of};
use crate::error::{Error, Result};

/// A piece of text under pre-tokenization; `first` is true when it starts at offset 0 of the
/// original input (used by Metaspace's `prepend_scheme: "first"`).
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    /// The text.
    pub text: String,
    /// Starts at the beginning of the original input.
    pub first: bool,
}

/// Where a delimiter goes when splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    /// Dropped.
    Removed,
    /// A piece of its own.
    Isolated,
    /// Appended to the previous piece.
    MergedWithPrevious,
    /// Prepended to the next piece.
    MergedWithNext,
    /// Consecutive delimiters form one piece.
    Contiguous,
}

impl Behavior {
    fn parse(s: &str) -> Result<Behavior> {
        Ok(match s {
            "Removed" => Behavior::Removed,
            "Isolated" => Behavior::Isolated,
            "MergedWithPrevious" => Behavior::MergedWithPrevious,
            "MergedWithNext" => Behavior::MergedWithNext,
            "Contiguous" => Behavior::Contiguous,
            other => return Err(Error::format(format!("unknown split behavior `{other}`"))),
        })
    }
}

/// When Metaspace prepends the replacement character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrependScheme {
    /// To every piece that does not start with it.
    Always,
    /// Only to the piece at the start of the input.
    First,
    /// Never.
    Never,
}

impl PrependScheme {
    /// Reads `prepend_scheme` (or the older `add_prefix_space`) of a Metaspace object.
    pub(crate) fn from_json(v: &Value, ctx: &str) -> Result<PrependScheme> {
        match opt_str(v, "prepend_scheme", ctx)? {
            Some("always") => Ok(PrependScheme::Always),
            Some("first") => Ok(PrependScheme::First),
            Some("never") => Ok(PrependScheme::Never),
            Some(other) => Err(Error::format(format!("{ctx}: unknown prepend_scheme `{other}`"))),
            None => Ok(if bool_or(v, "add_prefix_space", true, ctx)? {
                PrependScheme::Always
            } else {
                PrependScheme::Never
            }),
        }
    }
}

/// A pre-tokenizer.
#[derive(Debug, Clone)]
pub(crate) enum PreTokenizer {
    /// GPT-2 byte-level: optional prefix space, the GPT-2 regex, then bytes to printable chars.
    ByteLevel {
        /// Prepend ' ' to pieces that do not start with one.
        add_prefix_space: bool,
        /// Split with the GPT-2 regex.
        use_regex: bool,
    },
    /// BERT: split on whitespace (removed) and punctuation (isolated).
    Bert,
    /// SentencePiece-style: ' ' becomes the replacement char, split before it.
    Metaspace {
        /// The replacement character (U+2581).
        replacement: char,
        /// When to prepend it.
        prepend: PrependScheme,
        /// Split before each replacement character.
        split: bool,
    },
    /// `\w+|[^\w\s]+`.
    Whitespace,
    /// Split on whitespace.
    WhitespaceSplit,
    /// Digits split off.
    Digits {
        /// Each digit alone.
        individual: bool,
    },
    /// Punctuation split off.
    Punctuation(Behavior),
    /// Split on a literal string.
    Split {
        /// The literal pattern.
        pattern: String,
        /// Where the delimiters go.
        behavior: Behavior,
        /// Split on what does not match.
        invert: bool,
    },
    /// Several in order.
    Sequence(Vec<PreTokenizer>),
}

/// The GPT-2 byte to printable character table.
pub(crate) fn bytes_to_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter
    )
}

fn is_number(c: char) -> bool {
    matches!(get_general_category(c), G::DecimalNumber | G::LetterNumber | G::OtherNumber)
}

/// BERT's punctuation test: ASCII punctuation or Unicode P* categories.
pub(crate) fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            get_general_category(c),
            G::ConnectorPunctuation
                | G::DashPunctuation
                | G::OpenPunctuation
                | G::ClosePunctuation
                | G::InitialPunctuation
                | G::FinalPunctuation
                | G::OtherPunctuation
        )
}

/// `\w` as the Rust regex crate defines it (approximately: letters, marks, numbers Nd/Nl,
/// connector punctuation, joiners).
pub(crate) fn is_word_char(c: char) -> bool {
    matches!(c, '\u{200c}' | '\u{200d}' | '\u{24b6}'..='\u{24e9}' | '\u{1f130}'..='\u{1f149}' | '\u{1f150}'..='\u{1f169}' | '\u{1f170}'..='\u{1f189}')
        || matches!(
            get_general_category(c),
            G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::ModifierLetter
                | G::OtherLetter
                | G::NonspacingMark
                | G::SpacingMark
                | G::EnclosingMark
                | G::DecimalNumber
                | G::LetterNumber
                | G::ConnectorPunctuation
        )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_ascii_digit() {
            Class::Number
        } else if c.is_whitespace() {
            Class::Space
        } else {
            Class::Other
        };
    }
    if c.is_whitespace() {
        Class::Space
    } else if is_letter(c) {
        Class::Letter
    } else if is_number(c) {
        Class::Number
    } else {
        Class::Other
    }
}

/// Byte ranges of the GPT-2 regex matches in `s` (they cover `s` entirely).
pub(crate) fn gpt2_split(s: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let classes: Vec<Class> = chars.iter().map(|&(_, c)| class(c)).collect();
    let n = chars.len();
    let pos = |i: usize| if i < n { chars[i].0 } else { s.len() };
    let run = |mut j: usize, k: Class| {
        while j < n && classes[j] == k {
            j += 1;
        }
        j
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        let next = |k: usize| chars.get(i + k).map(|&(_, c)| c);
        let end = if c == '\'' && matches!(next(1), Some('s' | 't' | 'm' | 'd')) {
            i + 2
        } else if c == '\''
            && matches!((next(1), next(2)), (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')))
        {
            i + 3
        } else {
            let (start, k) = if c == ' ' && i + 1 < n && classes[i + 1] != Class::Space {
                (i + 1, classes[i + 1])
            } else {
                (i, classes[i])
            };
            if k != Class::Space {
                run(start, k)
            } else {
                // Whitespace run starting at i.
                let j = run(i, Class::Space);
                if j == n || j - i == 1 {
                    j
                } else {
                    j - 1
                }
            }
        };
        out.push((pos(i), pos(end)));
        i = end;
    }
    out
}

/// Splits `s` at the `(start, end, is_match)` ranges (which cover `s`) per `behavior`,
/// returning byte ranges of non-empty pieces.
fn apply_behavior(ranges: Vec<(usize, usize, bool)>, behavior: Behavior) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    match behavior {
        Behavior::Removed => out.extend(ranges.iter().filter(|r| !r.2).map(|r| (r.0, r.1))),
        Behavior::Isolated => out.extend(ranges.iter().map(|r| (r.0, r.1))),
        Behavior::Contiguous => {
            let mut prev = None;
            for (s, e, m) in ranges {
                match out.last_mut() {
                    Some(last) if prev == Some(m) => last.1 = e,
                    _ => out.push((s, e)),
                }
                prev = Some(m);
            }
        }
        Behavior::MergedWithPrevious => {
            let mut prev_match = false;
            for (s, e, m) in ranges {
                match out.last_mut() {
                    Some(last) if m && !prev_match => last.1 = e,
                    _ => out.push((s, e)),
                }
                prev_match = m;
            }
        }
        Behavior::MergedWithNext => {
            let mut prev_match = false;
            for &(s, e, m) in ranges.iter().rev() {
                match out.last_mut() {
                    Some(last) if m && !prev_match => last.0 = s,
                    _ => out.push((s, e)),
                }
                prev_match = m;
            }
            out.reverse();
        }
    }
    out.retain(|r| r.1 > r.0);
    out
}

/// Match ranges of a per-character predicate: every matching char is its own match.
fn char_matches(s: &str, pred: impl Fn(char) -> bool) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let mut last = 0;
    for (b, c) in s.char_indices() {
        if pred(c) {
            if last < b {
                out.push((last, b, false));
            }
            out.push((b, b + c.len_utf8(), true));
            last = b + c.len_utf8();
        }
    }
    if last < s.len() {
        out.push((last, s.len(), false));
    }
    out
}

/// Match ranges of maximal runs of chars satisfying `pred`.
fn run_matches(s: &str, pred: impl Fn(char) -> bool) -> Vec<(usize, usize, bool)> {
    let mut out: Vec<(usize, usize, bool)> = Vec::new();
    for (b, c) in s.char_indices() {
        let m = pred(c);
        let e = b + c.len_utf8();
        match out.last_mut() {
            Some(last) if last.2 == m => last.1 = e,
            _ => out.push((b, e, m)),
        }
    }
    out
}

/// Match ranges of a literal pattern (non-overlapping, left to right).
fn literal_matches(s: &str, pat: &str, invert: bool) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let mut last = 0;
    if !pat.is_empty() {
        for (b, m) in s.match_indices(pat) {
            if last < b {
                out.push((last, b, invert));
            }
            out.push((b, b + m.len(), !invert));
            last = b + m.len();
        }
    }
    if last < s.len() {
        out.push((last, s.len(), invert));
    }
    out
}

fn sub_pieces(p: &Piece, ranges: Vec<(usize, usize)>, out: &mut Vec<Piece>) {
    for (s, e) in ranges {
        out.push(Piece { text: p.text[s..e].to_string(), first: p.first && s == 0 });
    }
}

impl PreTokenizer {
    /// Parses a `pre_tokenizer` object.
    pub(crate) fn from_json(v: &Value) -> Result<PreTokenizer> {
        let ctx = "pre_tokenizer";
        Ok(match type_of(v, ctx)? {
            "ByteLevel" => PreTokenizer::ByteLevel {
                add_prefix_space: bool_or(v, "add_prefix_space", true, ctx)?,
                use_regex: bool_or(v, "use_regex", true, ctx)?,
            },
            "BertPreTokenizer" => PreTokenizer::Bert,
            "Metaspace" => {
                let rep = str_field(v, "replacement", ctx)?;
                let mut it = rep.chars();
                let replacement = match (it.next(), it.next()) {
                    (Some(c), None) => c,
                    _ => return Err(Error::format("pre_tokenizer Metaspace: `replacement` must be one character")),
                };
                PreTokenizer::Metaspace {
                    replacement,
                    prepend: PrependScheme::from_json(v, ctx)?,
                    split: bool_or(v, "split", true, ctx)?,
                }
            }
            "Whitespace" => PreTokenizer::Whitespace,
            "WhitespaceSplit" => PreTokenizer::WhitespaceSplit,
            "Digits" => PreTokenizer::Digits { individual: bool_or(v, "individual_digits", false, ctx)? },
            "Punctuation" => PreTokenizer::Punctuation(match opt_str(v, "behavior", ctx)? {
                Some(b) => Behavior::parse(b)?,
                None => Behavior::Isolated,
            }),
            "Split" => PreTokenizer::Split {
                pattern: string_pattern(field(v, "pattern", ctx)?, "pre_tokenizer Split")?,
                behavior: Behavior::parse(str_field(v, "behavior", ctx)?)?,
                invert: bool_or(v, "invert", false, ctx)?,
            },
            "Sequence" => {
                let list = field(v, "pretokenizers", ctx)?
                    .as_array()
                    .ok_or_else(|| Error::format("pre_tokenizer Sequence: `pretokenizers` is not a list"))?;
                PreTokenizer::Sequence(list.iter().map(PreTokenizer::from_json).collect::<Result<_>>()?)
            }
            other => return Err(Error::unsupported(format!("pre_tokenizer type `{other}`"))),
        })
    }

    /// Splits `pieces` into words.
    pub(crate) fn apply(&self, pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out = Vec::with_capacity(pieces.len());
        match self {
            PreTokenizer::Sequence(list) => {
                let mut cur = pieces;
                for p in list {
                    cur = p.apply(cur);
                }
                return cur;
            }
            PreTokenizer::ByteLevel { add_prefix_space, use_regex } => {
                let table = bytes_to_chars();
                for mut p in pieces {
                    if *add_prefix_space && !p.text.starts_with(' ') {
                        p.text.insert(0, ' ');
                    }
                    let ranges = if *use_regex { gpt2_split(&p.text) } else { vec![(0, p.text.len())] };
                    for (s, e) in ranges {
                        if e > s {
                            let text = p.text.as_bytes()[s..e].iter().map(|&b| table[b as usize]).collect();
                            out.push(Piece { text, first: p.first && s == 0 });
                        }
                    }
                }
            }
            PreTokenizer::Bert => {
                for p in pieces {
                    for (s, e) in apply_behavior(char_matches(&p.text, char::is_whitespace), Behavior::Removed) {
                        let q = Piece { text: p.text[s..e].to_string(), first: p.first && s == 0 };
                        sub_pieces(
                            &q,
                            apply_behavior(char_matches(&q.text, is_bert_punc), Behavior::Isolated),
                            &mut out,
                        );
                    }
                }
            }
            PreTokenizer::Metaspace { replacement, prepend, split } => {
                let rep = replacement.to_string();
                for p in pieces {
                    let mut text = p.text.replace(' ', &rep);
                    let add = match prepend {
                        PrependScheme::Always => true,
                        PrependScheme::First => p.first,
                        PrependScheme::Never => false,
                    };
                    if add && !text.starts_with(*replacement) {
                        text.insert(0, *replacement);
                    }
                    let q = Piece { text, first: p.first };
                    if *split {
                        let r = *replacement;
                        sub_pieces(
                            &q,
                            apply_behavior(char_matches(&q.text, |c| c == r), Behavior::MergedWithNext),
                            &mut out,
                        );
                    } else if !q.text.is_empty() {
                        out.push(q);
                    }
                }
            }
            PreTokenizer::Whitespace => {
                for p in pieces {
                    let mut ranges = Vec::new();
                    let mut cur: Option<(usize, usize, bool)> = None;
                    for (b, c) in p.text.char_indices() {
                        let e = b + c.len_utf8();
                        let k = if c.is_whitespace() { None } else { Some(is_word_char(c)) };
                        match (k, cur.as_mut()) {
                            (Some(w), Some(run)) if run.2 == w => run.1 = e,
                            (k, _) => {
                                if let Some(run) = cur.take() {
                                    ranges.push((run.0, run.1));
                                }
                                cur = k.map(|w| (b, e, w));
                            }
                        }
                    }
                    if let Some(run) = cur {
                        ranges.push((run.0, run.1));
                    }
                    sub_pieces(&p, ranges, &mut out);
                }
            }
            PreTokenizer::WhitespaceSplit => {
                for p in pieces {
                    let ranges = apply_behavior(run_matches(&p.text, char::is_whitespace), Behavior::Removed);
                    sub_pieces(&p, ranges, &mut out);
                }
            }
            PreTokenizer::Digits { individual } => {
                for p in pieces {
                    let ranges = if *individual {
                        apply_behavior(char_matches(&p.text, char::is_numeric), Behavior::Isolated)
                    } else {
                        apply_behavior(run_matches(&p.text, char::is_numeric), Behavior::Contiguous)
                    };
                    sub_pieces(&p, ranges, &mut out);
                }
            }
            PreTokenizer::Punctuation(b) => {
                for p in pieces {
                    sub_pieces(&p, apply_behavior(char_matches(&p.text, is_bert_punc), *b), &mut out);
                }
            }
            PreTokenizer::Split { pattern, behavior, invert } => {
                for p in pieces {
                    sub_pieces(&p, apply_behavior(literal_matches(&p.text, pattern, *invert), *behavior), &mut out);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        gpt2_split(s).into_iter().map(|(a, b)| &s[a..b]).collect()
    }

    #[test]
    fn gpt2_regex() {
        assert_eq!(split("Hello world's  x"), ["Hello", " world", "'s", " ", " x"]);
        assert_eq!(split("a  \n"), ["a", "  \n"]);
        assert_eq!(split("\t x 12!!"), ["\t", " x", " 12", "!!"]);
    }
}
