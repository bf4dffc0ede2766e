//! Checks on the fields of publish, update, version and review requests. Each error names the
//! field (and the element, for lists) so the API can answer 422 with it.

use aragora_core::Error;

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
pub const MAX_CATEGORY_CHARS: usize = 50;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 50;
pub const MAX_CHANGELOG_CHARS: usize = 10_000;
pub const MAX_REVIEW_TITLE_CHARS: usize = 200;
pub const MAX_REVIEW_CONTENT_CHARS: usize = 10_000;
/// Version used when a publish request names none.
pub const DEFAULT_VERSION: &str = "1.0.0";

fn no_controls(field: &str, s: &str, allow_newlines: bool) -> Result<(), Error> {
    match s
        .chars()
        .find(|c| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t')))
    {
        Some(c) => Err(Error::invalid(
            field,
            format!("contains the control character U+{:04X}", c as u32),
        )),
        None => Ok(()),
    }
}

fn max_chars(field: &str, s: &str, max: usize) -> Result<(), Error> {
    let n = s.chars().count();
    if n > max {
        Err(Error::invalid(
            field,
            format!("is {n} characters; at most {max} are allowed"),
        ))
    } else {
        Ok(())
    }
}

/// A template name: trimmed, 1 to 100 characters, one line.
pub fn name(s: &str) -> Result<String, Error> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Error::invalid("name", "must not be empty"));
    }
    max_chars("name", s, MAX_NAME_CHARS)?;
    no_controls("name", s, false)?;
    Ok(s.to_string())
}

pub fn description(s: &str) -> Result<String, Error> {
    let s = s.trim();
    max_chars("description", s, MAX_DESCRIPTION_CHARS)?;
    no_controls("description", s, true)?;
    Ok(s.to_string())
}

/// A slug: lowercase `[a-z0-9]` first, then `[a-z0-9._-]`. Input is trimmed and lowercased.
fn slug(field: &str, s: &str, max: usize) -> Result<String, Error> {
    let s = s.trim().to_lowercase();
    if s.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    max_chars(field, &s, max)?;
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !first_ok
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(Error::invalid(
            field,
            format!(
                "`{s}` must be lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit"
            ),
        ));
    }
    Ok(s)
}

pub fn category(s: &str) -> Result<String, Error> {
    slug("category", s, MAX_CATEGORY_CHARS)
}

/// Tags: each a slug, duplicates dropped (first occurrence kept), at most 20.
pub fn tags(tags: &[String]) -> Result<Vec<String>, Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(
            "tags",
            format!("has {} tags; at most {MAX_TAGS} are allowed", tags.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        let t = slug(&format!("tags[{i}]"), t, MAX_TAG_CHARS)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

pub fn changelog(s: &str) -> Result<String, Error> {
    let s = s.trim();
    max_chars("changelog", s, MAX_CHANGELOG_CHARS)?;
    no_controls("changelog", s, true)?;
    Ok(s.to_string())
}

/// A review's title and content (trimmed); at least one must be non-empty.
pub fn review(title: Option<&str>, content: Option<&str>) -> Result<(String, String), Error> {
    let title = title.unwrap_or("").trim();
    let content = content.unwrap_or("").trim();
    max_chars("title", title, MAX_REVIEW_TITLE_CHARS)?;
    no_controls("title", title, false)?;
    max_chars("content", content, MAX_REVIEW_CONTENT_CHARS)?;
    no_controls("content", content, true)?;
    if title.is_empty() && content.is_empty() {
        return Err(Error::invalid(
            "content",
            "a review needs a title or content (use /rate for a bare rating)",
        ));
    }
    Ok((title.to_string(), content.to_string()))
}

/// A version string for a new version.
pub fn version(s: &str) -> Result<crate::semver::Version, Error> {
    crate::semver::Version::parse(s.trim()).map_err(|m| Error::invalid("version", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: Error) -> String {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_and_slugs() {
        assert_eq!(name("  Security Scanner ").unwrap(), "Security Scanner");
        assert_eq!(field(name(" ").unwrap_err()), "name");
        assert_eq!(field(name(&"n".repeat(101)).unwrap_err()), "name");
        assert_eq!(field(name("a\nb").unwrap_err()), "name");
        assert!(description("line one\nline two").is_ok());
        assert_eq!(category(" Workflow ").unwrap(), "workflow");
        assert_eq!(field(category("work flow").unwrap_err()), "category");
        assert_eq!(field(category("-x").unwrap_err()), "category");
        assert_eq!(
            tags(&["Security".into(), "ci-cd".into(), "security".into()]).unwrap(),
            ["security", "ci-cd"]
        );
        assert_eq!(
            field(tags(&["ok".into(), "not ok".into()]).unwrap_err()),
            "tags[1]"
        );
        assert_eq!(field(tags(&vec!["t".to_string(); 21]).unwrap_err()), "tags");
    }

    #[test]
    fn reviews_and_versions() {
        assert_eq!(
            review(Some(" Great "), None).unwrap(),
            ("Great".into(), String::new())
        );
        assert_eq!(field(review(Some(" "), Some("")).unwrap_err()), "content");
        assert_eq!(
            field(review(Some(&"t".repeat(201)), None).unwrap_err()),
            "title"
        );
        assert_eq!(version(" 1.2.3 ").unwrap().to_string(), "1.2.3");
        assert_eq!(field(version("1.2").unwrap_err()), "version");
    }
}
