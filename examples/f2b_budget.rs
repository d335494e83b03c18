//! The ban engine's cost per line on crafted lines against netfilter's
//! default rules, as the daemon runs them (`RuleSet::evaluate`): the
//! dearest line of each shape, in µs (best of 5). For BENCHMARKS.md, "The
//! ban engine's budget":
//!
//! ```text
//! cargo run --release --example f2b_budget
//! cargo run --release --example f2b_budget -- --deny-write-execute
//! ```
//!
//! `--deny-write-execute` first makes this process refuse writable
//! executable memory (`PR_SET_MDWE`, what systemd's
//! `MemoryDenyWriteExecute=yes` refuses): PCRE2's JIT then cannot compile
//! and the rules run in its interpreter, as under the systemd unit.

use std::time::Instant;

use cowlogd::f2b::rules::RuleSet;

/// Lines built to backtrack as much as the 2,048-byte channel cut allows.
fn crafted() -> Vec<(&'static str, String)> {
    let fit = |mut line: String| {
        line.truncate(2048);
        line
    };
    vec![
        (
            "rule 3: starts × captures × lookahead",
            fit("warning: ".repeat(30)
                + &"[1]: SASL ".repeat(30)
                + &" authentication failed: ".repeat(30)
                + "Connection lost to authentication server"),
        ),
        (
            "rule 3: repeated whole attempts",
            fit("warning: [1]: SASL x authentication failed: ".repeat(60)
                + "Connection lost to authentication server"),
        ),
        (
            "rule 6: nested ( , < without the end",
            fit("a(b,1,<c".repeat(300) + ">): Password mismatch (SHA1 of given password: g"),
        ),
        (
            "rule 9: repeated GET /SOGo/ HTTP",
            fit("1 \"GET /SOGo/ HTTP".repeat(120)),
        ),
        (
            "real line (rule 3)",
            "postfix/smtpd[7]: warning: unknown[185.12.64.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6".to_owned(),
        ),
    ]
}

/// Refuses writable executable memory to this process from now on.
fn deny_write_execute() {
    const PR_SET_MDWE: libc::c_int = 65;
    const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;
    // SAFETY: prctl with integer arguments only.
    let done = unsafe { libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) };
    assert_eq!(done, 0, "PR_SET_MDWE needs Linux 6.3 or later");
}

fn main() {
    if std::env::args().any(|a| a == "--deny-write-execute") {
        deny_write_execute();
    }
    let rules = RuleSet::defaults();
    println!(
        "engine: {}",
        if rules.interpreted() > 0 {
            "PCRE2 interpreter (no JIT)"
        } else {
            "PCRE2 JIT"
        }
    );
    let mut scratch = rules.scratch();
    let mut hits = Vec::new();
    for (what, line) in crafted() {
        let mut best = f64::MAX;
        for _ in 0..5 {
            hits.clear();
            let start = Instant::now();
            rules.evaluate(line.as_bytes(), &mut hits, &mut scratch);
            best = best.min(start.elapsed().as_secs_f64() * 1e6);
        }
        let verdicts: Vec<String> = hits.iter().map(|h| format!("{:?}", h.verdict)).collect();
        println!(
            "{best:9.1} µs  {what} ({} bytes): {}",
            line.len(),
            verdicts.join(", ")
        );
    }
}
