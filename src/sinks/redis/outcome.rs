//! Classifying what Redis answered, and deciding what the writer does next.
//!
//! An attempt ends in one of four ways ([`Attempt`]): the transaction ran;
//! an earlier attempt had already applied it; Redis refused it before
//! running any of it; or no answer came. [`judge`] turns that into what to
//! count ([`Tally`]) and what to do ([`Decision`]), without I/O, so each
//! case is a unit test.

use redis::{RedisError, RedisResult, ServerError, Value};

use super::plan::{Exclusions, Plan, Step};

/// How an error code is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Will succeed later (loading, failover, busy script): keep the work
    /// and retry with back-off.
    Temporary,
    /// Out of memory: retried, but only for a bounded time.
    OutOfMemory,
    /// Cannot succeed on retry: drop what it refused, counted.
    Permanent,
}

/// The class of a Redis error code (`LOADING`, `WRONGTYPE`, …).
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY"
        | "NOREPLICAS" => ErrorClass::Temporary,
        "OOM" => ErrorClass::OutOfMemory,
        _ => ErrorClass::Permanent,
    }
}

/// Every `kind` label of `cowlogd_redis_errors_total`.
pub const ERROR_KINDS: &[&str] = &[
    "timeout",
    "connection_refused",
    "io",
    "wrongtype",
    "readonly",
    "auth",
    "oom",
    "loading",
    "busy",
    "masterdown",
    "tryagain",
    "clusterdown",
    "noreplicas",
    "noperm",
    "other_reply",
    "other",
    "marker_unreadable",
];

/// The `kind` label of `cowlogd_redis_errors_total` for a server error code.
pub fn code_label(code: &str) -> &'static str {
    match code {
        "WRONGTYPE" => "wrongtype",
        "READONLY" => "readonly",
        "NOAUTH" | "WRONGPASS" => "auth",
        "OOM" => "oom",
        "LOADING" => "loading",
        "BUSY" => "busy",
        "MASTERDOWN" => "masterdown",
        "TRYAGAIN" => "tryagain",
        "CLUSTERDOWN" => "clusterdown",
        "NOREPLICAS" => "noreplicas",
        "NOPERM" => "noperm",
        _ => "other_reply",
    }
}

/// The `kind` label for an error that is not a server reply (or is).
pub fn error_label(error: &RedisError) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connection_refusal() {
        "connection_refused"
    } else if error.is_io_error() || error.is_connection_dropped() {
        "io"
    } else if let Some(code) = error.code() {
        code_label(code)
    } else if error.kind() == redis::ErrorKind::AuthenticationFailed {
        "auth"
    } else {
        "other"
    }
}

/// How one attempt at a window ended.
#[derive(Debug)]
pub enum Attempt {
    /// `EXEC` ran now: one reply per [`Step`].
    Applied(Vec<RedisResult<Value>>),
    /// The marker says an earlier attempt, whose reply was lost, applied it.
    AppliedBefore,
    /// The marker says an earlier attempt applied part of it: plan again
    /// (the applied part is then counted, the rest written).
    Replan,
    /// Redis refused commands at queue time (`EXECABORT`): nothing ran.
    /// Each refused command as (step index, error).
    Refused(Vec<(usize, ServerError)>),
    /// Redis refused the whole attempt with one error (e.g. `LOADING` for
    /// the marker read): nothing ran.
    Unavailable(ServerError),
    /// No answer: the connection failed or the reply timed out. Maybe
    /// applied; the next attempt fences the connection and reads the marker.
    Lost(RedisError),
}

/// What the writer does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The window is finished (applied, or what was refused is dropped).
    Done,
    /// Plan the window again at once (refused keys are now excluded).
    RetryNow,
    /// Back off and retry the same window.
    RetryLater {
        /// The attempt timed out (a window that keeps timing out is split).
        timed_out: bool,
        /// Out of memory (retried for a bounded time only).
        out_of_memory: bool,
    },
}

/// What an attempt adds to the counters.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    /// Redis applied the write (some of its commands may have failed).
    pub applied: bool,
    /// Entries Redis applied.
    pub written: u64,
    /// Payloads Redis published.
    pub published: u64,
    /// Messages Redis refused for good (`dropped{reason="redis_rejected"}`).
    pub rejected: u64,
    /// One `cowlogd_redis_errors_total` kind per error seen.
    pub errors: Vec<&'static str>,
    /// The first error's text, for the log.
    pub first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, label: &'static str, text: impl FnOnce() -> String) {
        self.errors.push(label);
        if self.first_error.is_none() {
            self.first_error = Some(text());
        }
    }
}

/// The counters and the next step for `attempt` at `plan`; refused keys
/// and publishing go into `exclusions`.
pub fn judge(plan: &Plan<'_>, attempt: &Attempt, exclusions: &mut Exclusions) -> (Decision, Tally) {
    let mut tally = Tally::default();
    let decision = match attempt {
        Attempt::AppliedBefore => {
            tally.applied = true;
            // Its replies were lost: count it as the plan says, once.
            tally.written = plan.entries() as u64;
            tally.published = plan.publishes() as u64;
            Decision::Done
        }
        Attempt::Replan => Decision::RetryNow,
        Attempt::Applied(replies) => {
            tally.applied = true;
            account_replies(plan, replies, &mut tally);
            Decision::Done
        }
        Attempt::Lost(error) => {
            tally.error(error_label(error), || error.to_string());
            Decision::RetryLater {
                timed_out: error.is_timeout(),
                out_of_memory: false,
            }
        }
        Attempt::Unavailable(error) => {
            tally.error(code_label(error.code()), || error.to_string());
            retry(classify_code(error.code())).unwrap_or_else(|| {
                tally.rejected = (plan.messages - plan.excluded) as u64;
                Decision::Done
            })
        }
        Attempt::Refused(refusals) => judge_refusals(plan, refusals, exclusions, &mut tally),
    };
    (decision, tally)
}

/// The retry a refusal of `class` asks for; `None` when it cannot succeed.
fn retry(class: ErrorClass) -> Option<Decision> {
    match class {
        ErrorClass::Temporary => Some(Decision::RetryLater {
            timed_out: false,
            out_of_memory: false,
        }),
        ErrorClass::OutOfMemory => Some(Decision::RetryLater {
            timed_out: false,
            out_of_memory: true,
        }),
        ErrorClass::Permanent => None,
    }
}

/// `EXECABORT`: nothing ran. Any temporary refusal → retry everything
/// later; otherwise exclude what was refused for good and plan again.
fn judge_refusals(
    plan: &Plan<'_>,
    refusals: &[(usize, ServerError)],
    exclusions: &mut Exclusions,
    tally: &mut Tally,
) -> Decision {
    for (_, error) in refusals {
        tally.error(code_label(error.code()), || error.to_string());
    }
    // Temporary beats out-of-memory beats permanent: nothing ran, so one
    // temporary refusal is reason enough to retry everything.
    let classes: Vec<ErrorClass> = refusals
        .iter()
        .map(|(_, e)| classify_code(e.code()))
        .collect();
    let worst = [ErrorClass::Temporary, ErrorClass::OutOfMemory]
        .into_iter()
        .find(|class| classes.contains(class))
        .unwrap_or(ErrorClass::Permanent);
    if let Some(retry) = retry(worst) {
        return retry;
    }
    let mut excluded_any = false;
    for (index, _) in refusals {
        match plan.steps.get(*index) {
            Some(Step::Push { key, .. } | Step::Trim { key }) => {
                if let Some(key) = plan.keys.get(*key) {
                    exclusions.exclude_key(key);
                    excluded_any = true;
                }
            }
            Some(Step::Publish) => {
                exclusions.exclude_publish();
                excluded_any = true;
            }
            // The marker refused for good (e.g. an ACL on cowlogd:*): the
            // window cannot be written safely at all.
            Some(Step::Marker) | None => {
                tally.rejected = (plan.messages - plan.excluded) as u64;
                return Decision::Done;
            }
        }
    }
    if excluded_any {
        // What the new exclusions leave out is counted by the next plan's
        // `excluded`, against this one's.
        Decision::RetryNow
    } else {
        tally.rejected = (plan.messages - plan.excluded) as u64;
        Decision::Done
    }
}

/// The transaction ran: each command's own reply says what it did.
fn account_replies(plan: &Plan<'_>, replies: &[RedisResult<Value>], tally: &mut Tally) {
    if replies.len() != plan.steps.len() {
        // Not what Redis answers to this transaction: count the mismatch
        // loudly rather than guess which reply is whose.
        tally.error("other", || {
            format!(
                "EXEC returned {} replies for {} commands",
                replies.len(),
                plan.steps.len()
            )
        });
    }
    for (index, step) in plan.steps.iter().enumerate() {
        let reply = replies.get(index);
        let failure = match reply {
            Some(Ok(_)) => None,
            Some(Err(error)) => Some(error),
            None => continue,
        };
        match (step, failure) {
            (Step::Push { entries, .. }, None) => tally.written += *entries as u64,
            (Step::Publish, None) => tally.published += 1,
            (Step::Marker | Step::Trim { .. }, None) => {}
            (step, Some(error)) => {
                tally.error(error_label(error), || error.to_string());
                tally.rejected += match step {
                    Step::Push { entries, .. } => *entries as u64,
                    // A refused publish loses the line for netfilter only;
                    // it is still in the list.
                    Step::Publish => 1,
                    Step::Marker | Step::Trim { .. } => 0,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::batch;
    use super::super::plan::{Marker, Pending};
    use super::*;

    /// A server error as Redis sends it, e.g. `WRONGTYPE Operation…`.
    fn server_error(text: &str) -> ServerError {
        match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()) {
            Ok(Value::ServerError(error)) => error,
            other => panic!("not a server error: {other:?}"),
        }
    }

    fn fixture() -> Pending {
        Pending::new(
            vec![batch(&[
                ("P", "p1", Some("m1")),
                ("D", "d1", Some("m2")),
                ("P", "p2", None),
            ])],
            1,
        )
    }

    fn with_plan(check: impl FnOnce(&Plan<'_>, &mut Exclusions)) {
        let pending = fixture();
        let window = pending.window(100, 1 << 20).unwrap();
        let mut exclusions = Exclusions::default();
        let marker = Marker {
            key: "m".into(),
            ttl_s: 1,
        };
        let plan = Plan::new(&pending, &window, &exclusions, "CH", &marker);
        check(&plan, &mut exclusions);
    }

    #[test]
    fn every_code_the_issue_names_is_classified() {
        for code in [
            "LOADING",
            "BUSY",
            "MASTERDOWN",
            "TRYAGAIN",
            "CLUSTERDOWN",
            "READONLY",
        ] {
            assert_eq!(classify_code(code), ErrorClass::Temporary, "{code}");
        }
        assert_eq!(classify_code("OOM"), ErrorClass::OutOfMemory);
        for code in ["WRONGTYPE", "NOPERM", "ERR", "SOMETHINGNEW"] {
            assert_eq!(classify_code(code), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn an_applied_transaction_counts_each_reply_and_a_wrong_type_drops_only_its_key() {
        with_plan(|plan, exclusions| {
            // SET, LPUSH P, LTRIM P, LPUSH D, LTRIM D, PUBLISH, PUBLISH
            assert_eq!(plan.steps.len(), 7);
            let mut replies: Vec<RedisResult<Value>> = (0..7).map(|_| Ok(Value::Okay)).collect();
            replies[3] = Err(server_error("WRONGTYPE Operation against a key").into());
            let (decision, tally) = judge(plan, &Attempt::Applied(replies), exclusions);
            assert_eq!(decision, Decision::Done);
            assert_eq!((tally.written, tally.published, tally.rejected), (2, 2, 1));
            assert_eq!(tally.errors, ["wrongtype"]);
        });
    }

    #[test]
    fn applied_before_counts_the_plan_once() {
        with_plan(|plan, exclusions| {
            let (decision, tally) = judge(plan, &Attempt::AppliedBefore, exclusions);
            assert_eq!(decision, Decision::Done);
            assert_eq!((tally.written, tally.published, tally.rejected), (3, 2, 0));
        });
    }

    #[test]
    fn loading_or_readonly_at_queue_time_keeps_the_whole_window_for_later() {
        with_plan(|plan, exclusions| {
            let refused = Attempt::Refused(vec![
                (
                    0,
                    server_error("READONLY You can't write against a read only replica."),
                ),
                (
                    1,
                    server_error("READONLY You can't write against a read only replica."),
                ),
            ]);
            let (decision, tally) = judge(plan, &refused, exclusions);
            assert_eq!(
                decision,
                Decision::RetryLater {
                    timed_out: false,
                    out_of_memory: false
                }
            );
            assert_eq!((tally.written, tally.rejected), (0, 0));
            let loading = Attempt::Unavailable(server_error("LOADING Redis is loading"));
            let (decision, _) = judge(plan, &loading, exclusions);
            assert!(matches!(decision, Decision::RetryLater { .. }));
        });
    }

    #[test]
    fn a_permanent_refusal_excludes_that_key_and_plans_again() {
        let pending = fixture();
        let window = pending.window(100, 1 << 20).unwrap();
        let marker = Marker {
            key: "m".into(),
            ttl_s: 1,
        };
        let mut exclusions = Exclusions::default();
        let plan = Plan::new(&pending, &window, &exclusions, "CH", &marker);
        let refused = Attempt::Refused(vec![(1, server_error("NOPERM no permissions"))]);
        let (decision, tally) = judge(&plan, &refused, &mut exclusions);
        assert_eq!(decision, Decision::RetryNow);
        assert_eq!(tally.errors, ["noperm"]);
        let again = Plan::new(&pending, &window, &exclusions, "CH", &marker);
        assert_eq!(again.excluded, 2);
        assert_eq!((again.entries(), again.publishes()), (1, 1));
    }

    #[test]
    fn out_of_memory_is_retried_and_says_so() {
        with_plan(|plan, exclusions| {
            let refused = Attempt::Refused(vec![(0, server_error("OOM command not allowed"))]);
            let (decision, _) = judge(plan, &refused, exclusions);
            assert_eq!(
                decision,
                Decision::RetryLater {
                    timed_out: false,
                    out_of_memory: true
                }
            );
        });
    }

    #[test]
    fn a_lost_reply_is_retried_and_a_timeout_is_flagged() {
        with_plan(|plan, exclusions| {
            let timeout: RedisError =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out").into();
            let (decision, tally) = judge(plan, &Attempt::Lost(timeout), exclusions);
            assert_eq!(
                decision,
                Decision::RetryLater {
                    timed_out: true,
                    out_of_memory: false
                }
            );
            assert_eq!(tally.written, 0);
            assert_eq!(tally.errors, ["timeout"]);
        });
    }
}
