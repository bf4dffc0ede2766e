//! Reading a search query: the caller's text becomes a list of words, which the store turns into
//! a safe full-text expression for its dialect (user text is never parsed as query syntax).
//!
//! Matching: an item matches when it contains every word (after stemming). Ranking, in two tiers:
//! items that contain the query as an exact phrase come first, then items that only contain the
//! words somewhere; within a tier by relevance (SQLite: BM25; PostgreSQL: cover density, both
//! normalised by length, so a focused item ranks above a long one that mentions the phrase once).
//! So "rate limiter" ranks "…a token bucket rate limiter…" above "the exchange rate … a torque
//! limiter".
//!
//! Bounded work: the ranking considers the [`RANK_CANDIDATES`] most recently added matches. A
//! query that matches fewer items (any selective query) is ranked exactly; one whose words are in
//! a large share of the items ranks its newest matches instead of scoring every match, so its
//! latency stays flat however many items it matches.
//!
//! Paging: results page by offset into that ranked list. A page's `next_cursor` is an opaque
//! token holding the next offset and a fingerprint of the search (its words and source type), so
//! a cursor used with a different search is refused (422 naming `cursor`); `limit` may change
//! between pages.

use aragora_core::page::{decode_cursor, encode_cursor};
use aragora_core::{Error, Result};

pub const MAX_QUERY_CHARS: usize = 500;
pub const MAX_TERMS: usize = 16;
pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 50;
/// Matches ranked per query (the newest ones when more match; see the module doc).
pub const RANK_CANDIDATES: u32 = 500;
/// First field of a search cursor's text, so a future format can tell old cursors apart.
const CURSOR_VERSION: &str = "s1";

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The words in query order, lower-cased (the phrase).
    pub words: Vec<String>,
    /// The distinct words (every one must match).
    pub terms: Vec<String>,
    pub source_type: Option<String>,
    pub limit: u32,
    /// Hits to skip in the ranked list (0, or what a `cursor` carries).
    pub offset: u32,
}

impl SearchQuery {
    /// Parses `q`; a query with no word is a 422 naming `q`, a bad source type names
    /// `source_type`. The limit is clamped into 1..=[`MAX_LIMIT`].
    pub fn new(q: &str, source_type: Option<&str>, limit: Option<u32>) -> Result<SearchQuery> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::invalid(
                "q",
                format!("must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let words: Vec<String> = q
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            return Err(Error::invalid("q", "must contain at least one word"));
        }
        // Stop words are not required (PostgreSQL's english configuration drops them too); a
        // query of nothing but stop words requires them all.
        let mut terms: Vec<String> = Vec::new();
        for w in words.iter().filter(|w| !is_stop_word(w)) {
            if !terms.contains(w) {
                terms.push(w.clone());
            }
        }
        if terms.is_empty() {
            for w in &words {
                if !terms.contains(w) {
                    terms.push(w.clone());
                }
            }
        }
        if terms.len() > MAX_TERMS {
            return Err(Error::invalid(
                "q",
                format!("at most {MAX_TERMS} distinct words"),
            ));
        }
        let source_type = match source_type.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) if crate::is_valid_source_type(s) => Some(s.to_string()),
            Some(_) => {
                return Err(Error::invalid(
                    "source_type",
                    "must be 1 to 32 characters of [a-z0-9_.-], starting with a letter",
                ));
            }
            None => None,
        };
        Ok(SearchQuery {
            words,
            terms,
            source_type,
            limit: limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
            offset: 0,
        })
    }

    /// Continues from `cursor`, the `next_cursor` of a previous page of this same search (same
    /// words and source type). Absent or empty: the first page. Anything else that is not a
    /// cursor this server issued for this search is a 422 naming `cursor`.
    pub fn after_cursor(mut self, cursor: Option<&str>) -> Result<SearchQuery> {
        let Some(c) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(self);
        };
        let bad = || Error::invalid("cursor", "is not a cursor this server issued for a search");
        let text = decode_cursor(c).ok_or_else(bad)?;
        let mut parts = text.split('.');
        let (Some(CURSOR_VERSION), Some(fp), Some(offset_text), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if fp != self.fingerprint() {
            return Err(Error::invalid(
                "cursor",
                "belongs to a different search: keep the q and source_type of the request that \
                 returned it",
            ));
        }
        // Only canonical decimal offsets inside the ranked list are ever issued.
        let offset: u32 = offset_text.parse().map_err(|_| bad())?;
        if offset == 0 || offset >= RANK_CANDIDATES || offset.to_string() != offset_text {
            return Err(bad());
        }
        self.offset = offset;
        Ok(self)
    }

    /// The cursor of the page after this one.
    pub fn next_cursor(&self) -> String {
        encode_cursor(&format!(
            "{CURSOR_VERSION}.{}.{}",
            self.fingerprint(),
            self.offset + self.limit
        ))
    }

    /// A stable hash (FNV-1a, 64 bits) of what selects and orders the hits: the words and the
    /// source type. Not a secret; it only catches a cursor reused with another search.
    fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let text = format!(
            "{}\u{1}{}",
            self.words.join(" "),
            self.source_type.as_deref().unwrap_or("")
        );
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// True when the query has more than one word, so exact-phrase matches form their own tier.
    pub fn has_phrase(&self) -> bool {
        self.words.len() > 1
    }

    /// SQLite FTS5 `MATCH` expression for the exact phrase, quoted (nothing the caller typed is
    /// query syntax): `"rate limiter"`. With one word, that word.
    pub fn fts5_phrase(&self) -> String {
        format!("\"{}\"", self.words.join(" "))
    }

    /// FTS5 expression that matches: every required word, each quoted:
    /// `"rate" AND "limiter"`.
    pub fn fts5_terms(&self) -> String {
        let quoted: Vec<String> = self.terms.iter().map(|t| format!("\"{t}\"")).collect();
        quoted.join(" AND ")
    }

    /// Plain text for PostgreSQL's `plainto_tsquery` / `phraseto_tsquery`.
    pub fn plain_text(&self) -> String {
        self.words.join(" ")
    }
}

/// Common English words that carry no meaning for matching (a subset of the Snowball list
/// PostgreSQL's `english` configuration uses).
const STOP_WORDS: [&str; 64] = [
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "may", "more", "most", "no",
    "not", "of", "on", "or", "our", "she", "should", "so", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "with",
];

pub fn is_stop_word(w: &str) -> bool {
    STOP_WORDS.binary_search(&w).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stop_list_is_sorted_for_binary_search() {
        assert!(super::STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    use super::*;

    #[test]
    fn words_are_split_lowercased_and_quoted() {
        let q = SearchQuery::new("Rate-limiter: \"token\" OR bucket*", None, None).unwrap();
        assert_eq!(q.words, ["rate", "limiter", "token", "or", "bucket"]);
        assert_eq!(
            q.terms,
            ["rate", "limiter", "token", "bucket"],
            "stop words are not required"
        );
        assert_eq!(q.fts5_phrase(), r#""rate limiter token or bucket""#);
        assert_eq!(
            q.fts5_terms(),
            r#""rate" AND "limiter" AND "token" AND "bucket""#
        );
        assert_eq!(q.plain_text(), "rate limiter token or bucket");
        assert_eq!(q.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn one_word_is_a_single_quoted_term() {
        let q = SearchQuery::new("  Bursts ", Some("debate"), Some(500)).unwrap();
        assert!(!q.has_phrase());
        assert_eq!(q.fts5_phrase(), "\"bursts\"");
        assert_eq!(q.fts5_terms(), "\"bursts\"");
        assert_eq!(q.source_type.as_deref(), Some("debate"));
        assert_eq!(q.limit, MAX_LIMIT);
    }

    #[test]
    fn repeated_words_are_required_once_but_kept_in_the_phrase() {
        let q = SearchQuery::new("the cat sat on the cat", None, Some(0)).unwrap();
        assert_eq!(q.terms, ["cat", "sat"]);
        assert_eq!(q.words.len(), 6);
        assert_eq!(q.limit, 1);
        let q = SearchQuery::new("To be or not to be", None, None).unwrap();
        assert_eq!(
            q.terms,
            ["to", "be", "or", "not"],
            "only stop words: all required"
        );
    }

    #[test]
    fn bad_queries_name_the_field() {
        for (q, st, field) in [
            ("", None, "q"),
            (" -- * ", None, "q"),
            (&*"a ".repeat(300), None, "q"),
            ("ok", Some("Bad Type"), "source_type"),
        ] {
            match SearchQuery::new(q, st, None) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{q:?}"),
                other => panic!("{q:?}: {other:?}"),
            }
        }
        let many: String = (0..20).map(|i| format!("w{i} ")).collect();
        assert!(SearchQuery::new(&many, None, None).is_err());
    }

    fn cursor_field(r: Result<SearchQuery>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cursors_carry_the_offset_and_are_bound_to_their_search() {
        let first = SearchQuery::new("Rate limiter", Some("debate"), Some(10)).unwrap();
        assert_eq!(first.offset, 0);
        let c = first.next_cursor();
        // Same words (any case or punctuation), same source type; the limit may change.
        let second = SearchQuery::new("rate-LIMITER", Some(" debate "), Some(5))
            .unwrap()
            .after_cursor(Some(&c))
            .unwrap();
        assert_eq!(second.offset, 10);
        let third = SearchQuery::new("rate limiter", Some("debate"), Some(5))
            .unwrap()
            .after_cursor(Some(&second.next_cursor()))
            .unwrap();
        assert_eq!(third.offset, 15);
        let none = SearchQuery::new("rate limiter", Some("debate"), None).unwrap();
        assert_eq!(none.clone().after_cursor(None).unwrap().offset, 0);
        assert_eq!(none.after_cursor(Some("")).unwrap().offset, 0);
        for (q, st) in [
            ("rate", Some("debate")),
            ("rate limiter", None),
            ("limiter rate", Some("debate")),
        ] {
            let other = SearchQuery::new(q, st, Some(10)).unwrap();
            assert_eq!(
                cursor_field(other.after_cursor(Some(&c))),
                "cursor",
                "{q:?} {st:?}"
            );
        }
        let q = || SearchQuery::new("rate limiter", Some("debate"), Some(10)).unwrap();
        let fp = q().fingerprint();
        for garbage in [
            "garbage!".to_string(),
            "x".to_string(),
            encode_cursor("s1"),
            encode_cursor(&format!("s1.{fp}")),
            encode_cursor(&format!("s1.{fp}.0")),
            encode_cursor(&format!("s1.{fp}.+5")),
            encode_cursor(&format!("s1.{fp}.05")),
            encode_cursor(&format!("s1.{fp}.-5")),
            encode_cursor(&format!("s1.{fp}.{RANK_CANDIDATES}")),
            encode_cursor(&format!("s1.{fp}.99999999999")),
            encode_cursor(&format!("s1.{fp}.5.5")),
            encode_cursor(&format!("s2.{fp}.5")),
        ] {
            assert_eq!(
                cursor_field(q().after_cursor(Some(&garbage))),
                "cursor",
                "{garbage:?}"
            );
        }
        assert_eq!(
            q().after_cursor(Some(&encode_cursor(&format!("s1.{fp}.5"))))
                .unwrap()
                .offset,
            5
        );
    }
}
