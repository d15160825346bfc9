//! Test messages whose bodies encode their sender and index, a seeded PRNG for the
//! chaos schedules, and the tail of a log.

/// The body of message `index` from `sender`: a header naming both and the size,
/// then filler derived from them, `size` bytes in all (at least the header).
pub fn test_body(sender: &str, index: usize, size: usize) -> Vec<u8> {
    let mut body = format!("peerlink-e2e from={sender} index={index} size={size};").into_bytes();
    let mut x = (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ sender.len() as u64;
    while body.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(b'a' + (x % 26) as u8);
    }
    body
}

/// (sender, index) of a [`test_body`], when `body` is exactly one.
pub fn parse_test_body(body: &[u8]) -> Option<(String, usize)> {
    let text = std::str::from_utf8(body).ok()?;
    let header = text.strip_prefix("peerlink-e2e from=")?;
    let (header, _) = header.split_once(';')?;
    let (sender, rest) = header.split_once(" index=")?;
    let (index, size) = rest.split_once(" size=")?;
    let index: usize = index.parse().ok()?;
    let size: usize = size.parse().ok()?;
    if size == body.len() && test_body(sender, index, size) == body {
        Some((sender.to_string(), index))
    } else {
        None
    }
}

/// The Message-Id of message `index` from `sender`.
pub fn test_id(sender: &str, index: usize) -> String {
    format!("{sender}-{index:06}")
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// A small seeded PRNG (SplitMix64): the chaos schedule is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from the clock and the process id.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut r = Rng(nanos ^ (u64::from(std::process::id()) << 32));
        r.next_u64()
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as u64) as usize;
            items.swap(i, j);
        }
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut r = Rng::new(Rng::fresh_seed());
    (0..n)
        .map(|_| format!("{:02x}", r.next_u64() as u8))
        .collect()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bodies_round_trip() {
        let b = test_body("a", 42, 1024);
        assert_eq!(b.len(), 1024);
        assert_eq!(parse_test_body(&b), Some(("a".to_string(), 42)));
        let mut bad = b.clone();
        bad[500] ^= 1;
        assert_eq!(parse_test_body(&bad), None);
        assert_eq!(parse_test_body(&test_body("b", 42, 1024)[..1000]), None);
    }
}
