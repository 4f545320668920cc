//! # The command line
//!
//! Everything between the shell and the library, in ripgrep's shape: [`args`] says what each flag
//! is and checks its value (clap lives there only); each command is a module with one `run` that
//! checks its flags first, resolves them into ready library objects ([`setup`]), makes its library
//! calls and prints ([`output`]). `search` and `resume` share [`drive`]. Nothing here reaches back into
//! `main.rs`, which only parses, dispatches and maps errors to exit codes.

pub mod args;
pub mod calibrate;
pub mod cost;
pub mod drive;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod measure;
pub mod output;
pub mod profiles;
pub mod recover;
pub mod report;
pub mod resume;
pub mod runs;
pub mod search;
pub mod sensitivity;
pub mod setup;
pub mod store;
pub mod trials;
pub mod worker;
