//! List and search requests: filters, sorts with unique tiebreakers, page numbers and opaque
//! keyset cursors.
//!
//! Every sort ends in the id, so the order is total and a cursor (the last item's sort key) marks
//! an exact position: paging by cursor neither skips nor repeats items while others are added.
//! Page numbers (`page`) are offsets, capped at [`MAX_OFFSET`]; the cursor has no such cap.

use crate::search::Query;
use crate::visibility::Visibility;
use aragora_core::Error;
use aragora_core::page::{clamp_limit, decode_cursor, encode_cursor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Deepest row reachable by `page` (use the cursor beyond it).
pub const MAX_OFFSET: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    Relevance,
    Downloads,
    Rating,
    Newest,
    Updated,
}

/// One column of a sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyColumn {
    /// Logical name: `exact`, `score`, `downloads`, `rating_score`, `created_at`, `updated_at`, `id`.
    pub name: &'static str,
    pub descending: bool,
    /// `id` is text; everything else is an integer.
    pub text: bool,
}

const fn col(name: &'static str, descending: bool) -> KeyColumn {
    KeyColumn {
        name,
        descending,
        text: false,
    }
}

const ID_ASC: KeyColumn = KeyColumn {
    name: "id",
    descending: false,
    text: true,
};
const ID_DESC: KeyColumn = KeyColumn {
    name: "id",
    descending: true,
    text: true,
};

impl Sort {
    pub const ALL: [Sort; 5] = [
        Sort::Relevance,
        Sort::Downloads,
        Sort::Rating,
        Sort::Newest,
        Sort::Updated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Relevance => "relevance",
            Sort::Downloads => "downloads",
            Sort::Rating => "rating",
            Sort::Newest => "newest",
            Sort::Updated => "updated",
        }
    }

    /// The sort key, most significant first; always ends in the unique id.
    pub fn key(self) -> &'static [KeyColumn] {
        const RELEVANCE: [KeyColumn; 4] = [
            col("exact", true),
            col("score", true),
            col("downloads", true),
            ID_ASC,
        ];
        const DOWNLOADS: [KeyColumn; 2] = [col("downloads", true), ID_ASC];
        const RATING: [KeyColumn; 2] = [col("rating_score", true), ID_ASC];
        const NEWEST: [KeyColumn; 2] = [col("created_at", true), ID_DESC];
        const UPDATED: [KeyColumn; 2] = [col("updated_at", true), ID_DESC];
        match self {
            Sort::Relevance => &RELEVANCE,
            Sort::Downloads => &DOWNLOADS,
            Sort::Rating => &RATING,
            Sort::Newest => &NEWEST,
            Sort::Updated => &UPDATED,
        }
    }
}

impl fmt::Display for Sort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Sort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sort::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not one of relevance, downloads, rating, newest, updated")
            })
    }
}

/// How a search query matched: by terms, or (when no template matched the terms) by a
/// substring of the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Terms,
    Substring,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyVal {
    Int(i64),
    Str(String),
}

/// What a cursor carries (opaque to clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Fingerprint of the filters and sort it belongs to.
    pub f: String,
    /// Page number of the page it opens.
    pub p: u32,
    pub m: Mode,
    /// The last item's sort key.
    pub k: Vec<KeyVal>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        encode_cursor(&serde_json::to_string(self).expect("cursor serialises"))
    }
}

/// Query parameters as received.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawList {
    pub category: Option<String>,
    pub visibility: Option<String>,
    /// Comma-separated; a template must carry every one.
    pub tags: Option<String>,
    pub q: Option<String>,
    pub min_rating: Option<String>,
    pub sort: Option<String>,
    pub page: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A number parameter; blank counts as absent.
/// A numeric query parameter: absent is `None`; present it must parse (an empty value is refused
/// like any other non-number, as the OpenAPI document types it as a number).
fn number<T: FromStr>(field: &str, v: &Option<String>, what: &str) -> Result<Option<T>, Error> {
    match v.as_deref().map(str::trim) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(field, format!("`{s}` is not {what}"))),
    }
}

/// A checked list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    pub category: Option<String>,
    pub visibility: Option<Visibility>,
    pub tags: Vec<String>,
    pub query: Option<Query>,
    pub min_rating: Option<f64>,
    pub sort: Sort,
    pub page: u32,
    pub limit: u32,
    /// Rows to skip (page-number access); 0 with a cursor.
    pub offset: u64,
    /// Keyset position and match mode, from the cursor.
    pub after: Option<(Mode, Vec<KeyVal>)>,
}

impl ListRequest {
    pub fn parse(raw: &RawList) -> Result<ListRequest, Error> {
        let category = raw
            .category
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .map(crate::request::category)
            .transpose()?;
        let visibility = raw
            .visibility
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().map_err(|m| Error::invalid("visibility", m)))
            .transpose()?;
        let tags: Vec<String> = match raw.tags.as_deref() {
            Some(t) if !t.trim().is_empty() => {
                let mut list: Vec<String> = t.split(',').map(|s| s.to_string()).collect();
                list = crate::request::tags(&list)?;
                list.sort();
                list
            }
            _ => Vec::new(),
        };
        let query = raw.q.as_deref().map(Query::parse).transpose()?.flatten();
        let min_rating = match number::<f64>("min_rating", &raw.min_rating, "a number")? {
            Some(r) if !(0.0..=5.0).contains(&r) || !r.is_finite() => {
                return Err(Error::invalid(
                    "min_rating",
                    format!("must be between 0 and 5, got {r}"),
                ));
            }
            other => other,
        };
        let sort = match raw.sort.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => s.parse().map_err(|m| Error::invalid("sort", m))?,
            None if query.is_some() => Sort::Relevance,
            None => Sort::Downloads,
        };
        if sort == Sort::Relevance && query.is_none() {
            return Err(Error::invalid(
                "sort",
                "`relevance` needs a search query `q`",
            ));
        }
        let limit = clamp_limit(number("limit", &raw.limit, "a whole number from 1")?);
        let mut req = ListRequest {
            category,
            visibility,
            tags,
            query,
            min_rating,
            sort,
            page: 1,
            limit,
            offset: 0,
            after: None,
        };
        match raw.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => {
                let cursor = decode(c)?;
                if cursor.f != req.fingerprint() {
                    return Err(Error::invalid(
                        "cursor",
                        "belongs to a different query: keep the filters, q and sort of the request that returned it",
                    ));
                }
                let schema = sort.key();
                let fits = cursor.k.len() == schema.len()
                    && cursor.k.iter().zip(schema).all(|(v, c)| {
                        matches!(
                            (v, c.text),
                            (KeyVal::Int(_), false) | (KeyVal::Str(_), true)
                        )
                    });
                if !fits || cursor.p < 2 {
                    return Err(bad_cursor());
                }
                req.page = cursor.p;
                req.after = Some((cursor.m, cursor.k));
            }
            None => {
                let page = number("page", &raw.page, "a whole number from 1")?.unwrap_or(1);
                if page == 0 {
                    return Err(Error::invalid("page", "starts at 1"));
                }
                let offset = u64::from(page - 1) * u64::from(limit);
                if offset + u64::from(limit) > MAX_OFFSET {
                    return Err(Error::invalid(
                        "page",
                        format!(
                            "page {page} × limit {limit} reaches past the first {MAX_OFFSET} results; follow next_cursor instead"
                        ),
                    ));
                }
                req.page = page;
                req.offset = offset;
            }
        }
        Ok(req)
    }

    /// Identifies the filters and sort (not the page), so a cursor is only used with the query
    /// that issued it.
    pub fn fingerprint(&self) -> String {
        let text = format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
            self.category.as_deref().unwrap_or(""),
            self.visibility.map(|v| v.as_str()).unwrap_or(""),
            self.tags.join(","),
            self.query
                .as_ref()
                .map(|q| q.name_key.as_str())
                .unwrap_or(""),
            self.min_rating.map(|r| r.to_string()).unwrap_or_default(),
            self.sort,
        );
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }

    /// The cursor for the page after this one, given the last item's key.
    pub fn next_cursor(&self, mode: Mode, last_key: Vec<KeyVal>) -> String {
        Cursor {
            f: self.fingerprint(),
            p: self.page + 1,
            m: mode,
            k: last_key,
        }
        .encode()
    }
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "is not a cursor this server issued for this list")
}

fn decode(c: &str) -> Result<Cursor, Error> {
    let text = decode_cursor(c).ok_or_else(bad_cursor)?;
    serde_json::from_str(&text).map_err(|_| bad_cursor())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawList {
        let mut r = RawList::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "category" => r.category = v,
                "visibility" => r.visibility = v,
                "tags" => r.tags = v,
                "q" => r.q = v,
                "min_rating" => r.min_rating = v,
                "sort" => r.sort = v,
                "page" => r.page = v,
                "limit" => r.limit = v,
                "cursor" => r.cursor = v,
                _ => unreachable!(),
            }
        }
        r
    }

    fn field(r: Result<ListRequest, Error>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_sorts() {
        let r = ListRequest::parse(&raw(&[])).unwrap();
        assert_eq!(
            (r.sort, r.page, r.limit, r.offset),
            (Sort::Downloads, 1, 20, 0)
        );
        let r = ListRequest::parse(&raw(&[("q", "scan")])).unwrap();
        assert_eq!(r.sort, Sort::Relevance);
        let r =
            ListRequest::parse(&raw(&[("page", "3"), ("limit", "10"), ("tags", "B,a")])).unwrap();
        assert_eq!(
            (r.offset, r.tags.clone()),
            (20, vec!["a".to_string(), "b".to_string()])
        );
        for s in Sort::ALL {
            assert_eq!(s.key().last().unwrap().name, "id", "{s} ends in the id");
        }
        assert_eq!(
            field(ListRequest::parse(&raw(&[("sort", "relevance")]))),
            "sort"
        );
        assert_eq!(
            field(ListRequest::parse(&raw(&[("sort", "stars")]))),
            "sort"
        );
        assert_eq!(
            field(ListRequest::parse(&raw(&[("visibility", "secret")]))),
            "visibility"
        );
        assert_eq!(
            field(ListRequest::parse(&raw(&[("min_rating", "6")]))),
            "min_rating"
        );
        assert_eq!(field(ListRequest::parse(&raw(&[("page", "0")]))), "page");
        assert_eq!(field(ListRequest::parse(&raw(&[("page", "two")]))), "page");
        assert_eq!(field(ListRequest::parse(&raw(&[("limit", "-1")]))), "limit");
        assert_eq!(
            field(ListRequest::parse(&raw(&[("min_rating", "high")]))),
            "min_rating"
        );
        assert_eq!(
            field(ListRequest::parse(&raw(&[("min_rating", "")]))),
            "min_rating"
        );
        assert_eq!(field(ListRequest::parse(&raw(&[("limit", " ")]))), "limit");
        assert_eq!(field(ListRequest::parse(&raw(&[("page", "600")]))), "page");
        assert_eq!(
            field(ListRequest::parse(&raw(&[("tags", "a b")]))),
            "tags[0]"
        );
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_query() {
        let first =
            ListRequest::parse(&raw(&[("category", "workflow"), ("sort", "newest")])).unwrap();
        let c = first.next_cursor(
            Mode::Terms,
            vec![KeyVal::Int(17), KeyVal::Str("tmpl-1".into())],
        );
        let second = ListRequest::parse(&raw(&[
            ("category", "workflow"),
            ("sort", "newest"),
            ("cursor", &c),
        ]))
        .unwrap();
        assert_eq!(second.page, 2);
        assert_eq!(
            second.after,
            Some((
                Mode::Terms,
                vec![KeyVal::Int(17), KeyVal::Str("tmpl-1".into())]
            ))
        );
        let other = raw(&[("category", "other"), ("sort", "newest"), ("cursor", &c)]);
        assert_eq!(field(ListRequest::parse(&other)), "cursor");
        assert_eq!(
            field(ListRequest::parse(&raw(&[("cursor", "garbage!")]))),
            "cursor"
        );
        // A key that does not fit the sort is refused.
        let wrong = first.next_cursor(Mode::Terms, vec![KeyVal::Str("x".into())]);
        assert_eq!(
            field(ListRequest::parse(&raw(&[
                ("category", "workflow"),
                ("sort", "newest"),
                ("cursor", &wrong)
            ]))),
            "cursor"
        );
    }
}
