//! The `mpsearch` command line: parses the arguments, runs the command (see the `cli` module), and
//! maps the outcome to an exit code.
//!
//! Exit codes: 0 success (also when the reader of standard output goes away: a broken pipe is not an
//! error), 1 an error in the input or the run (the message says which file or flag and what to fix),
//! 2 bad command-line usage (clap's message: an unknown flag, a value that is not a number, a name not in
//! the flag's list), 130 a search or resume stopped by Ctrl-C.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::args::{Cli, Command};

fn main() -> ExitCode {
    // First, before any thread starts: candle otherwise re-reads /proc/cpuinfo on every matmul.
    mpsearch::cpu::pin_candle_threads();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Cost(a) => cli::cost::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Sensitivity(a) => cli::sensitivity::run(a),
        Command::Search(a) => cli::search::run(*a),
        Command::Resume(a) => cli::resume::run(a),
        Command::Runs(a) => cli::runs::run(a),
        Command::Trials(a) => cli::trials::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Recover(a) => cli::recover::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Measure(a) => cli::measure::run(a),
        Command::Profiles => cli::profiles::run(),
        Command::Calibrate(a) => cli::calibrate::run(a),
        Command::Store(a) => cli::store::run(a),
        Command::Worker(a) => cli::worker::run(a),
    }
}
