//! A stand-in Graylog: GELF UDP and TCP listeners that decode with plain
//! flate2 and serde_json, independent of cowlogd's own parsers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wait_for;

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// Decompresses a whole GELF payload by its magic bytes.
pub fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match payload {
        [0x1f, 0x8b, ..] => {
            flate2::read::MultiGzDecoder::new(payload)
                .read_to_end(&mut out)
                .unwrap();
        }
        [0x78, ..] => {
            flate2::read::ZlibDecoder::new(payload)
                .read_to_end(&mut out)
                .unwrap();
        }
        _ => out.extend_from_slice(payload),
    }
    out
}

pub struct GraylogUdp {
    pub port: u16,
    pub messages: Received,
    /// Every datagram's length, in arrival order.
    pub datagram_sizes: Arc<Mutex<Vec<usize>>>,
}

impl GraylogUdp {
    pub fn start() -> GraylogUdp {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let messages: Received = Arc::default();
        let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (sink, size_sink) = (messages.clone(), sizes.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut pending: HashMap<[u8; 8], Vec<Option<Vec<u8>>>> = HashMap::new();
            loop {
                let Ok(len) = socket.recv(&mut buf) else {
                    if Arc::strong_count(&sink) == 1 {
                        return;
                    }
                    continue;
                };
                let datagram = &buf[..len];
                size_sink.lock().unwrap().push(len);
                let payload = if datagram.starts_with(&[0x1e, 0x0f]) {
                    let id: [u8; 8] = datagram[2..10].try_into().unwrap();
                    let (seq, count) = (datagram[10] as usize, datagram[11] as usize);
                    let parts = pending.entry(id).or_insert_with(|| vec![None; count]);
                    parts[seq] = Some(datagram[12..].to_vec());
                    if parts.iter().any(Option::is_none) {
                        continue;
                    }
                    let parts = pending.remove(&id).unwrap();
                    parts.into_iter().flatten().flatten().collect()
                } else {
                    datagram.to_vec()
                };
                let value: serde_json::Value = serde_json::from_slice(&inflate(&payload)).unwrap();
                sink.lock().unwrap().push(value);
            }
        });
        GraylogUdp {
            port,
            messages,
            datagram_sizes: sizes,
        }
    }

    pub fn wait(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for(&format!("{n} GELF messages over UDP"), || {
            let got = self.messages.lock().unwrap();
            (got.len() >= n).then(|| got.clone())
        })
    }
}

pub struct GraylogTcp {
    pub port: u16,
    pub messages: Received,
}

impl GraylogTcp {
    pub fn start() -> GraylogTcp {
        GraylogTcp::start_on(0)
    }

    pub fn start_on(port: u16) -> GraylogTcp {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages: Received = Arc::default();
        let sink = messages.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut pending = Vec::new();
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let Ok(len) = stream.read(&mut buf) else {
                            return;
                        };
                        if len == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..len]);
                        while let Some(end) = pending.iter().position(|&b| b == 0) {
                            let frame: Vec<u8> = pending.drain(..=end).collect();
                            let value = serde_json::from_slice(&frame[..frame.len() - 1]).unwrap();
                            sink.lock().unwrap().push(value);
                        }
                    }
                });
            }
        });
        GraylogTcp { port, messages }
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn wait(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for(&format!("{n} GELF messages over TCP"), || {
            let got = self.messages.lock().unwrap();
            (got.len() >= n).then(|| got.clone())
        })
    }
}
