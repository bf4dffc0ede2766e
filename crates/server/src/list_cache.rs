//! A short-lived cache of rendered marketplace list and search responses.
//!
//! The marketplace is read far more often than it is written, and the same pages (the front page
//! by downloads, popular searches) are asked for again and again; ranking a common search term
//! touches every matching template. Rendered pages are kept for a short time-to-live, per caller
//! scope (workspace, user, admin) and exact query string.
//!
//! Consistency: every marketplace write handled by this process (any non-GET request under
//! `/api/marketplace/`) bumps a generation and empties the cache, so this process never serves a
//! page older than its own writes. Writes made through another process are seen within the
//! time-to-live (`ARAGORA_MARKETPLACE_LIST_CACHE_MS`: by default 1 s on PostgreSQL, where several
//! processes may write — the near-real-time contract of a search engine's refresh interval — and
//! 60 s on SQLite, where this process is the only writer; 0 disables the cache). Only a cache: the
//! database is the authority, and nothing is lost when it is dropped.

use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Entries and bytes kept at most; the cache is emptied when it would grow past either (a crude
/// but bounded policy: pages can be recomputed, memory must not grow).
const MAX_ENTRIES: usize = 4_096;
const MAX_BYTES: usize = 16 * 1024 * 1024;

pub struct ListCache {
    ttl: Duration,
    generation: AtomicU64,
    entries: DashMap<String, Entry>,
    /// Body bytes stored since the last clear (approximate under races, never below the truth).
    bytes: AtomicUsize,
}

struct Entry {
    generation: u64,
    stored: Instant,
    body: Bytes,
}

impl ListCache {
    /// A cache whose entries live `ttl`; `Duration::ZERO` disables it.
    pub fn new(ttl: Duration) -> ListCache {
        ListCache {
            ttl,
            generation: AtomicU64::new(0),
            entries: DashMap::new(),
            bytes: AtomicUsize::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Read before computing a page and pass to [`ListCache::put`]: a write that lands while the
    /// page is computed then makes the stored page unusable.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The stored page for `key`, if it is younger than the time-to-live and no write happened
    /// since it was computed.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if !self.enabled() {
            return None;
        }
        let hit = self.entries.get(key).and_then(|e| {
            (e.generation == self.generation() && e.stored.elapsed() < self.ttl)
                .then(|| e.body.clone())
        });
        metrics::counter!("aragora_marketplace_list_cache_total",
            "result" => if hit.is_some() { "hit" } else { "miss" })
        .increment(1);
        hit
    }

    pub fn put(&self, key: String, body: Bytes, generation: u64) {
        if !self.enabled() || generation != self.generation() {
            return;
        }
        let size = key.len() + body.len();
        if self.entries.len() >= MAX_ENTRIES
            || self.bytes.load(Ordering::Relaxed) + size > MAX_BYTES
        {
            self.clear();
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.entries.insert(
            key,
            Entry {
                generation,
                stored: Instant::now(),
                body,
            },
        );
    }

    /// Forget every page (after a marketplace write).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.clear();
    }

    fn clear(&self) {
        self.entries.clear();
        self.bytes.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_a_page_until_a_write_or_the_ttl() {
        let c = ListCache::new(Duration::from_secs(60));
        let g = c.generation();
        c.put("k".into(), Bytes::from_static(b"page"), g);
        assert_eq!(c.get("k").as_deref(), Some(&b"page"[..]));
        assert_eq!(c.get("other"), None);
        c.invalidate();
        assert_eq!(c.get("k"), None);

        let expired = ListCache::new(Duration::from_millis(1));
        expired.put(
            "k".into(),
            Bytes::from_static(b"page"),
            expired.generation(),
        );
        std::thread::sleep(Duration::from_millis(5)); // let the 1 ms time-to-live pass
        assert_eq!(expired.get("k"), None);
    }

    #[test]
    fn a_page_computed_across_a_write_is_not_stored() {
        let c = ListCache::new(Duration::from_secs(60));
        let g = c.generation();
        c.invalidate(); // a write lands while the page is being computed
        c.put("k".into(), Bytes::from_static(b"stale"), g);
        assert_eq!(c.get("k"), None);
    }

    #[test]
    fn zero_ttl_disables_the_cache() {
        let c = ListCache::new(Duration::ZERO);
        c.put("k".into(), Bytes::from_static(b"page"), c.generation());
        assert_eq!(c.get("k"), None);
    }

    #[test]
    fn stays_bounded() {
        let c = ListCache::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES * 2) {
            c.put(format!("k{i}"), Bytes::from_static(b"p"), c.generation());
        }
        assert!(c.entries.len() <= MAX_ENTRIES);
        let page = Bytes::from(vec![b'x'; 1024 * 1024]);
        for i in 0..40 {
            c.put(format!("big{i}"), page.clone(), c.generation());
        }
        assert!(c.entries.len() * page.len() <= MAX_BYTES);
    }
}
