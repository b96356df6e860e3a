//! The gateway's configuration error, in a module of its own so that `config` (which holds every
//! section) and `upstream` (which validates its own section) both use it without depending on
//! each other.

/// Why the gateway's configuration cannot be used: the shared loader's error (file, variable
/// or key named), or a file named by a key that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading, parsing or an override failed, or a key is invalid.
    #[error(transparent)]
    Load(#[from] danmu_runtime::config::ConfigError),
    /// A file named in the configuration (public key, word list) could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A key has a value that parses but cannot work.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}
