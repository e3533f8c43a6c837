//! Random identifiers: request ids and token ids (`jti`), 128 random bits as 32 lower-case
//! hex digits, written without the formatting machinery (one per request).

/// 128 random bits as 32 lower-case hex digits (ASCII).
pub fn random_hex128() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (pair, byte) in id
        .chunks_exact_mut(2)
        .zip(rand::random::<u128>().to_be_bytes())
    {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    id
}

/// [`random_hex128`] as text.
pub fn random_hex128_string() -> String {
    random_hex128().iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let a = random_hex128_string();
        let b = random_hex128_string();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        // Every digit appears somewhere in many ids (the table is whole).
        let many: String = (0..64).map(|_| random_hex128_string()).collect();
        for d in "0123456789abcdef".chars() {
            assert!(many.contains(d), "{d}");
        }
    }
}
