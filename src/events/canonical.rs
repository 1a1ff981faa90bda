//! The dedup key: SHA-256 of an event's canonical JSON.
//!
//! The canonical form is compact JSON with the keys of every object sorted
//! (byte order), the last of repeated keys kept, strings and numbers
//! written as `serde_json` writes them after reading them, and the
//! transport fields (`EventHandle`, `Sign`, `T`) left out of the top-level
//! object. It used to be made by reading the body into a
//! `serde_json::Value` and writing that tree back; now the canonical bytes
//! are written while `serde_json` reads the body ([`Canonical`]), with no
//! tree: the same reader makes the same calls (numbers, strings, errors,
//! depth limit), so the keys are byte for byte the ones the tree gave. The
//! tests keep the tree version as the oracle.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::Transport;

/// The identity of an event across deliveries: SHA-256 of its canonical
/// JSON (keys sorted, no white space) without the transport fields
/// (`EventHandle`, `Sign`, `T`). The same event pushed twice, or pushed and
/// then pulled, has the same key. A body that is not a JSON object is
/// hashed as it is.
///
/// `serde_json` reads an integer beyond 64 bits as an `f64`, so two ids
/// that differ only in their last digits would give one key and the second
/// event would be dropped as a duplicate. A body with such an integer is
/// made canonical from its raw JSON instead, numbers as written (bodies
/// without one keep the keys they always had).
pub fn dedup_key(body: &[u8]) -> [u8; 32] {
    let mut canonical = Vec::with_capacity(body.len());
    if has_wide_integer(body) {
        let exact = std::str::from_utf8(body)
            .ok()
            .and_then(|text| write_canonical_raw(text, true, &mut canonical).ok());
        if exact.is_some() {
            return Sha256::digest(&canonical).into();
        }
        canonical.clear();
    }
    match write_canonical(body, &mut canonical) {
        Ok(()) => Sha256::digest(&canonical).into(),
        Err(Fallback::Tree) => tree::dedup_key(body),
        Err(Fallback::Raw) => Sha256::digest(body).into(),
    }
}

/// Why [`write_canonical`] gave no canonical form.
#[derive(Debug, PartialEq, Eq)]
enum Fallback {
    /// Not a JSON object (or not JSON): the key hashes the body as it is.
    Raw,
    /// An object whose first key is `serde_json`'s raw-value token, which
    /// `Value` reads in a way of its own: only the tree gives its key.
    Tree,
}

/// The key `serde_json::Value` gives special meaning to (as the first key
/// of an object) when its `raw_value` feature is on.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Writes the canonical JSON of `body`, a JSON object, into `out`.
fn write_canonical(body: &[u8], out: &mut Vec<u8>) -> Result<(), Fallback> {
    let state = State {
        out,
        entries: Vec::new(),
        tmp: Vec::new(),
        tree: Cell::new(false),
    };
    let mut state = state;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = Canonical {
        state: &mut state,
        top: true,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    match read {
        Ok(()) => Ok(()),
        Err(_) if state.tree.get() => Err(Fallback::Tree),
        Err(_) => Err(Fallback::Raw),
    }
}

/// What one canonicalisation shares across its levels.
struct State<'de, 'o> {
    /// The canonical bytes so far.
    out: &'o mut Vec<u8>,
    /// The members of the objects being read, innermost last: their keys
    /// and where each value's canonical bytes lie in `out`.
    entries: Vec<Entry<'de>>,
    /// Where an object's members are reordered.
    tmp: Vec<u8>,
    /// The body needs the tree (see [`Fallback::Tree`]).
    tree: Cell<bool>,
}

/// One member of an object: its key, and its value's bytes in `out`.
struct Entry<'de> {
    key: Cow<'de, str>,
    start: usize,
    end: usize,
}

/// Reads one JSON value and writes its canonical form.
struct Canonical<'s, 'de, 'o> {
    state: &'s mut State<'de, 'o>,
    /// The top-level value: must be an object, and leaves out the
    /// transport fields.
    top: bool,
}

impl Canonical<'_, '_, '_> {
    fn scalar<E: de::Error>(self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), E> {
        if self.top {
            return Err(E::custom("not an object"));
        }
        write(self.state.out);
        Ok(())
    }
}

/// Writes what `serde_json` writes for `value`.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing a scalar into a Vec cannot fail.
    let _ = value.serialize(&mut serde_json::Serializer::new(out));
}

impl<'de> DeserializeSeed<'de> for Canonical<'_, 'de, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_, 'de, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(|out| out.extend_from_slice(if v { b"true" } else { b"false" }))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(|out| write_json(out, &v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(|out| write_json(out, &v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // `Value` keeps a finite float as a number and anything else as
        // null; serde_json writes a non-finite float as null too.
        self.scalar(|out| write_json(out, &v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(|out| write_json(out, v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(|out| out.extend_from_slice(b"null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.top {
            return Err(de::Error::custom("not an object"));
        }
        let state = self.state;
        state.out.push(b'[');
        let mut first = true;
        loop {
            let at = state.out.len();
            if !first {
                state.out.push(b',');
            }
            let item = Canonical {
                state: &mut *state,
                top: false,
            };
            if seq.next_element_seed(item)?.is_none() {
                state.out.truncate(at);
                break;
            }
            first = false;
        }
        state.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.state;
        let base = state.entries.len();
        let values_start = state.out.len();
        while let Some(key) = map.next_key_seed(Key)? {
            if base == state.entries.len() && key == RAW_VALUE_TOKEN {
                state.tree.set(true);
                return Err(de::Error::custom("raw value token"));
            }
            let start = state.out.len();
            map.next_value_seed(Canonical {
                state: &mut *state,
                top: false,
            })?;
            let end = state.out.len();
            state.entries.push(Entry { key, start, end });
        }
        // Sorted by key, document order among equal keys (a stable sort),
        // of which the last is kept, as a map keeps the last insert.
        let members = &mut state.entries[base..];
        members.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        state.tmp.clear();
        state.tmp.extend_from_slice(&state.out[values_start..]);
        state.out.truncate(values_start);
        state.out.push(b'{');
        let mut first = true;
        for (index, entry) in members.iter().enumerate() {
            let shadowed = members
                .get(index + 1)
                .is_some_and(|next| next.key == entry.key);
            if shadowed || (self.top && Transport::KEYS.contains(&entry.key.as_ref())) {
                continue;
            }
            if !first {
                state.out.push(b',');
            }
            first = false;
            write_json(state.out, entry.key.as_ref());
            state.out.push(b':');
            state.out.extend_from_slice(
                &state.tmp[entry.start - values_start..entry.end - values_start],
            );
        }
        state.out.push(b'}');
        state.entries.truncate(base);
        Ok(())
    }
}

/// An object's key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Does `body` hold, outside strings, an integer literal that fits neither
/// `u64` nor `i64`? A scan without allocation.
fn has_wide_integer(body: &[u8]) -> bool {
    let mut index = 0;
    while index < body.len() {
        match body[index] {
            b'"' => {
                index += 1;
                while index < body.len() && body[index] != b'"' {
                    index += if body[index] == b'\\' { 2 } else { 1 };
                }
                index += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = index;
                while index < body.len()
                    && matches!(body[index], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    index += 1;
                }
                let token = &body[start..index];
                let integer = !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
                let fits = std::str::from_utf8(token)
                    .is_ok_and(|t| t.parse::<u64>().is_ok() || t.parse::<i64>().is_ok());
                if integer && !fits {
                    return true;
                }
            }
            _ => index += 1,
        }
    }
    false
}

/// Canonical JSON of raw JSON text, numbers as written; at the top level
/// the transport fields are left out.
fn write_canonical_raw(text: &str, top: bool, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let text = text.trim();
    match text.as_bytes().first() {
        Some(b'{') => {
            let mut object: std::collections::BTreeMap<String, &RawValue> =
                serde_json::from_str(text)?;
            if top {
                for key in Transport::KEYS {
                    object.remove(key);
                }
            }
            out.push(b'{');
            for (index, (key, value)) in object.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &key)?;
                out.push(b':');
                write_canonical_raw(value.get(), false, out)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push(b'[');
            for (index, item) in items.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical_raw(item.get(), false, out)?;
            }
            out.push(b']');
        }
        Some(b'"') => {
            let string: String = serde_json::from_str(text)?;
            serde_json::to_writer(&mut *out, &string)?;
        }
        _ => out.extend_from_slice(text.trim().as_bytes()),
    }
    Ok(())
}

/// The canonical form through a `serde_json::Value` tree: how the key was
/// made before [`Canonical`], and still the way for the rare body that
/// `Value` reads in a way of its own (see [`Fallback::Tree`]). The tests
/// hold the streaming form to it.
mod tree {
    use serde_json::Value;
    use sha2::{Digest, Sha256};

    use super::Transport;

    /// The key of a body without wide integers, through a `Value`.
    pub(super) fn dedup_key(body: &[u8]) -> [u8; 32] {
        Sha256::digest(canonical(body)).into()
    }

    /// The bytes [`dedup_key`] hashes.
    pub(super) fn canonical(body: &[u8]) -> Vec<u8> {
        let mut canonical = Vec::with_capacity(body.len());
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut object)) => {
                for key in Transport::KEYS {
                    object.remove(key);
                }
                write_canonical(&Value::Object(object), &mut canonical);
            }
            _ => canonical.extend_from_slice(body),
        }
        canonical
    }

    /// Compact JSON with object keys sorted at every level, whatever the
    /// map type behind `Value` keeps.
    fn write_canonical(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Object(object) => {
                let mut entries: Vec<(&String, &Value)> = object.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (index, (key, value)) in entries.into_iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    // Writing a string into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, key);
                    out.push(b':');
                    write_canonical(value, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write_canonical(item, out);
                }
                out.push(b']');
            }
            scalar => {
                let _ = serde_json::to_writer(&mut *out, scalar);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The key as it was made before the streaming form: the oracle.
    fn oracle(body: &[u8]) -> [u8; 32] {
        let mut canonical = Vec::with_capacity(body.len());
        if has_wide_integer(body) {
            let exact = std::str::from_utf8(body)
                .ok()
                .and_then(|text| write_canonical_raw(text, true, &mut canonical).ok());
            if exact.is_some() {
                return Sha256::digest(&canonical).into();
            }
        }
        tree::dedup_key(body)
    }

    /// The streaming form gives the bytes the tree gives (or hashes the
    /// body itself where the tree does), and the same key.
    fn same_as_tree(body: &[u8]) -> Result<(), TestCaseError> {
        let mut streamed = Vec::new();
        match write_canonical(body, &mut streamed) {
            Ok(()) => {
                let tree = tree::canonical(body);
                prop_assert_eq!(
                    String::from_utf8_lossy(&streamed),
                    String::from_utf8_lossy(&tree),
                    "body {:?}",
                    String::from_utf8_lossy(body)
                );
            }
            Err(Fallback::Raw) => prop_assert_eq!(
                tree::canonical(body),
                body.to_vec(),
                "the tree reads {:?}",
                String::from_utf8_lossy(body)
            ),
            Err(Fallback::Tree) => {}
        }
        prop_assert_eq!(
            dedup_key(body),
            oracle(body),
            "body {:?}",
            String::from_utf8_lossy(body)
        );
        Ok(())
    }

    fn fixtures(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                fixtures(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_fixture_keeps_its_key() {
        let mut paths = Vec::new();
        fixtures(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
            &mut paths,
        );
        assert!(paths.len() > 40, "fixtures found: {}", paths.len());
        for path in paths {
            let body = std::fs::read(&path).expect("read fixture");
            let mut streamed = Vec::new();
            assert_eq!(write_canonical(&body, &mut streamed), Ok(()), "{path:?}");
            same_as_tree(&body).unwrap_or_else(|error| panic!("{path:?}: {error}"));
        }
    }

    #[test]
    fn odd_bodies_keep_their_keys() {
        let deep_ok = format!("{{\"a\":{}1{}}}", "[".repeat(120), "]".repeat(120));
        let too_deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let bodies: &[&[u8]] = &[
            br#"{}"#,
            br#"{"b":1,"a":2,"b":3}"#,
            br#"{"a":{"x":1,"x":{"y":2}},"a":[]}"#,
            br#"{"EventHandle":"h","Sign":"s","T":"1","Data":{"T":1,"Sign":2}}"#,
            br#" { "k\u00e9y" : "v\/\u20ac\ud83d\ude00\"\\\b\f\n\r\t\u0001\u007f" } "#,
            "{\"e\":\"é€😀\",\"k\":\"\\u2028\",\"\u{2028}\":1}".as_bytes(),
            br#"{"n":[0,-0,1.0,1.50,1e5,1E-7,-2.5e+3,18446744073709551615,-9223372036854775808,9223372036854775808,0.1,123456789.123456789]}"#,
            br#"{"big":1e400}"#,
            br#"{"wide":123456789012345678901234567890,"f":1.50}"#,
            br#"{"wide":-123456789012345678901234567890,"bad":}"#,
            br#"{"$serde_json::private::RawValue":"[1,2]"}"#,
            br#"{"a":1,"$serde_json::private::RawValue":"x"}"#,
            br#"{"a":true,"b":false,"c":null,"d":[null,{}],"":""}"#,
            br#"{"a":"\ud800"}"#,
            br#"{"a":1}x"#,
            br#"{"a":1,}"#,
            b"{\"a\":\"\xff\"}",
            br#"[1,2]"#,
            br#""text""#,
            br#"12"#,
            br#"null"#,
            b"",
            b"   ",
            deep_ok.as_bytes(),
            too_deep.as_bytes(),
        ];
        for body in bodies {
            same_as_tree(body).unwrap_or_else(|error| panic!("{error}"));
        }
    }

    /// JSON text with what varies between senders: key order, repeated
    /// keys, white space, escapes, number spellings.
    fn json_text() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?",
        ];
        let string = prop_oneof![
            "[a-zA-Z0-9 _]{0,12}",
            "(\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}|[a-z]|é|😀|\u{2028}){0,8}",
        ]
        .prop_map(|s| format!("\"{s}\""));
        let key = prop_oneof![
            Just("\"EventHandle\"".to_owned()),
            Just("\"T\"".to_owned()),
            Just("\"Sign\"".to_owned()),
            "[a-dA-D]{0,2}".prop_map(|s| format!("\"{s}\"")),
            string.clone(),
        ];
        let space = prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r\n")];
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number,
            string,
        ];
        let value = leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec((inner.clone(), space.clone()), 0..6).prop_map(|items| {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|(v, s)| format!("{s}{v}{s}"))
                        .collect();
                    format!("[{}]", items.join(","))
                }),
                prop::collection::vec((key.clone(), inner, space.clone()), 0..6).prop_map(
                    |members| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|(k, v, s)| format!("{s}{k}{s}:{s}{v}{s}"))
                            .collect();
                        format!("{{{}}}", members.join(","))
                    }
                ),
            ]
        });
        prop::collection::vec(("[a-zA-Z]{1,3}", value), 0..6).prop_map(|members| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", members.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn generated_bodies_keep_their_keys(body in json_text()) {
            same_as_tree(body.as_bytes())?;
        }

        #[test]
        fn mangled_bodies_keep_their_keys(
            body in json_text(),
            cut in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = body.into_bytes();
            let at = cut.index(bytes.len().max(1));
            if at < bytes.len() {
                bytes[at] = byte;
            }
            same_as_tree(&bytes)?;
        }
    }
}
