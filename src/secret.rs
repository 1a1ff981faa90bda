//! Secrets of the configuration, kept out of everything that shows it.
//!
//! [`Secret`] holds a configured secret (`secrecy::SecretString`: wiped
//! on drop, `Debug` prints `<redacted>`). The type is the rule: wherever
//! a secret is rendered for people ([`Config::to_toml_redacted`], through
//! [`redacting`]) it serializes as `"<redacted>"`, so no list of secret
//! keys needs keeping in step. Serialized otherwise (a configuration file
//! written by a test or a tool) it is its value, and it reads back.
//!
//! [`Config::to_toml_redacted`]: crate::config::Config::to_toml_redacted

use std::cell::Cell;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

thread_local! {
    /// Set while [`redacting`] runs on this thread.
    static REDACTING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `render` with every [`Secret`] (and every type serializing
/// through [`serialize_secret`]) serializing as [`REDACTED`].
pub fn redacting<T>(render: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REDACTING.with(|flag| flag.set(self.0));
        }
    }
    let _reset = Reset(REDACTING.with(|flag| flag.replace(true)));
    render()
}

/// Serializes `value`, or [`REDACTED`] inside [`redacting`]: the one
/// serialization of every secret type.
///
/// # Errors
///
/// The serializer's.
pub fn serialize_secret<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    if REDACTING.with(Cell::get) {
        serializer.serialize_str(REDACTED)
    } else {
        serializer.serialize_str(value)
    }
}

/// A secret string of the configuration: a key, a token, a password.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Is it the empty string?
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(SecretString::from(value))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(SecretString::from(value))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        crate::sign::constant_time_eq(self.expose().as_bytes(), other.expose().as_bytes())
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_secret(self.expose(), serializer)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_redacted_only_where_it_is_shown() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"hunter2\"");
        let shown = redacting(|| serde_json::to_string(&secret).unwrap());
        assert_eq!(shown, "\"<redacted>\"");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"hunter2\"");
        assert_eq!(secret, Secret::from("hunter2".to_owned()));
        assert_ne!(secret, Secret::from("hunter3"));
    }
}
