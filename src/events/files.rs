//! Every media file an event names, whatever its type: the values of
//! `FileId`-like keys (`FileId`, `SrcFileId`, `fileId`, `srcFileId`, …)
//! and the elements of `FileIdSet`-like keys, anywhere in the payload.
//!
//! The payload's own `Serialize` drives the walk, so one rule covers every
//! typed struct (v3 and legacy) and the raw JSON of unknown types alike; no
//! event type needs code of its own, and a field added to the model is
//! covered by the same rule. The walk allocates only the ids it finds.

use std::fmt;

use serde::ser::{self, Serialize, Serializer};

/// Appends to `out` every file id `value` names (in document order, with
/// repeats; the caller sorts and deduplicates).
pub(crate) fn collect(value: &impl Serialize, out: &mut Vec<String>) {
    // The walker itself never fails; an error could only come from a
    // `Serialize` impl, and then the ids found so far are kept.
    let _ = value.serialize(Walker {
        out,
        mode: Mode::Skip,
    });
}

/// What a key says about its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not a file id: only look inside.
    Skip,
    /// A file id, or a list of them.
    Capture,
    /// A map key being read: report how it classifies its value.
    Key,
}

fn classify(key: &str) -> Mode {
    let key = key.strip_suffix("Set").unwrap_or(key);
    if key.ends_with("FileId") || key == "fileId" {
        Mode::Capture
    } else {
        Mode::Skip
    }
}

/// The walker never fails on its own; this error only carries one raised by
/// a `Serialize` impl.
#[derive(Debug)]
pub(crate) struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("walk stopped")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

struct Walker<'a> {
    out: &'a mut Vec<String>,
    mode: Mode,
}

impl<'a> Walker<'a> {
    fn text(self, text: impl fmt::Display) -> Result<Option<Mode>, Stop> {
        if self.mode == Mode::Capture {
            let text = text.to_string();
            if !text.is_empty() {
                self.out.push(text);
            }
        }
        Ok(None)
    }

    fn compound(self) -> Compound<'a> {
        Compound {
            out: self.out,
            mode: self.mode,
            value_mode: Mode::Skip,
        }
    }
}

/// A struct, map or sequence being walked.
struct Compound<'a> {
    out: &'a mut Vec<String>,
    /// For sequences: the mode of the elements (a `FileIdSet`'s are ids).
    mode: Mode,
    /// For maps: the mode the last key gave its value.
    value_mode: Mode,
}

impl Compound<'_> {
    fn walk<T: Serialize + ?Sized>(&mut self, value: &T, mode: Mode) -> Result<(), Stop> {
        value
            .serialize(Walker {
                out: self.out,
                mode,
            })
            .map(|_| ())
    }
}

/// `Serializer` methods that write the value as text ([`Walker::text`]).
macro_rules! as_text {
    ($($method:ident: $type:ty),*) => {$(
        fn $method(self, v: $type) -> Result<Option<Mode>, Stop> {
            self.text(v)
        }
    )*};
}

/// `Serializer` methods that start a compound, whatever its arguments.
macro_rules! compound {
    ($($method:ident($($arg:ty),*) -> $compound:ident),*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<Self::$compound, Stop> {
            Ok(self.compound())
        }
    )*};
}

impl<'a> Serializer for Walker<'a> {
    /// For a map key: how it classifies its value.
    type Ok = Option<Mode>;
    type Error = Stop;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, _: bool) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    // An integer id is kept as its digits.
    as_text!(
        serialize_char: char,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128
    );
    // A float is no id (an integer beyond 64 bits in raw JSON of an
    // unknown type arrives as one, and its digits are already lost).
    fn serialize_f32(self, _: f32) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    fn serialize_f64(self, _: f64) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    fn serialize_str(self, v: &str) -> Result<Option<Mode>, Stop> {
        if self.mode == Mode::Key {
            return Ok(Some(classify(v)));
        }
        self.text(v)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    fn serialize_none(self) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Option<Mode>, Stop> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Option<Mode>, Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<Option<Mode>, Stop> {
        value.serialize(self)
    }
    // A compound is walked element by element (see `unkeyed!`, `keyed!`).
    compound!(
        serialize_seq(Option<usize>) -> SerializeSeq,
        serialize_tuple(usize) -> SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> SerializeTupleVariant,
        serialize_map(Option<usize>) -> SerializeMap,
        serialize_struct(&'static str, usize) -> SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> SerializeStructVariant
    );
}

/// The compounds whose elements carry no key: each is walked in the mode
/// of the compound (a list under a `FileIdSet` key is captured).
macro_rules! unkeyed {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = Option<Mode>;
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
                self.walk(value, self.mode)
            }
            fn end(self) -> Result<Option<Mode>, Stop> {
                Ok(None)
            }
        }
    )*};
}

unkeyed!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_> {
    type Ok = Option<Mode>;
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        let mode = key.serialize(Walker {
            out: self.out,
            mode: Mode::Key,
        })?;
        self.value_mode = mode.unwrap_or(Mode::Skip);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        self.walk(value, self.value_mode)
    }
    fn end(self) -> Result<Option<Mode>, Stop> {
        Ok(None)
    }
}

/// The compounds whose fields have a name: each is walked in the mode its
/// name says.
macro_rules! keyed {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = Option<Mode>;
            type Error = Stop;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Stop> {
                self.walk(value, classify(key))
            }
            fn end(self) -> Result<Option<Mode>, Stop> {
                Ok(None)
            }
        }
    )*};
}

keyed!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn named(value: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        super::collect(value, &mut out);
        out
    }

    #[test]
    fn file_id_keys_at_any_depth_and_sets() {
        let value = json!({
            "FileId": "1", "SrcFileId": 2, "Name": "FileId",
            "FileIdSet": ["3", null, "4"],
            "Output": {"FileInfoSet": [{"FileId": "5"}, {"fileId": "6"}]},
            "data": {"srcFileId": "7", "fileInfo": [{"fileId": "8"}]},
            "TaskId": "9", "FileIdCount": 10, "Vid": "11", "FileId2": "12"
        });
        let mut ids = named(&value);
        ids.sort();
        assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8"]);
    }

    #[test]
    fn empty_ids_and_non_scalars_name_nothing() {
        assert!(named(&json!({"FileId": "", "SrcFileId": 1.5, "fileId": true})).is_empty());
        assert_eq!(named(&json!({"FileId": {"FileId": "x"}})), ["x"]);
    }
}
