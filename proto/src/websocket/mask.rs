//! XOR masking (RFC 6455 section 5.3). Every byte a client sends passes through here on the
//! gateway, so it works a u64 at a time, which the compiler further vectorises.

/// XORs `data` with the 4-byte `mask`, starting at mask offset 0. Applying it twice restores
/// the data.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The chunks covered a multiple of 8 bytes, so the tail starts at mask offset 0 again.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}
