//! The command line: the arguments (clap), and one module per command family. The binary's
//! own modules, not the library's: nothing but `main.rs` uses them, and the library stays what
//! a client or the daemon links.
//!
//! - [`query`]: `query` and `stats`, a running daemon's answers in words (or JSON);
//! - [`report`]: `parse`, a record's policy and diagnostics as JSON, and the words `query`
//!   prints for a parsed record (one renderer for both);
//! - [`serve`]: `serve`, configuration → logging → runtime → `serve::daemon::run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod query;
pub mod report;
pub mod serve;

/// A caching sidecar that answers mail filters' DMARC, SPF, DKIM, ATPS and TLSA questions.
#[derive(Parser)]
#[command(name = "mailpolicyd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon (with no configuration file: an embedded default).
    Serve(ServeArgs),
    /// Ask a running daemon.
    Query {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        what: QueryWhat,
    },
    /// A running daemon's counters.
    Stats {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Configuration helpers.
    Config {
        /// Print the default configuration file, commented.
        #[arg(long)]
        print_default: bool,
    },
    /// Parse a record given on the command line (no daemon, no DNS) and print its policy and
    /// diagnostics as JSON. Exit 0 valid, 1 invalid, 2 usage error.
    Parse {
        #[command(subcommand)]
        what: ParseWhat,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML configuration file (see `config --print-default`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix socket path.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<String>,
    /// Upstream resolver IP:PORT (repeatable); default: /etc/resolv.conf.
    #[arg(long, value_name = "IP:PORT")]
    pub upstream: Vec<String>,
    /// Admin HTTP address (/live, /ready, /metrics); "" turns it off.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Serve DNS (TXT, TLSA) on this loopback address, e.g. 127.0.0.1:5300.
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<String>,
    /// Cache snapshot file (written on shutdown, loaded on start).
    #[arg(long, value_name = "PATH")]
    pub snapshot: Option<String>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Args)]
pub struct ConnArgs {
    /// The daemon's socket (default: as `serve` would choose).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum QueryWhat {
    /// The DMARC policy that applies to mail from DOMAIN.
    Dmarc { domain: String },
    /// The SPF record of DOMAIN.
    Spf { domain: String },
    /// The DKIM key SELECTOR._domainkey.DOMAIN.
    Dkim { selector: String, domain: String },
    /// The ATPS record authorizing SIGNER for AUTHOR.
    Atps {
        signer: String,
        author: String,
        /// The signature's atpsh= (sha256, sha1, none).
        #[arg(long, default_value = "sha256")]
        hash: String,
    },
    /// TLSA records of an MX host.
    Tlsa { host: String, port: Option<u16> },
    /// SPF check_host() for a connection: client IP, envelope sender ("" for the null
    /// sender), HELO name.
    SpfCheck {
        ip: String,
        mail_from: String,
        helo: Option<String>,
    },
    /// The DMARC verdict for a message from FROM_DOMAIN.
    DmarcEval {
        from_domain: String,
        /// The SPF result: DOMAIN:RESULT (e.g. example.com:pass).
        #[arg(long, value_name = "DOMAIN:RESULT")]
        spf: Option<String>,
        /// A DKIM result: DOMAIN:SELECTOR:RESULT (repeatable).
        #[arg(long, value_name = "DOMAIN:SELECTOR:RESULT")]
        dkim: Vec<String>,
        /// A DKIM2 forwarder domain (repeatable).
        #[arg(long, value_name = "DOMAIN")]
        forwarder: Vec<String>,
        /// Seed for pct sampling (deterministic).
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum ParseWhat {
    /// A DMARC record, e.g. 'v=DMARC1; p=reject; rua=mailto:d@example.com'.
    Dmarc { record: String },
    /// An SPF record, e.g. 'v=spf1 include:_spf.example.com -all'.
    Spf { record: String },
    /// A DKIM key record, e.g. 'v=DKIM1; k=ed25519; p=...'.
    Dkim { record: String },
    /// An ATPS record, e.g. 'v=ATPS1; d=signer.example'.
    Atps { record: String },
    /// A TLSA record in presentation form, e.g. '3 1 1 <hex>'.
    Tlsa { record: String },
    /// The organizational domain (Public Suffix List) and the RFC 9989 tree-walk queries.
    Orgdomain {
        domain: String,
        /// A public_suffix_list.dat to use instead of the compiled-in list.
        #[arg(long, value_name = "FILE")]
        psl: Option<PathBuf>,
    },
}
