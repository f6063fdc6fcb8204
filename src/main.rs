//! The `mailpolicyd` command. Thin by design: parse arguments, call the library, map the
//! outcome to an exit code (0 valid, 1 invalid, 2 usage error).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mailpolicyd::orgdomain::SuffixList;
use mailpolicyd::report::{self, Kind};

/// A caching sidecar that answers mail filters' DMARC, SPF, DKIM, ATPS and TLSA questions.
#[derive(Parser)]
#[command(name = "mailpolicyd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a record given on the command line (no daemon, no DNS) and print its policy and
    /// diagnostics as JSON. Exit 0 valid, 1 invalid, 2 usage error.
    Parse {
        #[command(subcommand)]
        what: ParseWhat,
    },
}

#[derive(Subcommand)]
enum ParseWhat {
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
        psl: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Parse { what } => {
            let report = match what {
                ParseWhat::Dmarc { record } => report::parse_record(Kind::Dmarc, &record),
                ParseWhat::Spf { record } => report::parse_record(Kind::Spf, &record),
                ParseWhat::Dkim { record } => report::parse_record(Kind::Dkim, &record),
                ParseWhat::Atps { record } => report::parse_record(Kind::Atps, &record),
                ParseWhat::Tlsa { record } => report::parse_record(Kind::Tlsa, &record),
                ParseWhat::Orgdomain { domain, psl } => {
                    let list = match psl {
                        None => SuffixList::builtin(),
                        Some(path) => match std::fs::read_to_string(&path)
                            .map_err(|e| e.to_string())
                            .and_then(|t| SuffixList::parse(&t).map_err(|e| e.to_string()))
                        {
                            Ok(l) => l,
                            Err(e) => {
                                eprintln!("mailpolicyd: --psl {}: {e}", path.display());
                                return ExitCode::from(2);
                            }
                        },
                    };
                    report::org_domain(&list, &domain)
                }
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report.json).unwrap_or_default()
            );
            if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
