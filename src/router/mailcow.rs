//! The mailcow profile: what mailcow's syslog-ng configs do today, as
//! routes.
//!
//! Each mail container's syslog-ng stores (`LPUSH`) and publishes only what
//! its `filter f_mail { facility(mail); }` lets through, after dropping
//! mailcow's filter patterns; SOGo's stores every line of its FIFO. A
//! container's stdout line carries no facility, so the profile names, per
//! container, the programs that log with facility mail, each with where
//! it logs from (mailcow-dockerized's `data/Dockerfiles/<image>/`).
//!
//! What else runs in those images and is not stored, as syslog-ng does not
//! store it: supervisord and the entrypoints (`echo` to stdout: the
//! "chatter" route), cron (facility cron), sudo (authpriv), syslog-ng's own
//! messages (facility syslog), `rspamd-pipe-ham`/`-spam` and the
//! `*_last_login.sh` policy scripts (silent: curl, redis-cli),
//! `ipv6_smtp_controller.sh` (stdout), zeyple (its own log file), and in
//! dovecot's image `imapsync_runner.pl` (writes to MySQL), the quota and
//! quarantine notifiers, `sa-rules.sh`, `maildir_gc.sh`, `repl_health.sh`
//! (stdout).

use super::{ActionName, RouteConfig};
use cowlogd_parsers::Severity;

/// mailcow's mail containers (compose services): their lines are what the
/// UI and netfilter read.
pub const MAILCOW_MAIL_CONTAINERS: [&str; 4] = [
    "postfix-mailcow",
    "postfix-tlspol-mailcow",
    "dovecot-mailcow",
    "sogo-mailcow",
];

/// Programs in the postfix image that log with facility mail.
pub(crate) const POSTFIX_MAIL_PROGRAMS: &[&str] = &[
    // postfix(1), postsuper(1), postqueue(1) before they have read
    // main.cf: syslog_name's default.
    "postfix",
    // Every Postfix daemon and tool (smtpd, qmgr, cleanup, postscreen,
    // postfix-script, postlog(1), sendmail(1)): `postfix/<name>`, and
    // mailcow's master.cf services with their own syslog_name
    // (`postfix/submission/smtpd`, `postfix/smtps/smtpd`).
    "postfix/*",
    // Postfix instances with their own syslog_name (`postfix-<instance>`,
    // postmulti(1)).
    "postfix-*",
    // whitelist_forwardinghosts.sh, mailcow's spawn(8) policy lookup on
    // 127.0.0.1:10027: `logger -t whitelist_forwardinghosts -p mail.info`.
    "whitelist_forwardinghosts",
];

/// Programs in the dovecot image that log with facility mail.
pub(crate) const DOVECOT_MAIL_PROGRAMS: &[&str] = &[
    // Every Dovecot process (imap, pop3, lmtp, auth, imap-login, the LDA
    // quota_notify.py runs, sieve): syslog_ident "dovecot",
    // syslog_facility mail (Dovecot's defaults, which mailcow keeps).
    "dovecot",
    // The same with a service in the ident, as some Dovecot builds log.
    "dovecot/*",
    // doveadm run by mailcow's cron jobs (quota recalc, expunge) and the
    // UI's actions, logging through syslog with facility mail.
    "doveadm",
];

/// The mailcow profile: what mailcow's syslog-ng configs do today.
pub fn mailcow_profile() -> Vec<RouteConfig> {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mail_containers = strings(&MAILCOW_MAIL_CONTAINERS);
    let store =
        |name: &str, container: &str, program: &[&'static str], key: &str, publish: bool| {
            RouteConfig {
                name: name.into(),
                container: strings(&[container]),
                program: strings(program),
                syslog_line: Some(true),
                key: key.into(),
                publish,
                ..RouteConfig::default()
            }
        };
    let drop = |name: &str, container: Vec<String>| RouteConfig {
        name: name.into(),
        container,
        action: ActionName::Drop,
        ..RouteConfig::default()
    };
    vec![
        RouteConfig {
            message: strings(&[
                "overriding earlier entry",
                r"TLS SNI from checks\.mailcow\.email",
                "no SASL support",
            ]),
            ..drop(
                "postfix-filtered",
                strings(&["postfix-mailcow", "postfix-tlspol-mailcow"]),
            )
        },
        RouteConfig {
            facility: (0..8).map(|n| format!("local{n}")).collect(),
            ..drop(
                "postfix-local-facilities",
                strings(&["postfix-mailcow", "postfix-tlspol-mailcow"]),
            )
        },
        RouteConfig {
            message: strings(&[
                "- trying the next passdb",
                "- trying the next userdb",
                "User has no mail_replica in userdb",
                "Error: sync: Unknown user in remote",
            ]),
            ..drop("dovecot-filtered", strings(&["dovecot-mailcow"]))
        },
        RouteConfig {
            program: strings(&[
                "CRON",
                "cron",
                "crond",
                "anacron",
                "run-parts",
                "syslog-ng",
                "supervisord",
            ]),
            ..drop("system", mail_containers.clone())
        },
        // SOGo's multi-line errors continue with header-less lines; its
        // syslog-ng stores and publishes every line of the FIFO.
        RouteConfig {
            name: "sogo-continuation".into(),
            container: strings(&["sogo-mailcow"]),
            headerless: Some(true),
            key: "SOGO_LOG".into(),
            publish: true,
            set_severity: Some(Severity::Notice),
            ..RouteConfig::default()
        },
        RouteConfig {
            syslog_line: Some(false),
            ..drop("chatter", mail_containers)
        },
        // postfix-tlspol's syslog-ng pushes to the list but not the channel.
        // Its daemon writes its own log to stderr, which syslog-ng never
        // sees, and nothing else in that image logs with facility mail: what
        // reaches this route is syslog-ng's relay of /dev/log, whose own
        // messages the "system" route has already dropped.
        store(
            "postfix-tlspol",
            "postfix-tlspol-mailcow",
            &[],
            "POSTFIX_MAILLOG",
            false,
        ),
        store(
            "postfix",
            "postfix-mailcow",
            POSTFIX_MAIL_PROGRAMS,
            "POSTFIX_MAILLOG",
            true,
        ),
        store(
            "dovecot",
            "dovecot-mailcow",
            DOVECOT_MAIL_PROGRAMS,
            "DOVECOT_MAILLOG",
            true,
        ),
        RouteConfig {
            set_severity: Some(Severity::Notice),
            ..store("sogo", "sogo-mailcow", &[], "SOGO_LOG", true)
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::{Router, with_gelf_record};
    use super::*;

    fn route_of(container: &str, line: &str) -> Option<String> {
        let json =
            serde_json::json!({"short_message": line, "level": 6, "_container_name": container});
        let router = Router::build(&mailcow_profile(), 10_000).unwrap();
        with_gelf_record(&json, |record| {
            router.route(record).map(|(_, r)| r.name.clone())
        })
    }

    #[test]
    fn mailcow_profile_routes_mail_logs() {
        let pf = "mailcowdockerized-postfix-mailcow-1";
        assert_eq!(
            route_of(pf, "Aug  5 12:34:56 m postfix/smtpd[1]: connect from x").as_deref(),
            Some("postfix")
        );
        assert_eq!(
            route_of(
                "mailcowdockerized_dovecot-mailcow_1",
                "Aug  5 12:34:56 m dovecot: auth: Error: x"
            )
            .as_deref(),
            Some("dovecot")
        );
        assert_eq!(
            route_of(
                "mailcowdockerized-sogo-mailcow-1",
                "Nov 24 13:49:59 sogod [109]: x"
            )
            .as_deref(),
            Some("sogo")
        );
        assert_eq!(
            route_of(
                "mailcowdockerized-postfix-tlspol-mailcow-1",
                "Aug  5 12:34:56 m postfix-tlspol[9]: x"
            )
            .as_deref(),
            Some("postfix-tlspol")
        );
    }

    #[test]
    fn mailcow_profile_drops_filters_system_and_chatter() {
        let pf = "mailcowdockerized-postfix-mailcow-1";
        let dc = "mailcowdockerized-dovecot-mailcow-1";
        for (container, line, route) in [
            (
                pf,
                "Aug  5 12:34:56 m postfix/smtpd[1]: warning: /etc/postfix/main.cf, line 5: overriding earlier entry: x",
                "postfix-filtered",
            ),
            (
                pf,
                "Aug  5 12:34:56 m postfix/smtpd[1]: TLS SNI from checks.mailcow.email is x",
                "postfix-filtered",
            ),
            (
                pf,
                "Aug  5 12:34:56 m postfix/smtpd[1]: warning: no SASL support",
                "postfix-filtered",
            ),
            (
                dc,
                "Aug  5 12:34:56 m dovecot: auth: passwd-file(u): unknown user - trying the next passdb",
                "dovecot-filtered",
            ),
            (
                dc,
                "Aug  5 12:34:56 m dovecot: auth: x - trying the next userdb",
                "dovecot-filtered",
            ),
            (
                dc,
                "Aug  5 12:34:56 m dovecot: doveadm: User has no mail_replica in userdb",
                "dovecot-filtered",
            ),
            (
                dc,
                "Aug  5 12:34:56 m dovecot: dsync: Error: sync: Unknown user in remote",
                "dovecot-filtered",
            ),
            (
                pf,
                "Aug  5 12:34:56 m CRON[12]: (root) CMD (/usr/local/bin/x)",
                "system",
            ),
            (
                pf,
                "Aug  5 12:34:56 m syslog-ng[1]: syslog-ng starting up; version='3.38.1'",
                "system",
            ),
        ] {
            assert_eq!(route_of(container, line).as_deref(), Some(route), "{line}");
        }
        assert_eq!(
            route_of(
                pf,
                "2026-11-24 12:00:00,123 INFO success: syslog-ng entered RUNNING state"
            )
            .as_deref(),
            Some("chatter")
        );
        assert_eq!(
            route_of("nginx-1", "Aug  5 12:34:56 m postfix/smtpd[1]: x"),
            None
        );
        assert_eq!(route_of(pf, "Aug  5 12:34:56 m opendkim[1]: x"), None);
        // SOGo's header-less continuation lines are kept; another
        // container's are chatter.
        let continuation =
            "Dec  1 16:36:02 be9a5467584c host=172.22.1.250, user=u@example.org, pwd=yes";
        assert_eq!(
            route_of("mailcowdockerized-sogo-mailcow-1", continuation).as_deref(),
            Some("sogo-continuation")
        );
        assert_eq!(route_of(pf, continuation).as_deref(), Some("chatter"));
    }

    /// A program name each pattern of `programs` matches.
    fn example_of(pattern: &str) -> String {
        pattern.replace('*', "smtpd")
    }

    #[test]
    fn every_program_postfix_logs_with_facility_mail_is_stored_and_published() {
        let pf = "mailcowdockerized-postfix-mailcow-1";
        for pattern in POSTFIX_MAIL_PROGRAMS {
            let line = format!("Dec  6 03:14:17 mail {}[9]: a line", example_of(pattern));
            assert_eq!(route_of(pf, &line).as_deref(), Some("postfix"), "{line}");
        }
    }

    #[test]
    fn whitelist_forwardinghosts_lookups_are_stored_as_mailcow_logs_them() {
        // logger -t whitelist_forwardinghosts -p mail.info (no pid).
        let line = "Dec  6 03:14:17 7e5a1b2c3d4e whitelist_forwardinghosts: Look up 192.0.2.7 on whitelist, result 200 PERMIT";
        assert_eq!(
            route_of("mailcowdockerized-postfix-mailcow-1", line).as_deref(),
            Some("postfix")
        );
        // Only in the postfix container: the same tag elsewhere is not mail.
        assert_eq!(route_of("mailcowdockerized-dovecot-mailcow-1", line), None);
    }

    #[test]
    fn every_program_dovecot_logs_with_facility_mail_is_stored_and_published() {
        let dc = "mailcowdockerized-dovecot-mailcow-1";
        for pattern in DOVECOT_MAIL_PROGRAMS {
            let line = format!(
                "Dec  6 03:14:17 mail {}: imap-login: Login: user=<u@example.org>",
                example_of(pattern)
            );
            assert_eq!(route_of(dc, &line).as_deref(), Some("dovecot"), "{line}");
        }
    }

    #[test]
    fn programs_that_do_not_log_with_facility_mail_are_not_stored() {
        let pf = "mailcowdockerized-postfix-mailcow-1";
        let dc = "mailcowdockerized-dovecot-mailcow-1";
        for (container, line) in [
            (
                pf,
                "Dec  6 03:14:17 mail sudo: root : TTY=unknown ; COMMAND=/bin/true",
            ),
            (pf, "Dec  6 03:14:17 mail opendkim[1]: x"),
            (dc, "Dec  6 03:14:17 mail imapsync[3]: x"),
        ] {
            assert_eq!(route_of(container, line), None, "{line}");
        }
    }
}
