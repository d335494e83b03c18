//! The `cowlogd` binary: flags, logging, config, signals. The daemon itself
//! is [`cowlogd::run`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Log collector for Docker and mailcow: GELF and syslog in, mailcow's Redis
/// lists and ban channel out, Prometheus metrics alongside.
///
/// With no config file cowlogd runs the mailcow profile on the default
/// ports (GELF 12201 UDP+TCP, syslog 5140 UDP+TCP, metrics 9127).
/// COWLOGD_REDIS_URL overrides redis.url. RUST_LOG sets the log level
/// (default: info). SIGTERM or SIGINT stops the inputs, flushes queued
/// messages to Redis (bounded by redis.shutdown_flush_ms) and exits 0.
/// SIGHUP re-reads the config file and applies the routes, list caps and
/// channel encoding without stopping any input; other changed keys are
/// named in the log and need a restart; an invalid file is refused and
/// the running config stays.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML config file; every key is optional.
    #[arg(
        long,
        short,
        global = true,
        value_name = "FILE",
        env = "COWLOGD_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Print every record on stdout as it is routed (also `[console]
    /// enabled = true`): where it came from, the route, stored or dropped.
    #[arg(long)]
    console: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The newest entries of mailcow's lists (default POSTFIX_MAILLOG,
    /// DOVECOT_MAILLOG, SOGO_LOG), oldest first, as the UI's log tabs show
    /// them; or the ban channel as netfilter sees it.
    Tail {
        /// Lists to show.
        keys: Vec<String>,
        /// Newest entries per list.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: usize,
        /// Keep showing new entries as they arrive.
        #[arg(short, long)]
        follow: bool,
        /// Show the channel's payloads (netfilter's view) as they arrive.
        #[arg(long)]
        channel: bool,
        /// Print entries as stored (JSON), not decoded.
        #[arg(long)]
        json: bool,
    },
    /// The top offenders as the running daemon's `[f2b]` sees them (its
    /// `GET /f2b` on `metrics.listen`): attempts against netfilter's
    /// `max_attempts`, the rules that matched, and which networks netfilter
    /// has banned and for how long.
    Bans {
        /// Offenders shown.
        #[arg(short = 'n', long, default_value_t = 20)]
        top: usize,
        /// Redraw every `--interval` seconds until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Seconds between redraws with `--follow`.
        #[arg(long, default_value_t = 2.0, value_parser = positive_seconds)]
        interval: f64,
        /// Print `/f2b` as the daemon answers it (JSON).
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon's `/health` (on `metrics.listen`); exit 0 if it
    /// answers 200, 1 otherwise. For container health checks: the image has
    /// no curl.
    Health {
        /// Ask `/ready` instead: exit 0 only while Redis takes writes, and
        /// print what the daemon says (why not, when not).
        #[arg(long)]
        ready: bool,
    },
    /// Validate the config and print the effective config as TOML (password
    /// masked); exit 0 if valid, 1 with the bad key named if not.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One TLS crypto provider for the process (rediss://); the only one built in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (config, mut settings) = match cowlogd::load_settings(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("cowlogd: invalid configuration: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Tail {
        keys,
        lines,
        follow,
        channel,
        json,
    }) = &cli.command
    {
        let options = cowlogd::tail::TailOptions {
            keys: keys.clone(),
            lines: *lines,
            follow: *follow,
            channel: *channel,
            json: *json,
            color: cowlogd::console::Console::wants_color(),
        };
        return exit("cowlogd tail", cowlogd::tail::run(&settings, &options));
    }
    if let Some(Command::Bans {
        top,
        follow,
        interval,
        json,
    }) = cli.command
    {
        let options = cowlogd::bans::BansOptions {
            top,
            follow,
            interval: std::time::Duration::from_secs_f64(interval),
            json,
            redraw: std::io::stdout().is_terminal(),
            color: cowlogd::console::Console::wants_color(),
        };
        return exit("cowlogd bans", cowlogd::bans::run(&settings, &options));
    }
    if let Some(Command::Health { ready }) = cli.command {
        let Some(addr) = settings.metrics.listen else {
            eprintln!("cowlogd health: metrics.listen is off; nothing to ask");
            return ExitCode::FAILURE;
        };
        return match cowlogd::http::check_health(addr, ready, std::time::Duration::from_secs(3)) {
            Ok(answer) => {
                if ready {
                    println!("{answer}");
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cowlogd health: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Check) = cli.command {
        return match config.to_toml_masked() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cowlogd: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    settings.console |= cli.console;
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cowlogd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    exit(
        "cowlogd",
        runtime.block_on(serve(config, settings, cli.config)),
    )
}

/// Runs the daemon until SIGTERM or SIGINT, reloading on SIGHUP.
async fn serve(
    started: cowlogd::config::Config,
    settings: cowlogd::config::Settings,
    path: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = anyhow::Context::context(signal(SignalKind::hangup()), "watching SIGHUP")?;
    let daemon = cowlogd::Daemon::start(settings).await?;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = hangup.recv() => reload(&daemon, &started, path.as_deref()),
        }
    }
    daemon.stop().await;
    Ok(())
}

/// SIGHUP: re-reads `path` and applies what can change while running.
fn reload(daemon: &cowlogd::Daemon, started: &cowlogd::config::Config, path: Option<&Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: cowlogd runs without a config file (--config); nothing to re-read");
        return;
    };
    let (config, settings) = match cowlogd::load_settings(Some(path)) {
        Ok(loaded) => loaded,
        Err(error) => {
            daemon.count_refused_reload();
            tracing::error!(
                file = %path.display(),
                error = format!("{error:#}"),
                "SIGHUP: config refused; the running config stays"
            );
            return;
        }
    };
    match daemon.reload(started, &config, &settings) {
        Ok(restart) if restart.is_empty() => tracing::info!(
            file = %path.display(),
            routes = settings.router.routes().len(),
            "SIGHUP: config reloaded"
        ),
        Ok(restart) => tracing::warn!(
            file = %path.display(),
            routes = settings.router.routes().len(),
            needs_restart = restart.join(", "),
            "SIGHUP: config reloaded; the keys named need a restart and keep their running values"
        ),
        Err(error) => tracing::error!(
            file = %path.display(),
            error = format!("{error:#}"),
            "SIGHUP: config refused; the running config stays"
        ),
    }
}

/// 0, or 1 with the error and its causes on stderr after `what`.
fn exit(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{what}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--interval`: a number of seconds, at least 0.1.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.1..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0.1 to 86400"
        )),
    }
}

/// Raises the soft open-file limit to the hard one: every connection and
/// the Redis writer need descriptors, and a soft limit of 1024 is common.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops cowlogd");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
