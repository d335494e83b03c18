//! The ban engine's cost per line on crafted lines against netfilter's
//! default rules, as the daemon runs them (`RuleSet::evaluate`): the
//! dearest line of each shape, in µs (best of 5). For BENCHMARKS.md, "The
//! ban engine's budget":
//!
//! ```text
//! cargo run --release --example f2b_budget
//! ```

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

fn main() {
    let rules = RuleSet::defaults();
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
