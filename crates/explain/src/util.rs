//! Small deterministic helpers: a stable hash, a seeded RNG, text truncation.

/// FNV-1a, 128-bit. Stable across platforms and Rust versions (unlike `DefaultHasher`).
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for &b in bytes {
        h ^= b as u128;
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// `dec-` + 32 lowercase hex digits of FNV-1a-128 of the debate id.
pub fn decision_id(debate_id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a_128(debate_id.as_bytes());
    let mut s = String::with_capacity(36);
    s.push_str("dec-");
    for i in (0..32).rev() {
        s.push(HEX[((h >> (i * 4)) & 0xf) as usize] as char);
    }
    s
}

/// SplitMix64: tiny, fast, good enough for sampling coalitions and generating test debates.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) (n > 0); the modulo bias is below 2^-40 for the small n used here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// At most `max` characters of `s` (cut at a char boundary, with "…" when cut).
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((cut, _)) => {
            let mut out = String::with_capacity(cut + 3);
            out.push_str(s[..cut].trim_end());
            out.push('…');
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Percent with no decimals when whole, else one.
pub fn pct(x: f64) -> String {
    let p = x * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{:.0}%", p)
    } else {
        format!("{:.1}%", p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_are_stable_and_distinct() {
        let a = decision_id("deb-123");
        assert_eq!(a, decision_id("deb-123"));
        assert_ne!(a, decision_id("deb-124"));
        assert!(a.starts_with("dec-") && a.len() == 36);
        // Pinned: changing the hash would change every published decision id.
        assert_eq!(decision_id(""), "dec-6c62272e07bb014262b821756295c58d");
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo wörld", 20), "héllo wörld");
        assert_eq!(clip("héllo wörld", 5), "héllo…");
        assert_eq!(clip("ééééé", 2), "éé…");
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let u = a.unit();
        assert!((0.0..1.0).contains(&u));
    }
}
