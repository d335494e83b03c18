//! A GELF UDP sender that writes exactly what Docker's gelf driver (go-gelf)
//! puts on the wire: the whole JSON compressed (gzip at level 1 by default,
//! zlib, or none), one datagram when it fits in 1420 bytes, else chunks of
//! 1408 payload bytes with `count = len / 1408 + 1` — which is why a payload
//! of an exact multiple of 1408 ends in a bare 12-byte chunk.

#![allow(dead_code)]

use std::io::Write;

/// go-gelf's `ChunkSize`: whole datagram, header included.
pub const CHUNK_SIZE: usize = 1420;
/// go-gelf's `chunkedDataLen`.
pub const CHUNK_DATA_LEN: usize = 1408;

/// Docker's `gelf-compression-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoCompression {
    Gzip(u32),
    Zlib(u32),
    None,
}

/// The payload go-gelf compresses and sends.
pub fn compress(json: &[u8], compression: GoCompression) -> Vec<u8> {
    match compression {
        GoCompression::Gzip(level) => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(json).unwrap();
            e.finish().unwrap()
        }
        GoCompression::Zlib(level) => {
            let mut e =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(json).unwrap();
            e.finish().unwrap()
        }
        GoCompression::None => json.to_vec(),
    }
}

/// The datagrams go-gelf sends for an already compressed payload.
pub fn datagrams_for_payload(payload: &[u8], message_id: [u8; 8]) -> Vec<Vec<u8>> {
    if payload.len() <= CHUNK_SIZE {
        return vec![payload.to_vec()];
    }
    let count = payload.len() / CHUNK_DATA_LEN + 1;
    assert!(count <= 128, "go-gelf refuses messages over 128 chunks");
    (0..count)
        .map(|seq| {
            let start = (seq * CHUNK_DATA_LEN).min(payload.len());
            let end = ((seq + 1) * CHUNK_DATA_LEN).min(payload.len());
            let mut d = vec![0x1e, 0x0f];
            d.extend_from_slice(&message_id);
            d.push(seq as u8);
            d.push(count as u8);
            d.extend_from_slice(&payload[start..end]);
            d
        })
        .collect()
}

/// The datagrams go-gelf sends for `json`.
pub fn datagrams(json: &[u8], compression: GoCompression, message_id: [u8; 8]) -> Vec<Vec<u8>> {
    datagrams_for_payload(&compress(json, compression), message_id)
}

/// `len` pseudo-random lowercase letters from `seed`: text that gzip cannot
/// shrink much, to make messages that need several chunks.
pub fn noise(seed: u64, len: usize) -> String {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'a' + (state >> 59) as u8 % 26)
        })
        .collect()
}

/// Docker's GELF JSON for one line of container output, keys as Docker
/// orders them (Go's encoder: fixed fields first, extras sorted).
pub fn docker_json(container_name: &str, line: &str, timestamp: &str, level: u8) -> Vec<u8> {
    let escaped = serde_json::to_string(line).unwrap();
    format!(
        concat!(
            r#"{{"version":"1.1","host":"docker-host-01","short_message":{},"timestamp":{},"level":{},"#,
            r#""_command":"/docker-entrypoint.sh","_container_id":"3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f","#,
            r#""_container_name":"{}","_created":"2024-05-01T09:59:58.123456789Z","#,
            r#""_image_id":"sha256:9c7a54a9a43cca047013b82af109fe963fde787f63f9e016fdc3384500c2823d","#,
            r#""_image_name":"ghcr.io/mailcow/postfix:1.80","_tag":"3b2f6e0c9a1d"}}"#
        ),
        escaped, timestamp, level, container_name
    )
    .into_bytes()
}
