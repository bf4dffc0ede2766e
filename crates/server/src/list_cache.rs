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
//!
//! Load: concurrent requests for a page that is not cached compute it once — the others wait for
//! that result instead of running the same query (a popular search expiring under 32 connections
//! ran up to 32 identical full-match rankings at once). A page that expired less than one more
//! time-to-live ago is served as it is while a background task recomputes it (stale while
//! revalidate, as RFC 5861 has it for HTTP caches); one such refresh runs at a time per process, so
//! pages that expire together — the whole working set, computed together after a start — are
//! renewed one after the other on at most one core instead of stalling every connection at once.
//! A page is never served across a write of this process, expired or not.

use bytes::Bytes;
use dashmap::DashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};
// tokio's clock (the same monotonic clock), so the tests can run on paused, exact time.
use tokio::time::Instant;

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
    /// Pages being computed, by key: whoever holds the lock computes, later callers wait on it.
    flights: DashMap<String, Arc<Mutex<()>>>,
    /// One background refresh at a time.
    refresher: Arc<Semaphore>,
}

struct Entry {
    generation: u64,
    stored: Instant,
    body: Bytes,
}

enum Lookup {
    Fresh(Bytes),
    /// Expired less than one time-to-live ago, with no write since: servable while it is refreshed.
    Expired(Bytes),
    Missing,
}

impl ListCache {
    /// A cache whose entries live `ttl`; `Duration::ZERO` disables it.
    pub fn new(ttl: Duration) -> ListCache {
        ListCache {
            ttl,
            generation: AtomicU64::new(0),
            entries: DashMap::new(),
            bytes: AtomicUsize::new(0),
            flights: DashMap::new(),
            refresher: Arc::new(Semaphore::new(1)),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The page for `key`: the stored one while it is fresh, else the result of `compute`, which
    /// runs at most once at a time per key; a just-expired page is returned at once and `compute`
    /// refreshes it in the background (see the module documentation). Errors are not stored.
    pub async fn get_or_compute<E, F>(self: &Arc<Self>, key: String, compute: F) -> Result<Bytes, E>
    where
        F: Future<Output = Result<Bytes, E>> + Send + 'static,
        E: Send + 'static,
    {
        if !self.enabled() {
            return compute.await;
        }
        match self.lookup(&key) {
            Lookup::Fresh(body) => return Ok(counted("hit", body)),
            Lookup::Expired(body) => {
                self.refresh_in_background(key, compute);
                return Ok(counted("stale", body));
            }
            Lookup::Missing => {}
        }
        let flight = self.flights.entry(key.clone()).or_default().clone();
        let computing = match flight.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                let guard = flight.clone().lock_owned().await;
                if let Lookup::Fresh(body) = self.lookup(&key) {
                    return Ok(counted("hit", body));
                }
                guard // the computation we waited for failed or was cancelled: compute here
            }
        };
        self.compute_and_store(key, flight, computing, compute)
            .await
    }

    /// Starts recomputing `key` unless it is already being computed or another refresh runs.
    fn refresh_in_background<E, F>(self: &Arc<Self>, key: String, compute: F)
    where
        F: Future<Output = Result<Bytes, E>> + Send + 'static,
        E: Send + 'static,
    {
        let Ok(permit) = self.refresher.clone().try_acquire_owned() else {
            return;
        };
        let flight = self.flights.entry(key.clone()).or_default().clone();
        let Ok(computing) = flight.clone().try_lock_owned() else {
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let _ = cache
                .compute_and_store(key, flight, computing, compute)
                .await;
            drop(permit);
        });
    }

    async fn compute_and_store<E>(
        &self,
        key: String,
        flight: Arc<Mutex<()>>,
        computing: OwnedMutexGuard<()>,
        compute: impl Future<Output = Result<Bytes, E>>,
    ) -> Result<Bytes, E> {
        // Ends the flight when done or dropped mid-way, before the lock is released.
        let landed = FlightLanded {
            cache: self,
            key: &key,
            flight,
            _computing: computing,
        };
        metrics::counter!("aragora_marketplace_list_cache_total", "result" => "miss").increment(1);
        let generation = self.generation();
        let body = compute.await?;
        self.put(key.clone(), body.clone(), generation);
        drop(landed);
        Ok(body)
    }

    /// Forget every page (after a marketplace write).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.clear();
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lookup(&self, key: &str) -> Lookup {
        let Some(e) = self.entries.get(key) else {
            return Lookup::Missing;
        };
        let age = e.stored.elapsed();
        if e.generation != self.generation() || age >= self.ttl * 2 {
            Lookup::Missing
        } else if age < self.ttl {
            Lookup::Fresh(e.body.clone())
        } else {
            Lookup::Expired(e.body.clone())
        }
    }

    /// Stores a page computed from the state at `generation`; dropped if a write landed since.
    fn put(&self, key: String, body: Bytes, generation: u64) {
        if generation != self.generation() {
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

    fn clear(&self) {
        self.entries.clear();
        self.bytes.store(0, Ordering::Relaxed);
    }
}

fn counted(result: &'static str, body: Bytes) -> Bytes {
    metrics::counter!("aragora_marketplace_list_cache_total", "result" => result).increment(1);
    body
}

/// Ends a computation's flight when it finishes or its request is dropped mid-way.
struct FlightLanded<'a> {
    cache: &'a ListCache,
    key: &'a str,
    flight: Arc<Mutex<()>>,
    /// Released after `drop` below has removed the flight (fields drop after the body).
    _computing: OwnedMutexGuard<()>,
}

impl Drop for FlightLanded<'_> {
    fn drop(&mut self) {
        // Only this flight: after a failed computation a waiter may hold an older lock while a
        // newer caller registered another.
        self.cache
            .flights
            .remove_if(self.key, |_, f| Arc::ptr_eq(f, &self.flight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    type Runs = Arc<AtomicUsize>;

    fn cache(ttl_ms: u64) -> Arc<ListCache> {
        Arc::new(ListCache::new(Duration::from_millis(ttl_ms)))
    }

    /// A computation that counts its runs, waits `ms` and yields `body`.
    fn page(
        runs: &Runs,
        ms: u64,
        body: &'static str,
    ) -> impl Future<Output = Result<Bytes, Infallible>> + Send + 'static {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Bytes::from_static(body.as_bytes()))
        }
    }

    async fn get(c: &Arc<ListCache>, runs: &Runs, body: &'static str) -> Bytes {
        c.get_or_compute("k".into(), page(runs, 0, body))
            .await
            .unwrap()
    }

    fn count(runs: &Runs) -> usize {
        runs.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn serves_a_page_until_a_write_or_the_ttl() {
        let runs = Runs::default();
        let c = cache(60_000);
        assert_eq!(get(&c, &runs, "v1").await, "v1");
        assert_eq!(get(&c, &runs, "v2").await, "v1");
        assert_eq!(count(&runs), 1);
        c.invalidate();
        assert_eq!(get(&c, &runs, "v3").await, "v3");

        // Past twice the time-to-live nothing is served: the caller computes.
        let short = cache(20);
        assert_eq!(get(&short, &runs, "a").await, "a");
        tokio::time::sleep(Duration::from_millis(45)).await;
        assert_eq!(get(&short, &runs, "b").await, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_computed_across_a_write_is_not_stored() {
        let c = cache(60_000);
        let runs = Runs::default();
        let writer = c.clone();
        let body = c
            .get_or_compute("k".into(), async move {
                writer.invalidate(); // a write lands while the page is being computed
                Ok::<_, Infallible>(Bytes::from_static(b"old"))
            })
            .await
            .unwrap();
        assert_eq!(body, "old"); // the caller gets what it computed …
        assert_eq!(get(&c, &runs, "new").await, "new"); // … but nobody after the write does
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ttl_disables_the_cache() {
        let runs = Runs::default();
        let c = cache(0);
        get(&c, &runs, "a").await;
        assert_eq!(get(&c, &runs, "b").await, "b");
        assert_eq!(count(&runs), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_compute_once() {
        let runs = Runs::default();
        let c = cache(60_000);
        let bodies = futures::future::join_all(
            (0..16).map(|_| c.get_or_compute("k".into(), page(&runs, 50, "v"))),
        )
        .await;
        assert_eq!(count(&runs), 1);
        assert!(bodies.iter().all(|b| b.as_ref().unwrap() == "v"));
        assert!(c.flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_page_is_served_at_once_and_refreshed_in_the_background() {
        let runs = Runs::default();
        let c = cache(60);
        get(&c, &runs, "v1").await;
        tokio::time::sleep(Duration::from_millis(70)).await;
        let started = Instant::now();
        let first = c.get_or_compute("k".into(), page(&runs, 40, "v2")).await;
        let second = c.get_or_compute("k".into(), page(&runs, 40, "x")).await;
        assert_eq!(
            (first.unwrap(), second.unwrap()),
            ("v1".into(), "v1".into())
        );
        assert!(
            started.elapsed() < Duration::from_millis(20),
            "nobody waited"
        );
        tokio::time::sleep(Duration::from_millis(60)).await; // the refresh lands
        assert_eq!(get(&c, &runs, "y").await, "v2");
        assert_eq!(count(&runs), 2, "one refresh for both stale answers");

        // One refresh at a time: a second expired page stays stale while the first refreshes.
        let c = cache(100);
        c.get_or_compute("a".into(), page(&runs, 0, "a1"))
            .await
            .unwrap();
        c.get_or_compute("b".into(), page(&runs, 0, "b1"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(110)).await; // expired, not twice over
        let before = count(&runs);
        c.get_or_compute("a".into(), page(&runs, 40, "a2"))
            .await
            .unwrap();
        let b = c.get_or_compute("b".into(), page(&runs, 0, "b2")).await;
        assert_eq!(b.unwrap(), "b1");
        tokio::time::sleep(Duration::from_millis(50)).await; // the first refresh is done
        assert_eq!(count(&runs), before + 1);
        let b = c.get_or_compute("b".into(), page(&runs, 0, "b2")).await;
        assert_eq!(
            b.unwrap(),
            "b1",
            "still within twice the time-to-live: refreshed only now"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = c.get_or_compute("b".into(), page(&runs, 0, "b3")).await;
        assert_eq!(b.unwrap(), "b2");

        // After a write nothing old is served, expired or not: callers wait for the recomputation.
        tokio::time::sleep(Duration::from_millis(110)).await;
        c.invalidate();
        let refresh = c.get_or_compute("a".into(), page(&runs, 30, "a3"));
        let other = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            c.get_or_compute("a".into(), page(&runs, 0, "x")).await
        };
        let (a, b) = tokio::join!(refresh, other);
        assert_eq!((a.unwrap(), b.unwrap()), ("a3".into(), "a3".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_dropped_computation_leaves_the_page_to_the_next_caller() {
        let c = cache(60_000);
        let failing = c.get_or_compute("k".into(), async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Err::<Bytes, &str>("database down")
        });
        let waiting = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            c.get_or_compute("k".into(), async {
                Ok::<_, &str>(Bytes::from_static(b"ok"))
            })
            .await
        };
        let (a, b) = tokio::join!(failing, waiting);
        assert_eq!(a, Err("database down"));
        assert_eq!(b.unwrap(), "ok");

        let slow = c.get_or_compute("other".into(), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Bytes::new())
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), slow)
                .await
                .is_err()
        );
        assert!(c.flights.is_empty(), "a dropped request ends its flight");
        let runs = Runs::default();
        let body = c
            .get_or_compute("other".into(), page(&runs, 0, "fine"))
            .await;
        assert_eq!(body.unwrap(), "fine");
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
