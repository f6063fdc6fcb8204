//! `mailpolicyd serve`: configuration (file < environment < flags) → logging → runtime →
//! [`mailpolicyd::serve::daemon::run`]. Exit 0 after a clean stop, 64 on a bad configuration,
//! 70 when the daemon cannot start or fails.

use std::collections::BTreeMap;
use std::process::ExitCode;

use mailpolicyd::config::{self, Flags};

use super::ServeArgs;

/// The environment `config::load` reads: `MAILPOLICYD_*` and `XDG_RUNTIME_DIR`.
fn env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("MAILPOLICYD_") || k == "XDG_RUNTIME_DIR")
        .collect()
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn serve(args: ServeArgs) -> ExitCode {
    let file = match &args.config {
        None => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("mailpolicyd: --config {}: {e}", p.display());
                return ExitCode::from(64);
            }
        },
    };
    let flags = Flags {
        socket: args.socket,
        upstream: args.upstream,
        admin: args.admin,
        dns_listen: args.dns_listen,
        snapshot: args.snapshot,
        log_format: args.log_format,
    };
    let cfg = match config::load(file.as_deref(), &env(), &flags) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                eprintln!("mailpolicyd: bad setting: {p}");
            }
            eprintln!(
                "mailpolicyd: {} problem(s) in the configuration; not starting",
                problems.len()
            );
            return ExitCode::from(64);
        }
    };
    let mut filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // hickory's validator logs every RRset it cannot verify at WARN, with the records: those
    // lines go to debug level unless the filter names hickory itself (say
    // "info,hickory_net=debug"); mailpolicyd logs one line per bogus name and failure TTL.
    if !cfg.log_level.contains("hickory") {
        for directive in ["hickory_net::dnssec=error", "hickory_proto::dnssec=error"] {
            if let Ok(d) = directive.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    if cfg.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailpolicyd: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = rt.block_on(async {
        let shutdown = mailpolicyd::serve::daemon::signals();
        mailpolicyd::serve::daemon::run(cfg.daemon, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mailpolicyd stopped");
            eprintln!("mailpolicyd: {e}");
            ExitCode::from(70)
        }
    }
}
