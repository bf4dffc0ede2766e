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
    if s.len() <= max {
        // A string of at most `max` bytes has at most `max` characters.
        return std::borrow::Cow::Borrowed(s);
    }
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

/// Writes `units` (an integer count of 1/10^decimals) with trailing zeros dropped.
fn write_fixed(f: &mut std::fmt::Formatter<'_>, units: i64, decimals: u32) -> std::fmt::Result {
    let scale = 10i64.pow(decimals);
    let sign = if units < 0 { "-" } else { "" };
    let u = units.unsigned_abs();
    let (int, mut frac) = (u / scale as u64, u % scale as u64);
    write!(f, "{sign}{int}")?;
    if frac != 0 {
        let mut digits = decimals;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        write!(f, ".{frac:0width$}", width = digits as usize)?;
    }
    Ok(())
}

/// A number shown with at most 3 decimals, trailing zeros dropped (0.6, 0.875, 2).
#[derive(Debug, Clone, Copy)]
pub struct Num(pub f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let x = self.0 * 1000.0;
        if !x.is_finite() || x.abs() > 9e15 {
            return write!(f, "{}", self.0);
        }
        write_fixed(f, x.round() as i64, 3)
    }
}

/// A share shown as a percentage with at most one decimal (60%, 66.7%).
#[derive(Debug, Clone, Copy)]
pub struct Pct(pub f64);

impl std::fmt::Display for Pct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let x = self.0 * 1000.0;
        if !x.is_finite() || x.abs() > 9e15 {
            return write!(f, "{}%", self.0 * 100.0);
        }
        write_fixed(f, x.round() as i64, 1)?;
        f.write_str("%")
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
    fn numbers_and_percentages() {
        assert_eq!(Num(0.6).to_string(), "0.6");
        assert_eq!(Num(0.8755).to_string(), "0.876");
        assert_eq!(Num(2.0).to_string(), "2");
        assert_eq!(Num(-0.05).to_string(), "-0.05");
        assert_eq!(Num(1.001).to_string(), "1.001");
        assert_eq!(Pct(0.6).to_string(), "60%");
        assert_eq!(Pct(2.0 / 3.0).to_string(), "66.7%");
        assert_eq!(Pct(0.0).to_string(), "0%");
        assert_eq!(Num(f64::NAN).to_string(), "NaN");
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
