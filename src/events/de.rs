//! Lenient deserializers for VOD payload fields.
//!
//! Real VOD bodies disagree with the SDK types in small ways (see
//! `docs/vod-protocol.md` §7): ids arrive as JSON numbers larger than 2^53,
//! integers arrive as `60.0`, lists carry `null` elements, every field may be
//! an explicit `null`. These functions accept all of that so that a typed
//! parse fails only when a value has a truly different shape (an object
//! where a string belongs, say).
//!
//! Numbers are never routed through `f64` on the way to a string: string
//! fields read the value as raw JSON and keep an integer's literal text, so
//! an id with more digits than `u64` holds stays exact.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// An optional string that may also arrive as a JSON number or boolean; an
/// integer is kept as written, however many digits it has.
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw: Option<&'de RawValue> = Option::deserialize(d)?;
    raw.map(|raw| scalar_string(raw.get())).transpose()
}

/// The text of a scalar JSON value read as raw JSON: a string unescaped, an
/// integer as written (serde_json would hand one beyond 64 bits over as an
/// `f64`, losing digits), any other number as its `f64` value, a boolean
/// as `true`/`false`. Objects and arrays are of a different shape.
///
/// Reading a field as raw JSON needs serde_json's own deserializer over a
/// string or slice, which is how every payload is read (`Event::parse`).
pub(crate) fn scalar_string<E: de::Error>(text: &str) -> Result<String, E> {
    let expected = &"a string or number";
    match text.as_bytes().first() {
        Some(b'"') => match text.get(1..text.len() - 1) {
            Some(inner) if !inner.contains('\\') => Ok(inner.to_owned()),
            _ => serde_json::from_str(text).map_err(E::custom),
        },
        Some(b'{') => Err(E::invalid_type(de::Unexpected::Map, expected)),
        Some(b'[') => Err(E::invalid_type(de::Unexpected::Seq, expected)),
        Some(b't') => Ok("true".to_owned()),
        Some(b'f') => Ok("false".to_owned()),
        _ if is_integer(text) => Ok(text.to_owned()),
        _ => text
            .parse::<f64>()
            .map(|v| v.to_string())
            .map_err(|_| E::invalid_value(de::Unexpected::Str(text), expected)),
    }
}

/// `-?[0-9]+`: a JSON integer literal.
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// An optional signed integer; integral floats and numeric strings are accepted.
pub(crate) fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(OptVisitor(IntLike::<i64>(PhantomData)))
}

/// An optional unsigned integer; integral floats and numeric strings are accepted.
pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(OptVisitor(IntLike::<u64>(PhantomData)))
}

/// An optional float; integers and numeric strings are accepted.
pub(crate) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_any(OptVisitor(FloatLike))
}

/// An optional boolean; `0`/`1` and `"true"`/`"false"` are accepted.
pub(crate) fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(OptVisitor(BoolLike))
}

/// A list of strings; `null` elements are dropped, numbers become strings
/// (integers as written, as in [`string`]).
pub(crate) fn string_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let items: Option<Vec<Option<&'de RawValue>>> = Option::deserialize(d)?;
    items
        .map(|items| {
            items
                .into_iter()
                .flatten()
                .map(|raw| scalar_string(raw.get()))
                .collect()
        })
        .transpose()
}

/// A list of signed integers; `null` elements are dropped.
pub(crate) fn i64_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<i64>>, D::Error> {
    scalar_list(d, IntLike::<i64>(PhantomData))
}

/// A list of floats; `null` elements are dropped.
pub(crate) fn f64_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
    scalar_list(d, FloatLike)
}

/// A list of structs; `null` elements are dropped.
pub(crate) fn list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items: Option<Vec<Option<T>>> = Option::deserialize(d)?;
    Ok(items.map(|items| items.into_iter().flatten().collect()))
}

fn scalar_list<'de, D, V>(d: D, scalar: V) -> Result<Option<Vec<V::Value>>, D::Error>
where
    D: Deserializer<'de>,
    V: Visitor<'de> + Copy,
{
    struct ListVisitor<V>(V);

    impl<'de, V: Visitor<'de> + Copy> Visitor<'de> for ListVisitor<V> {
        type Value = Option<Vec<V::Value>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list or null")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element_seed(Seed(OptVisitor(self.0)))? {
                if let Some(item) = item {
                    out.push(item);
                }
            }
            Ok(Some(out))
        }
    }

    d.deserialize_any(ListVisitor(scalar))
}

struct Seed<V>(V);

impl<'de, V: Visitor<'de>> de::DeserializeSeed<'de> for Seed<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_any(self.0)
    }
}

/// Wraps a scalar visitor so that `null` becomes `None`.
#[derive(Clone, Copy)]
struct OptVisitor<V>(V);

macro_rules! forward {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v).map(Some)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for OptVisitor<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(" or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    forward!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.0.visit_borrowed_str(v).map(Some)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.0.visit_string(v).map(Some)
    }
}

/// Integers of type `T`, from integers, integral floats or numeric strings.
struct IntLike<T>(PhantomData<T>);

impl<T> Clone for IntLike<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for IntLike<T> {}

impl<T> Visitor<'_> for IntLike<T>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format_args!("integer {v} out of range")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format_args!("integer {v} out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if v.fract() != 0.0 || !v.is_finite() || v.abs() > 9.0e15 {
            return Err(E::custom(format_args!("expected an integer, found {v}")));
        }
        self.visit_i64(v as i64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        let trimmed = v.trim();
        if let Ok(parsed) = trimmed.parse::<T>() {
            return Ok(parsed);
        }
        match trimmed.parse::<f64>() {
            Ok(float) => self.visit_f64(float),
            Err(_) => Err(E::custom(format_args!("expected an integer, found {v:?}"))),
        }
    }
}

#[derive(Clone, Copy)]
struct FloatLike;

impl Visitor<'_> for FloatLike {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom(format_args!("expected a number, found {v:?}")))
    }
}

#[derive(Clone, Copy)]
struct BoolLike;

impl Visitor<'_> for BoolLike {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        Ok(v != 0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        Ok(v != 0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v {
            "true" | "True" | "TRUE" | "1" => Ok(true),
            "false" | "False" | "FALSE" | "0" => Ok(false),
            _ => Err(E::custom(format_args!("expected a boolean, found {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct Probe {
        #[serde(deserialize_with = "super::string")]
        id: Option<String>,
        #[serde(deserialize_with = "super::i64")]
        n: Option<i64>,
        #[serde(deserialize_with = "super::u64")]
        u: Option<u64>,
        #[serde(deserialize_with = "super::f64")]
        f: Option<f64>,
        #[serde(deserialize_with = "super::bool")]
        b: Option<bool>,
        #[serde(deserialize_with = "super::string_list")]
        urls: Option<Vec<String>>,
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn numeric_ids_larger_than_2_pow_53_stay_exact() {
        assert_eq!(
            probe(r#"{"id":5285485487985271490}"#).id.as_deref(),
            Some("5285485487985271490")
        );
        assert_eq!(
            probe(r#"{"id":"5285485487985271490"}"#).id.as_deref(),
            Some("5285485487985271490")
        );
    }

    #[test]
    fn integers_beyond_u64_are_kept_as_written() {
        let big = "123456789012345678901234567890";
        assert_eq!(
            probe(&format!(r#"{{"id":{big}}}"#)).id.as_deref(),
            Some(big)
        );
        assert_eq!(
            probe(&format!(r#"{{"id":-{big}}}"#)).id,
            Some(format!("-{big}"))
        );
        assert_eq!(
            probe(&format!(r#"{{"urls":[{big},null,"a\"b\u0041"]}}"#)).urls,
            Some(vec![big.to_owned(), "a\"bA".to_owned()])
        );
        // Other scalars read as before.
        assert_eq!(probe(r#"{"id":1.5}"#).id.as_deref(), Some("1.5"));
        assert_eq!(probe(r#"{"id":60.0}"#).id.as_deref(), Some("60"));
        assert_eq!(probe(r#"{"id":true}"#).id.as_deref(), Some("true"));
        assert!(serde_json::from_str::<Probe>(r#"{"urls":[["x"]]}"#).is_err());
    }

    #[test]
    fn explicit_null_and_absence_are_the_same() {
        let p = probe(r#"{"id":null,"n":null,"u":null,"f":null,"b":null,"urls":null}"#);
        assert!(p.id.is_none() && p.n.is_none() && p.u.is_none() && p.f.is_none());
        assert!(p.b.is_none() && p.urls.is_none());
        assert!(probe("{}").id.is_none());
    }

    #[test]
    fn integers_accept_integral_floats_and_numeric_strings() {
        assert_eq!(probe(r#"{"n":60.0}"#).n, Some(60));
        assert_eq!(probe(r#"{"n":"-3"}"#).n, Some(-3));
        assert_eq!(probe(r#"{"u":"20"}"#).u, Some(20));
        assert!(serde_json::from_str::<Probe>(r#"{"n":60.5}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"u":-1}"#).is_err());
    }

    #[test]
    fn floats_accept_integers() {
        assert_eq!(probe(r#"{"f":60}"#).f, Some(60.0));
        assert_eq!(probe(r#"{"f":60.04700088501}"#).f, Some(60.04700088501));
    }

    #[test]
    fn lists_drop_null_elements() {
        assert_eq!(
            probe(r#"{"urls":["a",null,"b"]}"#).urls,
            Some(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn a_different_shape_is_an_error() {
        assert!(serde_json::from_str::<Probe>(r#"{"id":{"x":1}}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"b":"maybe"}"#).is_err());
    }
}
