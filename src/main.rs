//! The `mailpolicyd` command: parse arguments, dispatch to the command in [`cli`], return its
//! exit code (0 ok, 1 invalid record or error answer, 2 usage error, 64 bad configuration, 69
//! daemon unreachable, 70 daemon failure).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

/// mimalloc, not the system's malloc: its size classes have no per-allocation header and step
/// by 8 bytes up to 64 (glibc: 16 bytes, at least 32, an 8-byte header), and it returns freed
/// pages to the system, where glibc's arenas kept ~70 MB a capped cache had freed: the cache's
/// bound holds for the process (issue 17, loadtest/MEMORY.md). `model::answer::alloc_size`
/// models its size classes for the cache's weigher.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => cli::serve::serve(args),
        Command::Query { conn, what } => cli::query::query(conn, what),
        Command::Stats { conn } => cli::query::query_stats(conn),
        Command::Config { print_default } => {
            if !print_default {
                eprintln!("mailpolicyd config: nothing to do (try --print-default)");
                return ExitCode::from(2);
            }
            print!("{}", mailpolicyd::config::default_file());
            ExitCode::SUCCESS
        }
        Command::Parse { what } => cli::report::parse(what),
    }
}
