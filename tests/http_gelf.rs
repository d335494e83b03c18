use std::io::Write;

use reqwest::StatusCode;
use reqwest::blocking::Client;

use crate::support::*;

fn start(extra: &str) -> (RedisServer, Daemon, String) {
    let redis = RedisServer::start();
    let port = free_port();
    let daemon = Daemon::start(
        &redis.url(),
        &format!(
            "[inputs]\ngelf_http = \"127.0.0.1:{port}\"\n{extra}[limits]\nhttp_max_body_bytes = 65536\n"
        ),
    );
    (redis, daemon, format!("http://127.0.0.1:{port}/gelf"))
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zlib" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "raw" => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => data.to_vec(),
    }
}

#[test]
fn post_gelf_plain_gzip_deflate_and_graypy_zlib_with_keep_alive() {
    let (redis, daemon, url) = start("");
    let client = Client::new();
    let cases = [
        ("plain", None),
        ("gzip", Some("gzip")),
        ("zlib", Some("deflate")),
        ("raw", Some("deflate")),
        ("zlib", Some("gzip,deflate")),
    ];
    for (n, (body_kind, encoding)) in cases.iter().enumerate() {
        let body = compress(body_kind, &docker_gelf(POSTFIX, &postfix_line(n)));
        let mut request = client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", *encoding);
        }
        let response = request.send().unwrap();
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{body_kind} {encoding:?}"
        );
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", cases.len());
    for n in 0..cases.len() {
        assert!(
            list.iter().any(|e| e.ends_with(&format!(" msg {n}\"}}\n"))),
            "case {n} missing"
        );
    }
    // One client, one kept-alive connection.
    assert_eq!(
        daemon.metric("cowlogd_tcp_connections{input=\"gelf_http\"}"),
        1.0
    );
    assert_eq!(
        daemon.metric("cowlogd_received_messages_total{input=\"gelf_http\"}"),
        cases.len() as f64
    );
}

#[test]
fn wrong_path_method_size_and_body_are_refused() {
    let (_redis, daemon, url) = start("");
    let client = Client::new();
    let other_path = url.replace("/gelf", "/gelf/");
    assert_eq!(
        client.post(other_path).body("{}").send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let get = client.get(&url).send().unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers()["allow"], "POST");
    let huge = docker_gelf(POSTFIX, &"z".repeat(70_000));
    assert_eq!(
        client.post(&url).body(huge).send().unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        client.post(&url).body("{not json").send().unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        client
            .post(&url)
            .body(r#"{"host":"h"}"#)
            .send()
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        daemon.metric(
            "cowlogd_dropped_messages_total{stage=\"input\",reason=\"http_body_too_large\"}"
        ),
        1.0
    );
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"parse\",reason=\"invalid_gelf\"}"),
        2.0
    );
}

#[test]
fn bulk_mode_takes_one_message_per_line() {
    let (redis, _daemon, url) = start("gelf_http_bulk = true\n");
    let mut body = Vec::new();
    for n in 0..3 {
        body.extend_from_slice(&docker_gelf(POSTFIX, &postfix_line(n)));
        body.push(b'\n');
    }
    let response = Client::new()
        .post(&url)
        .body(compress("gzip", &body))
        .header("Content-Encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(redis.wait_list("POSTFIX_MAILLOG", 3).len(), 3);
}

#[test]
fn a_bulk_body_with_one_bad_line_is_taken_once_and_the_bad_line_counted() {
    let (redis, daemon, url) = start("gelf_http_bulk = true\n");
    let mut body = Vec::new();
    for n in 0..3 {
        body.extend_from_slice(&docker_gelf(POSTFIX, &postfix_line(n)));
        body.push(b'\n');
    }
    body.extend_from_slice(b"{not gelf\n");
    let response = Client::new().post(&url).body(body).send().unwrap();
    // 202: a shipper retrying on 400 would store the good lines twice.
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(redis.wait_list("POSTFIX_MAILLOG", 3).len(), 3);
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"parse\",reason=\"invalid_gelf\"}"),
        1.0
    );
    // A body of nothing but bad lines is refused and stores nothing.
    let response = Client::new()
        .post(&url)
        .body("{bad\n{worse\n")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 3);
}
