//! Ban insight: netfilter's rules evaluated in cowlogd, against a real
//! redis-server and (for the rule semantics) Python's own `re` and
//! `ipaddress`.

use std::io::{BufRead, Write};
use std::process::Command;

use cowlogd::f2b::address::AddressClass;
use cowlogd::f2b::rules::{DEFAULT_RULES, RuleSet, RuleVerdict};

use crate::support::{
    Daemon, POSTFIX, RedisServer, Subscriber, docker_gelf, json_output, run_cowlogd,
    run_with_stdin, wait_for,
};

/// Channel payloads as syslog-ng sanitizes them, for every default rule
/// and for lines that look close but must not match.
const SAMPLES: &[&str] = &[
    "mailcow UI: Invalid password for admin by 185.12.64.1",
    "Rspamd UI: Invalid password by 2a01:4f8::7",
    "warning: unknown[185.12.64.2]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
    "warning: unknown[185.12.64.2]: SASL LOGIN authentication failed: Connection lost to authentication server",
    "warning: non-SMTP command from unknown[185.12.64.3]: GET _ HTTP_1.1",
    "NOQUEUE: reject: RCPT from [185.12.64.4]: 550 5.7.1 Protocol error; from=<a@b>",
    "auth: passwd-file(admin@example.org,185.12.64.5,<AbCdEf>): Password mismatch (SHA1 of given password: 0a1b2c)",
    "auth: passwd-file(x@example.org,185.12.64.6,<AbCdEf>): unknown user (SHA1 of given password: 0a1b2c)",
    "SOGo[123]: [WARN] <0x55> Login from '185.12.64.7' for user bob might not have worked - password policy",
    "185.12.64.8 \"GET _SOGo_so_bob HTTP_1.1\" 403 12 \"-\"",
    "warning: unknown[192.168.1.5]: SASL PLAIN authentication failed: x",
    "warning: unknown[203.0.113.9]: SASL PLAIN authentication failed: x",
    "warning: unknown[1.2.3]: SASL PLAIN authentication failed: x",
    "mailcow UI: Invalid password for admin by ::1",
    "connect from unknown[185.12.64.9]",
    "warning: hostname x does not resolve to address 185.12.64.10",
    "disconnect from unknown[185.12.64.11] ehlo=1 auth=0_1 quit=1 commands=2_3",
];

fn rust_verdicts(rules: &RuleSet, line: &str) -> Vec<String> {
    let mut hits = Vec::new();
    rules.evaluate(line.as_bytes(), &mut hits, &mut rules.scratch());
    hits.iter()
        .map(|h| {
            let id = &rules.rules[h.rule].id;
            match h.verdict {
                RuleVerdict::Matched(AddressClass::Public(ip)) => format!("{id}:public:{ip}"),
                RuleVerdict::Matched(AddressClass::Private) => format!("{id}:private"),
                RuleVerdict::Matched(AddressClass::NotAnAddress) => format!("{id}:not_an_address"),
                RuleVerdict::GaveUp => format!("{id}:gave_up"),
            }
        })
        .collect()
}

#[test]
fn default_rules_fire_exactly_as_pythons_re_search_and_ipaddress() {
    let rules = RuleSet::defaults();
    let expected: Vec<Vec<&str>> = vec![
        vec!["1:public:185.12.64.1"],
        vec!["2:public:2a01:4f8::7"],
        vec!["3:public:185.12.64.2"],
        vec![],
        vec!["4:public:185.12.64.3"],
        vec!["5:public:185.12.64.4"],
        vec!["6:public:185.12.64.5"],
        vec!["7:public:185.12.64.6"],
        vec!["8:public:185.12.64.7"],
        vec![],
        vec!["3:private"],
        vec!["3:private"],
        vec!["3:not_an_address"],
        vec!["1:private"],
        vec![],
        vec![],
        vec![],
    ];
    for (line, want) in SAMPLES.iter().zip(&expected) {
        assert_eq!(rust_verdicts(&rules, line), *want, "{line}");
    }
    // The same verdicts from Python itself.
    let python = python_verdicts(&DEFAULT_RULES, SAMPLES);
    for (line, verdicts) in SAMPLES.iter().zip(python) {
        assert_eq!(
            rust_verdicts(&rules, line),
            verdicts,
            "Python disagrees on {line}"
        );
    }
}

/// What netfilter's loop makes of each line, by Python's own `re.search`
/// and `ipaddress`: `id:public:address`, `id:private` or
/// `id:not_an_address` per matching rule.
fn python_verdicts(rules: &[(&str, &str)], lines: &[&str]) -> Vec<Vec<String>> {
    let script = r#"
import ipaddress, json, re, sys
data = json.load(sys.stdin)
out = []
for line in data["lines"]:
    verdicts = []
    for rule_id, pattern in data["rules"]:
        m = re.search(pattern, line)
        if not m:
            continue
        try:
            ip = ipaddress.ip_address(m.group(1))
        except ValueError:
            verdicts.append(rule_id + ":not_an_address")
            continue
        if ip.is_private or ip.is_loopback:
            verdicts.append(rule_id + ":private")
        else:
            verdicts.append(rule_id + ":public:" + str(ip))
    out.append(verdicts)
print(json.dumps(out))
"#;
    assert!(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 not found: the rules are compared with Python's own re (apt-get install python3)"
    );
    let input = serde_json::json!({
        "rules": rules.iter().map(|(id, p)| vec![*id, *p]).collect::<Vec<_>>(),
        "lines": lines,
    });
    let output = run_with_stdin("python3", &["-c", script], input.to_string().as_bytes());
    serde_json::from_value(json_output(&output)).unwrap()
}

#[test]
fn rules_an_admin_writes_in_pythons_syntax_match_as_python_matches_them() {
    // Python's syntax and semantics where engines differ: flags, look-
    // around both ways, back-references, named groups, lazy and bounded
    // repetition (`{,3}`), `\Z`, `\uXXXX`, Unicode `\d` and `\w`, and which
    // alternative a backtracking engine takes for group 1.
    let custom: &[(&str, &str)] = &[
        ("1", r"(?i)login failed from ([0-9a-f.:]+)"),
        ("2", r"from (?P<ip>[0-9.]+)(?= port)"),
        ("3", r"(?<!not )banned ([0-9.]+)"),
        ("4", r"(\w+) again \1 from [0-9.]+"),
        ("5", r"addr ([0-9.]{7,15})\Z"),
        ("6", r"caf\u00e9 from ([0-9.]+)"),
        ("7", r"^(?:\S+ ){2}rip=([0-9a-f.:]+)"),
        ("8", r"rip=([0-9a-f.:]+?)(?:,|$)"),
        ("9", r"(?s)start.*?ip=([0-9.]+)"),
        ("10", r"x{,3}y ([0-9.]+)"),
        ("11", r"\bclient\b\s+([\d.]+) x"),
        ("12", r"(1|185\.12)(\.64\.1|\.64\.10)?"),
        ("13", r"user (\w+) from"),
        ("14", r"(?x) host \s = \s ( [0-9.]+ )"),
        ("15", r"(?:(?:up|down)link )+via ([0-9a-f.:]+)"),
    ];
    let lines: &[&str] = &[
        "LOGIN FAILED from 185.12.64.1",
        "connect from 185.12.64.2 port 25",
        "connect from 185.12.64.2 port",
        "connect from 185.12.64.2",
        "not banned 185.12.64.3 then banned 185.12.64.4",
        "bob again bob from 185.12.64.5",
        "bob again bobby from 185.12.64.5",
        "peer addr 185.12.64.6",
        "peer addr 185.12.64.6\n",
        "peer addr 185.12.64.6 x",
        "café from 185.12.64.7",
        "cafe from 185.12.64.7",
        "imap-login: Login: rip=185.12.64.8, lip=10.0.0.1",
        "imap-login: rip=185.12.64.8,",
        "start\nmiddle ip=185.12.64.9 and ip=185.12.64.10",
        "xxxy 185.12.64.11",
        "xxxxy 185.12.64.11",
        "client   185.12.64.12 x",
        "myclient 185.12.64.12 x",
        "client ١.٢.٣.٤ x",
        "185.12.64.10 hello",
        "user émile from 1.1.1.1",
        "host = 185.12.64.13",
        "uplink downlink uplink via 2a01:4f8::1",
        "",
    ];
    let rules = RuleSet::from_json(
        &serde_json::Value::Object(
            custom
                .iter()
                .map(|(id, pattern)| ((*id).to_owned(), (*pattern).into()))
                .collect(),
        )
        .to_string(),
    )
    .unwrap();
    assert_eq!(rules.loaded(), custom.len());
    let python = python_verdicts(custom, lines);
    let mut fired = 0;
    for (line, verdicts) in lines.iter().zip(python) {
        fired += verdicts.len();
        assert_eq!(
            rust_verdicts(&rules, line),
            verdicts,
            "Python disagrees on {line:?}"
        );
    }
    assert!(fired > 20, "the samples fire the rules ({fired} verdicts)");
}

fn sasl_failure(address: &str) -> String {
    format!(
        "Nov 24 13:49:59 mail postfix/smtpd[77]: warning: unknown[{address}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
    )
}

fn send_lines(daemon: &Daemon, lines: &[String]) {
    let mut stream = std::io::BufWriter::new(daemon.tcp(daemon.ports.gelf));
    for line in lines {
        stream.write_all(&docker_gelf(POSTFIX, line)).unwrap();
        stream.write_all(b"\0").unwrap();
    }
    stream.flush().unwrap();
}

#[test]
fn publish_matches_sends_only_what_netfilter_acts_on_and_f2b_shows_the_attack() {
    let redis = RedisServer::start();
    let subscriber = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(
        &redis.url(),
        "[redis]\npublish = \"matches\"\n[f2b]\nenabled = true\npoll_interval_s = 1\n",
    );
    let mut lines: Vec<String> = (0..12).map(|_| sasl_failure("185.12.64.9")).collect();
    lines.extend((0..3).map(|_| sasl_failure("192.168.1.5")));
    lines.push(sasl_failure("1.2.3"));
    lines.push("Nov 24 13:49:59 mail postfix/smtpd[77]: connect from unknown[185.12.64.9]".into());
    lines.push("Nov 24 13:49:59 mail postfix/smtpd[77]: warning: unknown[185.12.64.9]: SASL LOGIN authentication failed: Connection lost to authentication server".into());
    send_lines(&daemon, &lines);
    // Every line is stored; only the twelve public-address failures are published.
    redis.wait_list("POSTFIX_MAILLOG", lines.len());
    let published = subscriber.wait(12);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(subscriber.count(), 12, "published: {published:?}");
    assert!(
        published
            .iter()
            .all(|p| p.windows(13).any(|w| w == b"[185.12.64.9]"))
    );
    assert_eq!(daemon.metric("cowlogd_f2b_matches_total{rule=\"3\"}"), 16.0);
    assert_eq!(
        daemon.metric("cowlogd_f2b_ignored_total{reason=\"private\"}"),
        3.0
    );
    assert_eq!(
        daemon.metric("cowlogd_f2b_ignored_total{reason=\"not_an_address\"}"),
        1.0
    );
    assert_eq!(daemon.metric("cowlogd_f2b_rules"), 9.0);

    // netfilter bans it; the next poll shows for how long.
    redis.raw("HSET F2B_ACTIVE_BANS 185.12.64.9/32 4102444800");
    let view = wait_for("the ban in /f2b", || {
        let (status, body) = daemon.http_get("/f2b");
        assert_eq!(status, 200);
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        (view["active_bans"] == 1).then_some(view)
    });
    let top = &view["offenders"][0];
    assert_eq!(top["network"], "185.12.64.9/32");
    assert_eq!(top["attempts"], 12);
    assert_eq!(top["max_attempts"], 10);
    assert_eq!(top["rules"], serde_json::json!(["3"]));
    assert_eq!(top["banned_until"], 4102444800i64);
    assert_eq!(view["tracked"], 1);
    assert_eq!(daemon.metric("cowlogd_f2b_active_bans"), 1.0);

    // The admin's view: `cowlogd bans` against the same config.
    let config = daemon.dir.path().join("cowlogd.toml");
    let (ok, stdout, stderr) = run_cowlogd(&["bans", "--config", config.to_str().unwrap()], &[]);
    assert!(ok, "cowlogd bans failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("9 rules · ban after 10 attempts in 600 s · netfilter bans 1 network · 1 offender tracked"),
        "{stdout}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with("185.12.64.9/32 "))
        .unwrap_or_else(|| panic!("no row for the attacker: {stdout}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[1..4], ["12/10", "12", "3"], "{row}");
    assert!(row.contains("banned, ") && row.ends_with(" left"), "{row}");
    assert_eq!(lines.len(), 3, "{stdout}");

    // --follow shows a new view every interval (one after another when
    // stdout is not a terminal).
    let mut follow = Command::new(env!("CARGO_BIN_EXE_cowlogd"))
        .args(["bans", "--follow", "--interval", "0.2", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut views = 0;
    let mut line = String::new();
    while views < 3 && reader.read_line(&mut line).unwrap() > 0 {
        views += usize::from(line.starts_with("9 rules "));
        line.clear();
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert_eq!(views, 3);
}

#[test]
fn allowlisted_networks_are_not_counted_and_permanent_bans_show_as_netfilter_keeps_them() {
    let redis = RedisServer::start();
    // netfilter's allowlist: a network (host bits set, as Python's
    // strict=False takes it), and a host name it resolves (localhost:
    // loopback, which rules ignore anyway, but it shows the resolving).
    redis.raw("HSET F2B_WHITELIST 185.12.64.77/24 1 localhost 1");
    redis.raw("HSET F2B_PERM_BANS 185.12.65.0/24 1700000000");
    let daemon = Daemon::start(&redis.url(), "[f2b]\nenabled = true\npoll_interval_s = 1\n");
    let view = wait_for("the allowlist and the denylist in /f2b", || {
        let (_, body) = daemon.http_get("/f2b");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        (view["perm_bans"] == 1 && view["allowlist"].as_u64() > Some(1)).then_some(view)
    });
    assert!(view["offenders"].as_array().unwrap().is_empty());
    let mut lines: Vec<String> = (0..12).map(|_| sasl_failure("185.12.64.9")).collect();
    lines.extend((0..3).map(|_| sasl_failure("185.12.65.7")));
    lines.push(sasl_failure("185.12.66.1"));
    send_lines(&daemon, &lines);
    redis.wait_list("POSTFIX_MAILLOG", lines.len());
    wait_for("every match counted", || {
        (daemon.metric("cowlogd_f2b_matches_total{rule=\"3\"}") == 16.0).then_some(())
    });
    assert_eq!(
        daemon.metric("cowlogd_f2b_ignored_total{reason=\"allowlisted\"}"),
        12.0
    );
    assert_eq!(daemon.metric("cowlogd_f2b_perm_bans"), 1.0);
    let (_, body) = daemon.http_get("/f2b");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = |network: &str| {
        view["offenders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["network"] == network)
            .unwrap_or_else(|| panic!("no {network} in {view}"))
            .clone()
    };
    let allowed = row("185.12.64.9/32");
    assert_eq!(allowed["attempts"], 0, "netfilter does not count it");
    assert_eq!(allowed["total"], 12);
    assert_eq!(allowed["allowlisted"], true);
    let denied = row("185.12.65.7/32");
    assert_eq!(denied["attempts"], 3);
    assert_eq!(denied["denylisted"], true);
    assert_eq!(denied["allowlisted"], false);
    let other = row("185.12.66.1/32");
    assert_eq!(
        (
            other["attempts"].clone(),
            other["allowlisted"].clone(),
            other["denylisted"].clone()
        ),
        (1.into(), false.into(), false.into())
    );

    let config = daemon.dir.path().join("cowlogd.toml");
    let (ok, stdout, stderr) = run_cowlogd(&["bans", "--config", config.to_str().unwrap()], &[]);
    assert!(ok, "cowlogd bans failed: {stderr}");
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .contains(" and 1 for good · "),
        "{stdout}"
    );
    let line_of = |network: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(network))
            .unwrap_or_else(|| panic!("no {network}: {stdout}"))
            .to_owned()
    };
    assert!(line_of("185.12.64.9/32 ").ends_with("allowlisted, not counted"));
    assert!(line_of("185.12.65.7/32 ").ends_with("denylisted, banned for good"));

    // Taken off the allowlist: counted again from the next attempt.
    let before = view["allowlist"].as_u64().unwrap();
    redis.raw("HDEL F2B_WHITELIST 185.12.64.77/24");
    wait_for("the smaller allowlist", || {
        let (_, body) = daemon.http_get("/f2b");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        (view["allowlist"].as_u64() == Some(before - 1)).then_some(())
    });
    send_lines(&daemon, &[sasl_failure("185.12.64.9")]);
    wait_for("the attempt counted", || {
        let (_, body) = daemon.http_get("/f2b");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        view["offenders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["network"] == "185.12.64.9/32" && o["attempts"] == 1)
            .map(|o| assert_eq!(o["allowlisted"], false))
    });
}

#[test]
fn an_allowlist_too_long_to_read_keeps_the_one_in_force_and_is_counted() {
    let redis = RedisServer::start();
    redis.raw("HSET F2B_WHITELIST 185.12.64.0/24 1");
    let daemon = Daemon::start(&redis.url(), "[f2b]\nenabled = true\npoll_interval_s = 1\n");
    wait_for("the allowlist", || {
        let (_, body) = daemon.http_get("/f2b");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        (view["allowlist"] == 1).then_some(())
    });
    assert_eq!(
        daemon.metric("cowlogd_f2b_poll_errors_total{reason=\"too_long\"}"),
        0.0
    );
    // 1,001 entries: one past what is read each poll.
    let mut hset = redis::cmd("HSET");
    hset.arg("F2B_WHITELIST");
    for n in 0..1000 {
        hset.arg(format!("10.{}.{}.0/24", n / 256, n % 256)).arg(1);
    }
    let _: u64 = hset.query(&mut redis.client()).unwrap();
    wait_for("the long allowlist counted", || {
        (daemon.metric("cowlogd_f2b_poll_errors_total{reason=\"too_long\"}") >= 1.0).then_some(())
    });
    send_lines(&daemon, &[sasl_failure("185.12.64.9")]);
    let offender = wait_for("the attempt seen", || {
        let (_, body) = daemon.http_get("/f2b");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(view["allowlist"], 1, "the allowlist in force is kept");
        view["offenders"].get(0).cloned()
    });
    assert_eq!(offender["network"], "185.12.64.9/32");
    assert_eq!(offender["allowlisted"], true);
    assert_eq!(offender["attempts"], 0);
}

#[test]
fn an_edit_of_f2b_regex_applies_within_the_poll_interval_and_a_broken_rule_is_reported() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[f2b]\nenabled = true\npoll_interval_s = 1\n");
    redis.raw(r#"SET F2B_REGEX "{\"1\": \"bad login from ([0-9.]+)\", \"2\": \"unclosed ([\"}""#);
    wait_for("the edited rules", || {
        (daemon.metric("cowlogd_f2b_rules") == 1.0
            && daemon.metric("cowlogd_f2b_rule_errors{rule=\"2\"}") == 1.0)
            .then_some(())
    });
    send_lines(
        &daemon,
        &[
            "Nov 24 13:49:59 mail postfix/smtpd[77]: bad login from 8.8.8.8".to_owned(),
            sasl_failure("185.12.64.9"),
        ],
    );
    redis.wait_list("POSTFIX_MAILLOG", 2);
    wait_for("the match of the new rule", || {
        (daemon.metric("cowlogd_f2b_matches_total{rule=\"1\"}") == 1.0).then_some(())
    });
    // The default rule 3 is gone with the edit.
    assert_eq!(daemon.metric("cowlogd_f2b_matches_total{rule=\"3\"}"), 0.0);
    assert!(
        daemon.log().contains("does not compile"),
        "{}",
        daemon.log()
    );
    // Removing the broken rule clears its error.
    redis.raw(r#"SET F2B_REGEX "{\"1\": \"bad login from ([0-9.]+)\"}""#);
    wait_for("the broken rule's error cleared", || {
        (daemon.metric("cowlogd_f2b_rule_errors{rule=\"2\"}") == 0.0).then_some(())
    });
}

#[test]
fn an_unreadable_f2b_regex_is_counted_and_the_rules_in_force_keep_working() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[f2b]\nenabled = true\npoll_interval_s = 1\n");
    redis.raw("SET F2B_REGEX not-json");
    wait_for("the unreadable F2B_REGEX counted", || {
        (daemon.metric("cowlogd_f2b_poll_errors_total{reason=\"regex_unreadable\"}") == 1.0)
            .then_some(())
    });
    assert_eq!(daemon.metric("cowlogd_f2b_rules"), 9.0);
    send_lines(&daemon, &[sasl_failure("185.12.64.9")]);
    wait_for("the default rule still matching", || {
        (daemon.metric("cowlogd_f2b_matches_total{rule=\"3\"}") == 1.0).then_some(())
    });
}

#[test]
fn a_flood_of_distinct_addresses_keeps_the_offender_table_and_metrics_bounded() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[redis]\nlist_cap = 100\n[f2b]\nenabled = true\nmax_offenders = 500\n",
    );
    let lines: Vec<String> = (0..5000u32)
        .map(|n| {
            sasl_failure(&format!(
                "185.{}.{}.{}",
                12 + n / 65536,
                (n / 256) % 256,
                n % 256
            ))
        })
        .collect();
    send_lines(&daemon, &lines);
    wait_for("every match counted", || {
        (daemon.metric("cowlogd_f2b_matches_total{rule=\"3\"}") == 5000.0).then_some(())
    });
    let (_, body) = daemon.http_get("/f2b");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["tracked"], 500);
    assert_eq!(view["offenders"].as_array().unwrap().len(), 100);
    let series = daemon
        .metrics()
        .lines()
        .filter(|l| l.starts_with("cowlogd_f2b_"))
        .count();
    // Per rule: matches and errors; then rules, active and permanent
    // bans, four ignored reasons and three poll error reasons. None per
    // address.
    assert_eq!(series, 9 * 2 + 10, "{series} f2b series");
}

#[test]
fn a_crafted_line_over_the_search_budget_is_counted_and_a_real_failure_next_to_it_still_matches() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[f2b]\nenabled = true\npoll_interval_s = 1\n");
    // Every `warning: ` a start, every `[1]` a capture to try, every
    // "authentication failed" a place for rule 3's lookahead to fail.
    let mut crafted = "Nov 24 13:49:59 mail postfix/smtpd[77]: ".to_owned();
    crafted.push_str(&"warning: ".repeat(30));
    crafted.push_str(&"[1]: SASL ".repeat(30));
    crafted.push_str(&" authentication failed: ".repeat(30));
    crafted.push_str("Connection lost to authentication server");
    send_lines(&daemon, &[crafted, sasl_failure("185.12.64.9")]);
    redis.wait_list("POSTFIX_MAILLOG", 2);
    wait_for("the crafted line given up on", || {
        (daemon.metric("cowlogd_f2b_ignored_total{reason=\"search_limit\"}") == 1.0).then_some(())
    });
    assert_eq!(daemon.metric("cowlogd_f2b_matches_total{rule=\"3\"}"), 1.0);
}

/// The f2b counters of a daemon, as `name{labels} value` lines.
fn f2b_counters(daemon: &Daemon) -> Vec<String> {
    let mut counters: Vec<String> = daemon
        .metrics()
        .lines()
        .filter(|l| {
            l.starts_with("cowlogd_f2b_matches_total") || l.starts_with("cowlogd_f2b_ignored_total")
        })
        .map(str::to_owned)
        .collect();
    counters.sort();
    counters
}

#[test]
fn under_memory_deny_write_execute_the_ban_rules_fall_back_to_the_interpreter_with_the_same_verdicts()
 {
    // The lines of SAMPLES as postfix says them: every rule, near misses,
    // private and malformed addresses; and a crafted line over the budget.
    let mut lines: Vec<String> = SAMPLES
        .iter()
        .map(|s| format!("Nov 24 13:49:59 mail postfix/smtpd[77]: {s}"))
        .collect();
    lines.push(format!(
        "Nov 24 13:49:59 mail postfix/smtpd[77]: warning: unknown[{}]: SASL LOGIN authentication failed",
        "1.".repeat(900)
    ));
    let config = "[f2b]\nenabled = true\npoll_interval_s = 1\n";
    let mut verdicts = Vec::new();
    for deny_write_execute in [false, true] {
        let redis = RedisServer::start();
        let daemon = if deny_write_execute {
            Daemon::start_denying_write_execute(&redis.url(), config)
        } else {
            Daemon::start(&redis.url(), config)
        };
        send_lines(&daemon, &lines);
        redis.wait_list("POSTFIX_MAILLOG", lines.len());
        wait_for("every payload inspected", || {
            let published = daemon.metric("cowlogd_redis_published_total");
            (published == lines.len() as f64).then_some(())
        });
        let said_interpreter = daemon.log().contains("PCRE2's JIT is not available");
        assert_eq!(
            said_interpreter,
            deny_write_execute,
            "the JIT runs unless writable executable memory is refused: {}",
            daemon.log()
        );
        verdicts.push(f2b_counters(&daemon));
    }
    assert!(
        verdicts[0].iter().any(|l| !l.ends_with(" 0")),
        "some rule matched: {:?}",
        verdicts[0]
    );
    assert_eq!(verdicts[0], verdicts[1], "JIT and interpreter verdicts");
}
