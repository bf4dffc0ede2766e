//! Search text and ranking.
//!
//! Text is reduced to lowercase alphanumeric tokens here, once, and both databases index those
//! tokens (SQLite FTS5, PostgreSQL tsvector), so matching is the same on both. A query matches a
//! template when every query term occurs in its name, tags or description (the last term may be a
//! prefix, for search-as-you-type). Results rank:
//!
//! 1. an exact name match (case- and whitespace-insensitive) first;
//! 2. then the field score: for each term, [`WEIGHT_NAME`] if it occurs in the name, plus
//!    [`WEIGHT_TAGS`] if in a tag, plus [`WEIGHT_DESCRIPTION`] if in the description;
//! 3. ties by downloads (descending), then id.
//!
//! The score depends only on the template and the query (no corpus statistics), so it is an exact
//! integer and keyset cursors stay stable while templates are added. When no template matches
//! the terms, names containing the query as a substring are returned instead (trigram indexes).

use aragora_core::Error;

pub const WEIGHT_NAME: i64 = 10;
pub const WEIGHT_TAGS: i64 = 4;
pub const WEIGHT_DESCRIPTION: i64 = 1;

/// Most terms a query may have; later ones are refused.
pub const MAX_TERMS: usize = 8;
/// Longest query.
pub const MAX_QUERY_LEN: usize = 200;
/// Longest token kept; longer runs are cut (they are never useful search terms).
pub const MAX_TOKEN_LEN: usize = 64;
/// Shortest query that may fall back to name-substring matching.
pub const MIN_SUBSTRING_LEN: usize = 3;

/// Lowercase alphanumeric tokens of `text`, in order.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| {
            let lower = t.to_lowercase();
            match lower.char_indices().nth(MAX_TOKEN_LEN) {
                Some((cut, _)) => lower[..cut].to_string(),
                None => lower,
            }
        })
        .collect()
}

/// The indexed form of a field: its tokens joined by single spaces, with a space at both ends so
/// `' term '` finds a whole token and `' term'` a token prefix. Empty fields are `' '`.
pub fn field_text<I, S>(tokens: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::from(" ");
    for t in tokens {
        out.push_str(t.as_ref());
        out.push(' ');
    }
    out
}

/// The indexed texts of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchFields {
    pub name: String,
    pub tags: String,
    pub description: String,
    /// The name for exact and substring matching: lowercase, whitespace collapsed.
    pub name_key: String,
}

pub fn search_fields(name: &str, tags: &[String], description: &str) -> SearchFields {
    SearchFields {
        name: field_text(tokens(name)),
        tags: field_text(tags.iter().flat_map(|t| tokens(t))),
        description: field_text(tokens(description)),
        name_key: name_key(name),
    }
}

/// Lowercase, trimmed, inner whitespace collapsed to one space.
pub fn name_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A parsed search query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Distinct terms in order; the last one matches as a prefix.
    pub terms: Vec<String>,
    /// Compared with [`SearchFields::name_key`] for the exact-match rank.
    pub name_key: String,
}

impl Query {
    /// `q` as given; `Ok(None)` when it is blank.
    pub fn parse(q: &str) -> Result<Option<Query>, Error> {
        if q.len() > MAX_QUERY_LEN {
            return Err(Error::invalid(
                "q",
                format!("is longer than {MAX_QUERY_LEN} bytes"),
            ));
        }
        let key = name_key(q);
        if key.is_empty() {
            return Ok(None);
        }
        let mut terms: Vec<String> = Vec::new();
        for t in tokens(q) {
            if !terms.contains(&t) {
                terms.push(t);
            }
        }
        if terms.len() > MAX_TERMS {
            return Err(Error::invalid(
                "q",
                format!(
                    "has {} distinct terms; at most {MAX_TERMS} are allowed",
                    terms.len()
                ),
            ));
        }
        Ok(Some(Query {
            terms,
            name_key: key,
        }))
    }

    /// The needle for a whole-token hit on term `i` in a field text (the last term: a prefix).
    pub fn needle(&self, i: usize) -> String {
        if i + 1 == self.terms.len() {
            format!(" {}", self.terms[i])
        } else {
            format!(" {} ", self.terms[i])
        }
    }

    /// The substring pattern for the fallback, when the query is long enough and has no LIKE
    /// metacharacters.
    pub fn substring(&self) -> Option<&str> {
        let s = self.name_key.as_str();
        (s.chars().count() >= MIN_SUBSTRING_LEN && !s.contains(['%', '_', '\\'])).then_some(s)
    }

    /// Whether `fields` matches (every term occurs in some field). The databases evaluate the
    /// same rule through their full-text indexes; this is the reference used by tests.
    pub fn matches(&self, fields: &SearchFields) -> bool {
        !self.terms.is_empty()
            && (0..self.terms.len()).all(|i| {
                let n = self.needle(i);
                fields.name.contains(&n)
                    || fields.tags.contains(&n)
                    || fields.description.contains(&n)
            })
    }

    /// Reference implementation of the field score (mirrored in SQL).
    pub fn score(&self, fields: &SearchFields) -> i64 {
        (0..self.terms.len())
            .map(|i| {
                let n = self.needle(i);
                let hit = |text: &str, w: i64| if text.contains(&n) { w } else { 0 };
                hit(&fields.name, WEIGHT_NAME)
                    + hit(&fields.tags, WEIGHT_TAGS)
                    + hit(&fields.description, WEIGHT_DESCRIPTION)
            })
            .sum()
    }

    pub fn is_exact(&self, fields: &SearchFields) -> bool {
        self.name_key == fields.name_key
    }

    /// SQLite FTS5 query: every term quoted (tokens are alphanumeric, so quoting is safe), the
    /// last one a prefix; terms are implicitly AND-ed.
    pub fn fts5(&self) -> String {
        let n = self.terms.len();
        self.terms
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i + 1 == n {
                    format!("\"{t}\"*")
                } else {
                    format!("\"{t}\"")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// PostgreSQL `to_tsquery('simple', …)` text: `a & b & c:*`.
    pub fn tsquery(&self) -> String {
        let n = self.terms.len();
        self.terms
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i + 1 == n {
                    format!("{t}:*")
                } else {
                    t.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercase_alphanumeric_runs() {
        assert_eq!(
            tokens("Security-Scanner v2.0 (CI/CD) Überprüfung"),
            ["security", "scanner", "v2", "0", "ci", "cd", "überprüfung"]
        );
        assert_eq!(field_text(tokens("A b")), " a b ");
        assert_eq!(field_text(Vec::<String>::new()), " ");
        assert_eq!(tokens(&"x".repeat(100))[0].len(), MAX_TOKEN_LEN);
        assert_eq!(name_key("  Security   Scanner "), "security scanner");
    }

    #[test]
    fn field_weights_order_name_tags_description() {
        let q = Query::parse("security").unwrap().unwrap();
        let name = search_fields("Security Audit", &[], "");
        let tag = search_fields("Audit", &["security".into()], "");
        let desc = search_fields("Audit", &[], "checks security of things");
        let exact = search_fields("security", &[], "");
        assert!(q.is_exact(&exact) && !q.is_exact(&name));
        assert_eq!([q.score(&name), q.score(&tag), q.score(&desc)], [10, 4, 1]);
        assert!(q.matches(&desc));
        assert!(!q.matches(&search_fields("Audit", &[], "insecure")));
    }

    #[test]
    fn last_term_is_a_prefix_and_terms_are_anded() {
        let q = Query::parse("security scan").unwrap().unwrap();
        assert!(q.matches(&search_fields("Security Scanner", &[], "")));
        assert!(!q.matches(&search_fields("Security", &[], "")));
        assert!(!q.matches(&search_fields("Scanner", &["secure".into()], "")));
        assert_eq!(q.fts5(), "\"security\" \"scan\"*");
        assert_eq!(q.tsquery(), "security & scan:*");
        // Full-token needle for earlier terms: "securityx" is not "security".
        assert!(!q.matches(&search_fields("Securityx Scanner", &[], "")));
    }

    #[test]
    fn queries_are_checked() {
        assert_eq!(Query::parse("   ").unwrap(), None);
        assert!(
            Query::parse(&"a ".repeat(9)).unwrap().is_some(),
            "duplicates collapse"
        );
        assert!(Query::parse("a b c d e f g h i").is_err());
        assert!(Query::parse(&"x".repeat(201)).is_err());
        let q = Query::parse("!!!").unwrap().unwrap();
        assert!(q.terms.is_empty() && q.fts5().is_empty());
        assert_eq!(q.substring(), Some("!!!"));
        assert_eq!(Query::parse("50%").unwrap().unwrap().substring(), None);
        assert_eq!(Query::parse("ab").unwrap().unwrap().substring(), None);
    }
}
