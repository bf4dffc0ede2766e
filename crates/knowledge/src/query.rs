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

use aragora_core::{Error, Result};

pub const MAX_QUERY_CHARS: usize = 500;
pub const MAX_TERMS: usize = 16;
pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 50;
/// Matches ranked per query (the newest ones when more match; see the module doc).
pub const RANK_CANDIDATES: u32 = 500;

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The words in query order, lower-cased (the phrase).
    pub words: Vec<String>,
    /// The distinct words (every one must match).
    pub terms: Vec<String>,
    pub source_type: Option<String>,
    pub limit: u32,
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
        })
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
}
