//! Configuration: a TOML file for *what*, command-line flags for overrides.
//!
//! [`Config::load`] reads the file (or starts from the defaults), applies
//! [`Overrides`] and validates once, so nothing downstream re-checks values.
//! Unknown keys are an error that names the key; `config.example.toml` in
//! the repository documents every key and is parsed by a test.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener that receives callbacks.
    pub server: ServerConfig,
    /// Log output.
    pub log: LogConfig,
    /// The event store.
    pub store: StoreConfig,
}

/// `[server]`: where and how callbacks are received.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`server.listen`, default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// Path that receives callbacks (`server.path`, default `/`).
    pub path: String,
    /// Largest accepted body in bytes (`server.max_body_bytes`, default 1 MiB).
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            path: "/".to_owned(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `[store]`: the SQLite event store.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Database file (`store.path`, default `./vodhook.db`), created if missing.
    pub path: PathBuf,
    /// Days events are kept (`store.retention_days`, default 90; 0 keeps them forever).
    pub retention_days: u32,
    /// Milliseconds a write waits for a lock held by another process
    /// (`store.busy_timeout_ms`, default 2000) before the callback gets 503.
    pub busy_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./vodhook.db"),
            retention_days: 90,
            busy_timeout_ms: 2000,
        }
    }
}

impl StoreConfig {
    /// The options the store opens with.
    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            path: self.path.clone(),
            busy_timeout: std::time::Duration::from_millis(self.busy_timeout_ms),
        }
    }
}

/// `[log]`: how stdout looks.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// The two log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event or message.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Values from the command line that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--path`.
    pub path: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--max-body-bytes`.
    pub max_body_bytes: Option<usize>,
    /// `--db`.
    pub db: Option<PathBuf>,
}

/// A configuration problem, phrased for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong or unknown key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line and what is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The largest `max_body_bytes` accepted: VOD events are kilobytes, and a
/// larger limit only helps someone who wants to exhaust memory.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

impl Config {
    /// Reads `path` (or starts from the defaults when `None`), applies the
    /// overrides and validates the result.
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed, has an unknown key, or a value is
    /// invalid.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Config::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; the error is one line naming the line and problem.
    ///
    /// # Errors
    ///
    /// Invalid TOML, an unknown key or a value of the wrong type.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = error.message().trim().replace('\n', " ");
            match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            }
        })
    }

    fn apply(&mut self, overrides: Overrides) {
        if let Some(listen) = overrides.listen {
            self.server.listen = listen;
        }
        if let Some(path) = overrides.path {
            self.server.path = path;
        }
        if let Some(format) = overrides.log_format {
            self.log.format = format;
        }
        if let Some(max) = overrides.max_body_bytes {
            self.server.max_body_bytes = max;
        }
        if let Some(db) = overrides.db {
            self.store.path = db;
        }
    }

    /// Checks values that the types alone do not constrain.
    ///
    /// # Errors
    ///
    /// The first invalid value, named by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let path = &self.server.path;
        if !path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "server.path must start with '/', got {path:?}"
            )));
        }
        if path.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') || path.contains("//")
        {
            return Err(ConfigError::Invalid(format!(
                "server.path must be a plain URL path, got {path:?}"
            )));
        }
        if self.server.max_body_bytes == 0 || self.server.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "server.max_body_bytes must be between 1 and {MAX_BODY_LIMIT}, got {}",
                self.server.max_body_bytes
            )));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "store.path must not be empty".to_owned(),
            ));
        }
        if self.store.busy_timeout_ms > 60_000 {
            return Err(ConfigError::Invalid(format!(
                "store.busy_timeout_ms must be at most 60000, got {}",
                self.store.busy_timeout_ms
            )));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_toml_redacted(&self) -> String {
        // No key holds a secret yet; when one does, it is replaced here.
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_equals_the_defaults() {
        let text = include_str!("../config.example.toml");
        let config = Config::parse(text).expect("config.example.toml must parse");
        config.validate().unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.server.path, "/");
        assert_eq!(config.server.max_body_bytes, 1 << 20);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.store.path, PathBuf::from("./vodhook.db"));
        assert_eq!(config.store.retention_days, 90);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_key_and_line() {
        let error = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(error.contains("lisen"), "{error}");
        assert!(error.starts_with("line 3:"), "{error}");
        assert!(!error.contains('\n'));
        let error = Config::parse("[servr]\n").unwrap_err();
        assert!(error.contains("servr"), "{error}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error() {
        let error = Config::parse("[server]\nlisten = \"not an address\"\n").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        let error = Config::parse("[log]\nformat = \"yaml\"\n").unwrap_err();
        assert!(
            error.contains("yaml") || error.contains("variant"),
            "{error}"
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\npath = \"/file\"\nmax_body_bytes = 10\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            path: Some("/flag".to_owned()),
            log_format: Some(LogFormat::Text),
            ..Overrides::default()
        };
        let config = Config::load(Some(&path), overrides).unwrap();
        assert_eq!(config.server.path, "/flag");
        assert_eq!(config.server.max_body_bytes, 10);
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn invalid_values_are_rejected_with_their_key() {
        for (text, key) in [
            ("[server]\npath = \"callback\"\n", "server.path"),
            ("[server]\npath = \"/a b\"\n", "server.path"),
            ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes"),
        ] {
            let error = Config::parse(text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let error = Config::load(
            Some(Path::new("/nonexistent/vodhook.toml")),
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("/nonexistent/vodhook.toml"), "{error}");
    }
}
