//! Daily operation as an admin lives it: local time, metrics present from
//! the start, per-container rate limits, the commands' own words.

use std::io::Write;

use crate::support::*;

#[test]
fn timestamps_without_a_zone_are_read_in_the_zone_the_process_runs_in() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_with_env(&redis.url(), "", &[("TZ", "Europe/Berlin")]);
    // An hour ago on Berlin's clock, written as BSD syslog writes it.
    let then = jiff::ZonedDateTime::now()
        .in_tz("Europe/Berlin")
        .unwrap()
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let header = then.strftime("%b %e %H:%M:%S").to_string();
    let expected = then.timestamp().as_second().to_string();
    // A GELF line without a timestamp: the time is the nested syslog
    // header's, which names no zone.
    let gelf = serde_json::json!({
        "version": "1.1",
        "host": "docker-host",
        "short_message": format!("{header} mail postfix/smtpd[7]: connect from x"),
        "_container_name": POSTFIX,
    });
    daemon.udp(daemon.ports.gelf, gelf.to_string().as_bytes());
    // And a BSD syslog line over TCP, relayed by Docker's syslog driver.
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream
        .write_all(format!("<30>{header} {POSTFIX}[9]: {header} mail postfix/smtpd[8]: connect from y\n").as_bytes())
        .unwrap();
    let list = redis.wait_list("POSTFIX_MAILLOG", 2);
    // Read as UTC it would be one or two hours off (CET, CEST).
    for raw in &list {
        let entry: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(entry["time"], expected.as_str(), "{raw}");
    }
}
