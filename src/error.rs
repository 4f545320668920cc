//! # Errors
//!
//! One error type for the whole library. Variants are grouped by kind and carry typed fields; every
//! message is one paragraph that names the file (and line and column where there is one) and says what to
//! fix. `main.rs` wraps it in `anyhow` only to print it.

use std::path::PathBuf;

/// Who drives a run that another controller asked for ([`Error::RunInUse`]; boxed, so that the
/// error stays small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHolder {
    pub run: String,
    /// The store, as it prints (a URL without its password).
    pub location: String,
    pub pid: String,
    pub host: String,
    /// When it took the run (UTC), or `unknown`.
    pub since: String,
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in mpsearch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- files ----
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem at a known place in a text file (TOML syntax, an unknown key, a value out of range, a
    /// pattern that matches nothing…).
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A problem with a whole file that has no single place to point at.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },

    // ---- notation and assignments ----
    /// A choice string that does not follow the choice notation.
    #[error("invalid choice `{text}`: {message}\n    {text}\n    {marker}")]
    Choice {
        text: String,
        /// Byte offset of the bad part in `text`.
        offset: usize,
        /// A `^^^` line under the bad part.
        marker: String,
        message: String,
    },
    /// An assignment that does not fit the search space (unknown layer, choice not allowed, group split).
    #[error("assignment{}: {message}", source_name.as_ref().map(|s| format!(" {s}")).unwrap_or_default())]
    Assignment {
        source_name: Option<String>,
        message: String,
    },

    // ---- models ----
    /// A model that cannot be found, read or understood.
    #[error("model {}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// A weight tensor that does not fit the architecture: missing, unexpected, or of the wrong shape or
    /// dtype (`message` gives both shapes or dtypes).
    #[error("model {model}: tensor `{tensor}`: {message}")]
    Tensor {
        model: String,
        tensor: String,
        message: String,
    },
    /// A layer name that the model does not have.
    #[error("model {model} has no layer `{layer}`; its layers are: {}", known.join(", "))]
    UnknownLayer {
        model: String,
        layer: String,
        known: Vec<String>,
    },
    /// Model input of the wrong kind or shape.
    #[error("model {model}: {message}")]
    Input { model: String, message: String },

    // ---- data ----
    /// An embedded or loaded data set that is malformed, or a request it cannot serve.
    #[error("data set {name}: {message}")]
    Data { name: String, message: String },
    /// A layer given something it cannot use while running (an override weight of the wrong shape…).
    #[error("layer `{layer}`: {message}")]
    Layer { layer: String, message: String },

    // ---- cost ----
    /// A budget outside what the search space can reach under the profile.
    #[error("{message}")]
    Infeasible { message: String },

    // ---- arguments resolved by the library ----
    /// A named shipped file (profile, search space, model) that does not exist.
    #[error("{message}")]
    NotFound { message: String },

    // ---- evaluation ----
    /// An evaluation that could not be done or gave no usable number.
    #[error("evaluation: {message}")]
    Eval { message: String },

    // ---- compression ----
    /// A weight, activation or parameter that compression cannot work with (a non-finite value, a
    /// missing calibrated range, a shape with no matrix view, an SVD that did not converge…).
    #[error("compress: {message}")]
    Compress { message: String },

    // ---- sensitivity ----
    /// Sensitivity statistics or a predictor that cannot be built from what was given (no calibration
    /// input for a layer, a weight of another shape, no measurement to fit a scale to…).
    #[error("sensitivity: {message}")]
    Sensitivity { message: String },

    // ---- search ----
    /// A strategy or search setting that cannot work (a population of 0, a problem with no searchable
    /// group, a history from another space…).
    #[error("search: {message}")]
    Search { message: String },

    /// The user stopped run `run` (Ctrl-C) during its set-up. Not a failure: everything the set-up
    /// computed is kept, and `mpsearch resume` continues it.
    #[error("run `{run}` was stopped during its set-up; what it computed is kept, and `mpsearch resume {run}` continues it")]
    Interrupted { run: String },

    // ---- store ----
    /// The store could not be opened, read or written; `location` is its folder.
    #[error("store {location}: {message}")]
    Store { location: String, message: String },
    /// Another process holds the store.
    #[error("store {location} is in use by pid {pid} (another mpsearch search, resume or report). Wait for it to finish, stop it, or pass another --store folder.")]
    StoreInUse { location: String, pid: String },
    /// Another process drives the run (a shared store, such as PostgreSQL, allows one controller per
    /// run: `search` or `resume`).
    #[error("run `{}` of store {} is being driven by pid {} on host {} (since {}). A run has one controller at a time: wait for it to finish or stop it (Ctrl-C), or start another run with --run NEW-NAME.", .0.run, .0.location, .0.pid, .0.host, .0.since)]
    RunInUse(Box<RunHolder>),
    /// A run whose recorded inputs no longer match the files (resume refuses to mix results).
    #[error("run `{run}` cannot be resumed: {}. Its results were computed against the old inputs; start a new run instead (mpsearch search --run NEW-NAME …), or restore the old files.", changes.join("; "))]
    RunChanged { run: String, changes: Vec<String> },

    // ---- exports ----
    /// An export that cannot be made or read: no such front point or trial, nothing complete to
    /// export, a run whose inputs changed, a file that is not an mpsearch export.
    #[error("export: {message}")]
    Export { message: String },
    // ---- measurements ----
    /// End-to-end latency that cannot be measured: a point that is not there or has no model (a
    /// failed trial), a run whose model or data moved or changed, a format this machine has no kernel
    /// for; `message` names the run and the point.
    #[error("measure: {message}")]
    Measure { message: String },
    // ---- recovery ----
    /// A point that cannot be fine-tuned: no such run or point, a failed trial, a model or data that
    /// changed since the search, a hyper-parameter outside its range, a choice training cannot
    /// simulate; `message` names what and says what to do.
    #[error("recover: {message}")]
    Recover { message: String },
    // ---- reports ----
    /// A report that could not be built or drawn (a run with nothing to show, a plot the drawing
    /// library refused…); `message` names the run or file.
    #[error("report: {message}")]
    Report { message: String },

    // ---- candle ----
    /// An error from candle's kernels.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Compress`] with this message.
    pub fn compress(message: impl Into<String>) -> Self {
        Error::Compress {
            message: message.into(),
        }
    }

    /// An [`Error::Eval`] with this message.
    pub fn eval(message: impl Into<String>) -> Self {
        Error::Eval {
            message: message.into(),
        }
    }

    /// An [`Error::Sensitivity`] with this message.
    pub fn sensitivity(message: impl Into<String>) -> Self {
        Error::Sensitivity {
            message: message.into(),
        }
    }

    /// An [`Error::Measure`] with this message.
    pub fn measure(message: impl Into<String>) -> Self {
        Error::Measure {
            message: message.into(),
        }
    }

    /// An [`Error::Search`] with this message.
    pub fn search(message: impl Into<String>) -> Self {
        Error::Search {
            message: message.into(),
        }
    }

    /// An [`Error::Export`] with this message.
    pub fn export(message: impl Into<String>) -> Self {
        Error::Export {
            message: message.into(),
        }
    }

    /// An [`Error::Recover`] with this message.
    pub fn recover(message: impl Into<String>) -> Self {
        Error::Recover {
            message: message.into(),
        }
    }

    /// An [`Error::Report`] with this message.
    pub fn report(message: impl Into<String>) -> Self {
        Error::Report {
            message: message.into(),
        }
    }

    /// An [`Error::Store`] for the store at `location`.
    pub fn store(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Store {
            location: location.into(),
            message: message.into(),
        }
    }

    /// An [`Error::At`] at a byte `span` start of `text`, read from `path`.
    pub fn at(
        path: impl Into<PathBuf>,
        text: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(text, offset);
        Error::At {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A TOML syntax or layout error in `text` (read from `path`): an [`Error::At`] at the line and
    /// column the parser points to, or an [`Error::File`] when it points nowhere.
    pub fn toml(path: impl Into<PathBuf>, text: &str, e: &toml::de::Error) -> Self {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => Error::at(path, text, span.start, message),
            None => Error::file(path, message),
        }
    }

    /// An [`Error::Choice`] pointing at `text[offset..offset+len]`.
    pub fn choice(text: &str, offset: usize, len: usize, message: impl Into<String>) -> Self {
        let marker = format!("{}{}", " ".repeat(offset), "^".repeat(len.max(1)));
        Error::Choice {
            text: text.to_string(),
            offset,
            marker,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let t = "ab\ncd\nef";
        assert_eq!(line_column(t, 0), (1, 1));
        assert_eq!(line_column(t, 4), (2, 2));
        assert_eq!(line_column(t, 6), (3, 1));
        assert_eq!(line_column(t, 100), (3, 3));
    }
}
