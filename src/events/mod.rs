//! The VOD event catalog and the parser: bytes in, typed [`Event`] out, no IO.
//!
//! A body is first read as an *envelope*: one pass over the top-level JSON
//! object that borrows every value as raw JSON without building a tree. The
//! envelope says which format the body is in (v3 `EventType` or legacy
//! `eventType`/`data`), which event type it is and where its payload is. Then
//! only that payload is parsed into its typed struct.
//!
//! What this module promises (`docs/vod-protocol.md` §1.3, §3, §7):
//! - every JSON object is an [`Event`]; only bodies that are empty, not JSON
//!   or not an object are a [`BodyError`];
//! - a known type whose payload does not fit its struct is still an event,
//!   with [`Event::parse_error`] set (the raw body is the source of truth);
//! - an unknown `EventType` is kept as raw JSON ([`Payload::Unknown`]);
//! - a v3 body without `EventType` gets the type of its single non-null
//!   payload key.
//!
//! What it leaves to others: signatures (`sign`), storage, logging.

mod canonical;
mod de;
mod describe;
mod files;
pub mod legacy;
pub mod model;

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

pub use canonical::dedup_key;
pub use describe::{describe, format_size};
use model::*;

/// The catalog's event type named `name` ignoring case, by its canonical
/// name: `newfileupload` is `NewFileUpload`.
pub fn kind_ignoring_case(name: &str) -> Option<EventKind> {
    EventKind::from_name(name).or_else(|| {
        EventKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    })
}

/// The catalog's event type closest to a misspelt `name`, when one is
/// close enough to be what was meant.
pub fn closest_kind(name: &str) -> Option<EventKind> {
    let name = name.to_ascii_lowercase();
    EventKind::ALL
        .iter()
        .map(|kind| {
            let score = strsim::jaro_winkler(&name, &kind.name().to_ascii_lowercase());
            (score, *kind)
        })
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, kind)| kind)
}

/// What to tell someone who named an event type vodhook does not know:
/// the closest known type, if any, then all of them.
pub fn unknown_type_hint(name: &str) -> String {
    let names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
    match kind_ignoring_case(name).or_else(|| closest_kind(name)) {
        Some(kind) => format!(
            "did you mean {:?}? known types: {}",
            kind.name(),
            names.join(", ")
        ),
        None => format!("known types: {}", names.join(", ")),
    }
}

/// Ids, status and error shared by most payload structs (generated per struct).
pub trait TaskCommon {
    /// `TaskId`, where the struct has one.
    fn task_id(&self) -> Option<&str> {
        None
    }
    /// `FileId`, where the struct has one.
    fn file_id(&self) -> Option<&str> {
        None
    }
    /// `Status` as a string, where the struct has one.
    fn status(&self) -> Option<&str> {
        None
    }
    /// `ErrCode`, where the struct has one.
    fn err_code(&self) -> Option<i64> {
        None
    }
    /// `ErrCodeExt`, where the struct has one.
    fn err_code_ext(&self) -> Option<&str> {
        None
    }
    /// `Message`, where the struct has one.
    fn message(&self) -> Option<&str> {
        None
    }
}

macro_rules! catalog {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal $(| $alias:literal)* => [$($key:literal),+] : $ty:ty
    ),* $(,)?) => {
        /// Every v3 event type vodhook knows (`docs/vod-protocol.md` §3.1).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// All known kinds, in catalog order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            /// The `EventType` value VOD sends.
            pub fn name(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The top-level key(s) that carry this kind's payload in a v3 body.
            pub fn payload_keys(self) -> &'static [&'static str] {
                match self {
                    $(EventKind::$variant => &[$($key),+],)*
                }
            }

            /// The kind named by an `EventType` value (or a known alias of it).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name $(| $alias)* => Some(EventKind::$variant),)*
                    _ => None,
                }
            }

            /// The kind whose payload travels under `key`.
            pub fn from_payload_key(key: &str) -> Option<Self> {
                match key {
                    $($($key)|+ => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }

        /// A typed v3 payload, one variant per [`EventKind`].
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        #[allow(missing_docs)]
        pub enum V3Payload {
            $($variant(Box<$ty>),)*
        }

        impl V3Payload {
            /// The payload of `kind`; `None` for an explicit `null`.
            fn deserialize_as<'de, D: Deserializer<'de>>(
                kind: EventKind,
                deserializer: D,
            ) -> Result<Option<Self>, D::Error> {
                Ok(match kind {
                    $(EventKind::$variant => {
                        Option::<Box<$ty>>::deserialize(deserializer)?.map(V3Payload::$variant)
                    })*
                })
            }

            /// The ids, status and error fields every payload shares.
            pub fn common(&self) -> &dyn TaskCommon {
                match self {
                    $(V3Payload::$variant(payload) => &**payload,)*
                }
            }
        }
    };
}

catalog! {
    /// Upload finished (`UploadMediaCompleteEventSwitch`).
    NewFileUpload = "NewFileUpload" => ["FileUploadEvent"]: FileUploadTask,
    /// A task flow (procedure) changed state.
    ProcedureStateChanged = "ProcedureStateChanged" => ["ProcedureStateChangeEvent"]: ProcedureTask,
    /// Files deleted (`DeleteMediaCompleteEventSwitch`).
    FileDeleted = "FileDeleted" => ["FileDeleteEvent"]: FileDeleteTask,
    /// Pull upload (upload from URL) finished.
    PullComplete = "PullComplete" => ["PullCompleteEvent"]: PullUploadTask,
    /// Video editing finished.
    EditMediaComplete = "EditMediaComplete" => ["EditMediaCompleteEvent", "EditMediaComplete"]: EditMediaTask,
    /// Video splitting finished.
    SplitMediaComplete = "SplitMediaComplete" => ["SplitMediaCompleteEvent"]: SplitMediaTask,
    /// Media composition finished.
    ComposeMediaComplete = "ComposeMediaComplete" => ["ComposeMediaCompleteEvent"]: ComposeMediaTask,
    /// WeChat publishing finished (the docs use both payload keys).
    WechatPublishComplete = "WechatPublishComplete" => ["WechatPublishCompleteEvent", "WechatPublishComplete"]: WechatPublishTask,
    /// WeChat mini program publishing finished.
    WechatMiniProgramPublishComplete = "WechatMiniProgramPublishComplete" => ["WechatMiniProgramPublishCompleteEvent", "WechatMiniProgramPublishEvent"]: WechatMiniProgramPublishTask,
    /// Watermark removal finished (no `Complete` suffix on the type).
    RemoveWatermark = "RemoveWatermark" | "RemoveWatermarkComplete" => ["RemoveWatermarkCompleteEvent"]: RemoveWatermarkTask,
    /// Restoring an archived file finished.
    RestoreMediaComplete = "RestoreMediaComplete" => ["RestoreMediaCompleteEvent"]: RestoreMediaTask,
    /// Audio/video quality rebuild finished (deprecated by VOD).
    RebuildMediaComplete = "RebuildMediaComplete" => ["RebuildMediaCompleteEvent"]: RebuildMediaTask,
    /// Audio/video review finished.
    ReviewAudioVideoComplete = "ReviewAudioVideoComplete" => ["ReviewAudioVideoCompleteEvent"]: ReviewAudioVideoTask,
    /// Trace watermark extraction finished.
    ExtractTraceWatermarkComplete = "ExtractTraceWatermarkComplete" => ["ExtractTraceWatermarkCompleteEvent"]: ExtractTraceWatermarkTask,
    /// Copyright watermark extraction finished.
    ExtractCopyRightWatermarkComplete = "ExtractCopyRightWatermarkComplete" => ["ExtractCopyRightWatermarkCompleteEvent"]: ExtractCopyRightWatermarkTask,
    /// File attribute (e.g. MD5) task finished.
    DescribeFileAttributesComplete = "DescribeFileAttributesComplete" => ["DescribeFileAttributesCompleteEvent"]: DescribeFileAttributesTask,
    /// Quality inspection finished.
    QualityInspectComplete = "QualityInspectComplete" => ["QualityInspectCompleteEvent"]: QualityInspectTask,
    /// Quality enhancement finished.
    QualityEnhanceComplete = "QualityEnhanceComplete" => ["QualityEnhanceCompleteEvent"]: QualityEnhanceTask,
    /// Clip persistence finished (`PersistenceCompleteEventSwitch`).
    PersistenceComplete = "PersistenceComplete" => ["PersistenceCompleteEvent"]: PersistenceCompleteTask,
    /// Complex adaptive streaming finished.
    ComplexAdaptiveDynamicStreamingComplete = "ComplexAdaptiveDynamicStreamingComplete" => ["ComplexAdaptiveDynamicStreamingCompleteEvent"]: ComplexAdaptiveDynamicStreamingTask,
    /// Processing through MPS finished.
    ProcessMediaByMPSComplete = "ProcessMediaByMPSComplete" => ["ProcessMediaByMPSCompleteEvent"]: ProcessMediaByMPS,
    /// AIGC image generation finished.
    AigcImageTaskComplete = "AigcImageTaskComplete" | "AigcImageComplete" => ["AigcImageCompleteEvent"]: AigcImageTask,
    /// AIGC video generation finished.
    AigcVideoTaskComplete = "AigcVideoTaskComplete" | "AigcVideoComplete" => ["AigcVideoCompleteEvent"]: AigcVideoTask,
    /// Asynchronous AIGC face information finished.
    DescribeAigcFaceInfoAsyncComplete = "DescribeAigcFaceInfoAsyncComplete" => ["DescribeAigcFaceInfoAsyncCompleteEvent"]: DescribeAigcFaceInfoAsyncTask,
    /// Media cast (re-stream) status changed.
    MediaCastStatusChanged = "MediaCastStatusChanged" => ["MediaCastStatusChangedEvent"]: MediaCastEvent,
    /// Blind watermark extraction finished (payload key has no `Event` suffix).
    ExtractBlindWatermarkComplete = "ExtractBlindWatermarkComplete" => ["ExtractBlindWatermarkComplete", "ExtractBlindWatermarkCompleteEvent"]: ExtractBlindWatermarkTask,
    /// Scene AIGC image finished (the `EventType` value is unconfirmed; both spellings accepted).
    SceneAigcImageComplete = "SceneAigcImageCompleteEvent" | "SceneAigcImageComplete" => ["SceneAigcImageCompleteEvent"]: SceneAigcImageTask,
    /// Asynchronous image processing finished (`EventType` value unconfirmed).
    ProcessImageAsyncComplete = "ProcessImageAsyncCompleteEvent" | "ProcessImageAsyncComplete" => ["ProcessImageAsyncCompleteEvent"]: ProcessImageAsyncTask,
    /// AIGC custom element created (`EventType` value unconfirmed).
    CreateAigcAdvancedCustomElementComplete = "CreateAigcAdvancedCustomElementCompleteEvent" | "CreateAigcAdvancedCustomElementComplete" => ["CreateAigcAdvancedCustomElementCompleteEvent"]: CreateAigcAdvancedCustomElementTask,
    /// AIGC custom voice created (`EventType` value unconfirmed).
    CreateAigcCustomVoiceComplete = "CreateAigcCustomVoiceCompleteEvent" | "CreateAigcCustomVoiceComplete" => ["CreateAigcCustomVoiceCompleteEvent"]: CreateAigcCustomVoiceTask,
    /// Bitrate reduction finished (VOD marks it no longer valid).
    ReduceMediaBitrateComplete = "ReduceMediaBitrateComplete" => ["ReduceMediaBitrateCompleteEvent"]: ReduceMediaBitrateTask,
    /// 2017-compatible: transcoding finished.
    TranscodeComplete = "TranscodeComplete" => ["TranscodeCompleteEvent"]: TranscodeTask2017,
    /// 2017-compatible: concatenation finished.
    ConcatComplete = "ConcatComplete" => ["ConcatCompleteEvent"]: ConcatTask2017,
    /// 2017-compatible: clipping finished.
    ClipComplete = "ClipComplete" => ["ClipCompleteEvent"]: ClipTask2017,
    /// 2017-compatible: image sprite finished.
    CreateImageSpriteComplete = "CreateImageSpriteComplete" => ["CreateImageSpriteCompleteEvent"]: CreateImageSpriteTask2017,
    /// 2017-compatible: snapshots at time offsets finished (key differs from the type).
    CreateSnapshotByTimeOffsetComplete = "CreateSnapshotByTimeOffsetComplete" => ["SnapshotByTimeOffsetCompleteEvent", "CreateSnapshotByTimeOffsetCompleteEvent"]: SnapshotByTimeOffsetTask2017,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The wire format of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The 2018-07-17 API format: `EventType` + `<X>Event`.
    V3,
    /// The legacy 2017 format: `version` + `eventType` + `data`.
    V2017,
}

impl Format {
    /// `"v3"` or `"v2017"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::V3 => "v3",
            Format::V2017 => "v2017",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed legacy (v2017) payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(missing_docs)]
pub enum LegacyPayload {
    NewFileUpload(Box<legacy::NewFileUpload>),
    PullComplete(Box<legacy::PullComplete>),
    FileDeleted(Box<legacy::FileDeleted>),
    ProcedureStateChanged(Box<legacy::ProcedureStateChanged>),
    TranscodeComplete(Box<legacy::TranscodeComplete>),
    CreateSnapshotByTimeOffsetComplete(Box<legacy::CreateSnapshotByTimeOffsetComplete>),
    CreateImageSpriteComplete(Box<legacy::CreateImageSpriteComplete>),
    ClipComplete(Box<legacy::ClipComplete>),
    ConcatComplete(Box<legacy::ConcatComplete>),
}

impl LegacyPayload {
    /// The legacy event types, by their `eventType` value.
    pub const TYPES: [EventKind; 9] = [
        EventKind::NewFileUpload,
        EventKind::PullComplete,
        EventKind::FileDeleted,
        EventKind::ProcedureStateChanged,
        EventKind::TranscodeComplete,
        EventKind::CreateSnapshotByTimeOffsetComplete,
        EventKind::CreateImageSpriteComplete,
        EventKind::ClipComplete,
        EventKind::ConcatComplete,
    ];

    /// The `data` of a legacy `kind`; `None` for an explicit `null`.
    fn deserialize_as<'de, D: Deserializer<'de>>(
        kind: EventKind,
        deserializer: D,
    ) -> Result<Option<Self>, D::Error> {
        fn typed<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
            deserializer: D,
            variant: fn(Box<T>) -> LegacyPayload,
        ) -> Result<Option<LegacyPayload>, D::Error> {
            Ok(Option::<Box<T>>::deserialize(deserializer)?.map(variant))
        }
        match kind {
            EventKind::NewFileUpload => typed(deserializer, LegacyPayload::NewFileUpload),
            EventKind::PullComplete => typed(deserializer, LegacyPayload::PullComplete),
            EventKind::FileDeleted => typed(deserializer, LegacyPayload::FileDeleted),
            EventKind::ProcedureStateChanged => {
                typed(deserializer, LegacyPayload::ProcedureStateChanged)
            }
            EventKind::TranscodeComplete => typed(deserializer, LegacyPayload::TranscodeComplete),
            EventKind::CreateSnapshotByTimeOffsetComplete => typed(
                deserializer,
                LegacyPayload::CreateSnapshotByTimeOffsetComplete,
            ),
            EventKind::CreateImageSpriteComplete => {
                typed(deserializer, LegacyPayload::CreateImageSpriteComplete)
            }
            EventKind::ClipComplete => typed(deserializer, LegacyPayload::ClipComplete),
            EventKind::ConcatComplete => typed(deserializer, LegacyPayload::ConcatComplete),
            other => Err(serde::de::Error::custom(format_args!(
                "{other} does not exist in the legacy format"
            ))),
        }
    }
}

/// What the typed parse produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// A known v3 event type, typed.
    V3(V3Payload),
    /// A known legacy event type, typed.
    Legacy(LegacyPayload),
    /// An unknown event type: the whole body as raw JSON.
    Unknown(Value),
    /// A known type whose payload was missing or did not fit its struct;
    /// [`Event::parse_error`] says why.
    Invalid,
}

/// Fields that belong to the transport, not to the event: excluded when two
/// deliveries of the same event are compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    /// `EventHandle`: present on events pulled from the reliable queue.
    pub event_handle: Option<String>,
    /// `Sign`: the callback signature, when a `SignKey` is configured.
    pub sign: Option<String>,
    /// `T`: the signature's expiry (UNIX seconds), as sent.
    pub t: Option<String>,
}

impl Transport {
    /// The top-level keys that carry transport fields.
    pub const KEYS: [&'static str; 3] = ["EventHandle", "Sign", "T"];
}

/// One VOD event notification, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// v3 or legacy v2017.
    pub format: Format,
    /// The event type as sent (or inferred); `"Unknown"` when the body names none.
    pub event_type: String,
    /// The catalog entry, `None` for an unknown type.
    pub kind: Option<EventKind>,
    /// True when the v3 body had no `EventType` and it was inferred from the payload key.
    pub inferred_type: bool,
    /// The typed payload (or raw JSON for unknown types).
    pub payload: Payload,
    /// Why the typed parse failed, for a known type that did not fit.
    pub parse_error: Option<String>,
    /// The media file this event is about, if any.
    pub file_id: Option<String>,
    /// Every media file the event names: `file_id` first when there is
    /// one, then the others (a `ConcatComplete`'s sources, a
    /// `FileDeleted`'s set, a clip's source, …) sorted, without repeats.
    /// The store finds the event under each of them.
    pub file_ids: Vec<String>,
    /// The task this event reports on, if any.
    pub task_id: Option<String>,
    /// The reported status (`PROCESSING`, `FINISH`, `SUCCESS`, `FAIL`, …), if any.
    pub status: Option<String>,
    /// Transport fields, kept apart from the event.
    pub transport: Transport,
}

/// Why a body is not an event at all (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Zero bytes, or only white space.
    #[error("empty body: expected a JSON object")]
    Empty,
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("body is a JSON {0}, expected a JSON object")]
    NotAnObject(&'static str),
}

impl Event {
    /// Parses a callback body (or one PullEvents `EventSet` element).
    ///
    /// # Errors
    ///
    /// Only when `body` is not a JSON object; see [`BodyError`]. A JSON
    /// object always becomes an `Event`.
    pub fn parse(body: &[u8]) -> Result<Event, BodyError> {
        let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Err(BodyError::Empty);
        };
        // Usually `EventType` comes before the payload and the payload fits:
        // then one pass over the bytes gives the typed event. Anything else
        // (a payload that does not fit, a body that is not an object) takes
        // the second, careful pass that reads the payload as raw JSON first.
        if let Ok(envelope) = Envelope::read(body, true) {
            return Ok(envelope.into_event(body).with_file_ids());
        }
        let envelope = Envelope::read(body, false).map_err(|error| {
            if error.classify() == serde_json::error::Category::Data {
                BodyError::NotAnObject(json_kind(*first))
            } else {
                BodyError::InvalidJson(error.to_string())
            }
        })?;
        Ok(envelope.into_event(body).with_file_ids())
    }

    /// Fills [`Event::file_ids`]: the ids found so far (from a payload that
    /// did not fit its struct) and those the typed payload names.
    fn with_file_ids(mut self) -> Event {
        let mut named = std::mem::take(&mut self.file_ids);
        match &self.payload {
            Payload::V3(payload) => files::collect(payload, &mut named),
            Payload::Legacy(payload) => files::collect(payload, &mut named),
            Payload::Unknown(value) => files::collect(value, &mut named),
            Payload::Invalid => {}
        }
        named.retain(|id| Some(id) != self.file_id.as_ref());
        named.sort_unstable();
        named.dedup();
        if let Some(main) = &self.file_id {
            named.insert(0, main.clone());
        }
        self.file_ids = named;
        self
    }

    /// The `EventType` as sent, with the format for legacy bodies (for display).
    pub fn type_label(&self) -> Cow<'_, str> {
        match self.format {
            Format::V3 => Cow::Borrowed(&self.event_type),
            Format::V2017 => Cow::Owned(format!("{} (v2017)", self.event_type)),
        }
    }
}

fn json_kind(first: u8) -> &'static str {
    match first {
        b'[' => "array",
        b'"' => "string",
        b't' | b'f' => "boolean",
        b'n' => "null",
        _ => "number",
    }
}

/// The top-level object, values borrowed as raw JSON, and the payload
/// already typed when the single pass could do it.
struct Envelope<'a> {
    event_type: Option<&'a RawValue>,
    transport: [Option<&'a RawValue>; 3],
    legacy_type: Option<&'a RawValue>,
    legacy_data: Option<&'a RawValue>,
    /// Other non-null top-level values: candidate payloads.
    others: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The v3 payload, typed during the single pass.
    typed_v3: Option<(EventKind, V3Payload)>,
    /// The legacy `data`, typed during the single pass.
    typed_legacy: Option<(EventKind, LegacyPayload)>,
}

impl<'a> Envelope<'a> {
    /// Reads the top-level object; with `typed`, payloads that follow their
    /// type name are parsed into their structs on the way (and an error in
    /// one fails the whole read).
    fn read(body: &'a [u8], typed: bool) -> Result<Envelope<'a>, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let envelope = deserializer.deserialize_map(EnvelopeVisitor { typed })?;
        deserializer.end()?;
        Ok(envelope)
    }
}

struct EnvelopeVisitor {
    typed: bool,
}

/// Deserializes a v3 payload or legacy `data` of a known kind.
struct PayloadSeed {
    kind: EventKind,
    legacy: bool,
}

enum Typed {
    V3(V3Payload),
    Legacy(LegacyPayload),
}

impl<'de> serde::de::DeserializeSeed<'de> for PayloadSeed {
    type Value = Option<Typed>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Typed>, D::Error> {
        if self.legacy {
            Ok(LegacyPayload::deserialize_as(self.kind, deserializer)?.map(Typed::Legacy))
        } else {
            Ok(V3Payload::deserialize_as(self.kind, deserializer)?.map(Typed::V3))
        }
    }
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let mut envelope = Envelope {
            event_type: None,
            transport: [None; 3],
            legacy_type: None,
            legacy_data: None,
            others: Vec::new(),
            typed_v3: None,
            typed_legacy: None,
        };
        let mut v3_kind: Option<EventKind> = None;
        let mut legacy_kind: Option<EventKind> = None;
        while let Some(Key(key)) = map.next_key()? {
            if self.typed {
                let seed = match (&*key, v3_kind, legacy_kind) {
                    (key, Some(kind), _)
                        if envelope.typed_v3.is_none() && kind.payload_keys().contains(&key) =>
                    {
                        Some(PayloadSeed {
                            kind,
                            legacy: false,
                        })
                    }
                    ("data", _, Some(kind)) if envelope.typed_legacy.is_none() => {
                        Some(PayloadSeed { kind, legacy: true })
                    }
                    _ => None,
                };
                if let Some(seed) = seed {
                    let kind = seed.kind;
                    match map.next_value_seed(seed)? {
                        Some(Typed::V3(payload)) => envelope.typed_v3 = Some((kind, payload)),
                        Some(Typed::Legacy(payload)) => {
                            envelope.typed_legacy = Some((kind, payload))
                        }
                        None => {}
                    }
                    continue;
                }
            }
            let value: &'de RawValue = map.next_value()?;
            if value.get() == "null" {
                continue;
            }
            match &*key {
                "EventType" => {
                    envelope.event_type = Some(value);
                    v3_kind = scalar_text(value).and_then(|name| EventKind::from_name(&name));
                }
                "EventHandle" => envelope.transport[0] = Some(value),
                "Sign" => envelope.transport[1] = Some(value),
                "T" => envelope.transport[2] = Some(value),
                "eventType" => {
                    envelope.legacy_type = Some(value);
                    legacy_kind = scalar_text(value)
                        .and_then(|name| EventKind::from_name(&name))
                        .filter(|kind| LegacyPayload::TYPES.contains(kind));
                }
                "data" => envelope.legacy_data = Some(value),
                _ => envelope.others.push((key, value)),
            }
        }
        Ok(envelope)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A scalar raw value as text: strings unquoted, numbers and booleans as
/// written; objects and arrays are not scalars.
pub(crate) fn scalar_text(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok(),
        Some(b'{' | b'[') | None => None,
        Some(_) => Some(text.to_owned()),
    }
}

impl Envelope<'_> {
    fn into_event(self, body: &[u8]) -> Event {
        let [event_handle, sign, t] = self.transport.map(|raw| raw.and_then(scalar_text));
        let transport = Transport {
            event_handle,
            sign,
            t,
        };
        if self.event_type.is_none() && self.legacy_type.is_some() {
            return self.into_legacy(transport);
        }
        self.into_v3(transport, body)
    }

    fn into_v3(self, transport: Transport, body: &[u8]) -> Event {
        let mut event = Event {
            format: Format::V3,
            event_type: String::new(),
            kind: None,
            inferred_type: false,
            payload: Payload::Invalid,
            parse_error: None,
            file_id: None,
            file_ids: Vec::new(),
            task_id: None,
            status: None,
            transport,
        };
        let named = self.event_type.map(scalar_text);
        let kind = match named {
            Some(Some(name)) => {
                let kind = EventKind::from_name(&name);
                event.event_type = name;
                kind
            }
            Some(None) => {
                event.event_type = "Unknown".to_owned();
                event.parse_error = Some("EventType is not a string".to_owned());
                None
            }
            None => {
                let mut candidates = self
                    .others
                    .iter()
                    .filter_map(|(key, _)| EventKind::from_payload_key(key));
                match (candidates.next(), candidates.next()) {
                    (Some(kind), None) => {
                        event.event_type = kind.name().to_owned();
                        event.inferred_type = true;
                        Some(kind)
                    }
                    (Some(_), Some(_)) => {
                        event.event_type = "Unknown".to_owned();
                        event.parse_error =
                            Some("no EventType and more than one payload key".to_owned());
                        None
                    }
                    (None, _) => {
                        event.event_type = "Unknown".to_owned();
                        event.parse_error =
                            Some("no EventType and no known payload key".to_owned());
                        None
                    }
                }
            }
        };
        let Some(kind) = kind else {
            // Unknown type: the whole body, raw. It parsed as an object once
            // already, so this cannot fail; fall back to Invalid all the same.
            event.payload = serde_json::from_slice(body).map_or(Payload::Invalid, Payload::Unknown);
            return event;
        };
        event.kind = Some(kind);
        if let Some((typed_kind, payload)) = self.typed_v3 {
            if typed_kind == kind {
                event.set_ids(v3_ids(&payload));
                event.payload = Payload::V3(payload);
                return event;
            }
        }
        let keys = kind.payload_keys();
        let raw = self
            .others
            .iter()
            .find(|(key, _)| keys.contains(&&**key))
            .map(|(_, raw)| *raw);
        let Some(raw) = raw else {
            event.parse_error = Some(format!("payload {} is missing or null", keys[0]));
            return event;
        };
        let parsed =
            V3Payload::deserialize_as(kind, &mut serde_json::Deserializer::from_str(raw.get()));
        match parsed {
            Ok(Some(payload)) => {
                event.set_ids(v3_ids(&payload));
                event.payload = Payload::V3(payload);
            }
            Ok(None) => unreachable_null(&mut event, keys[0]),
            Err(error) => {
                event.parse_error = Some(format!("{}: {error}", keys[0]));
                fill_ids_leniently(&mut event, raw);
            }
        }
        event
    }

    fn into_legacy(self, transport: Transport) -> Event {
        let name = self
            .legacy_type
            .and_then(scalar_text)
            .unwrap_or_else(|| "Unknown".to_owned());
        let mut event = Event {
            format: Format::V2017,
            kind: EventKind::from_name(&name).filter(|kind| LegacyPayload::TYPES.contains(kind)),
            event_type: name,
            inferred_type: false,
            payload: Payload::Invalid,
            parse_error: None,
            file_id: None,
            file_ids: Vec::new(),
            task_id: None,
            status: None,
            transport,
        };
        let Some(kind) = event.kind else {
            let mut object = serde_json::Map::new();
            if let Some(data) = self.legacy_data {
                object.insert(
                    "data".to_owned(),
                    serde_json::from_str(data.get()).unwrap_or(Value::Null),
                );
            }
            event.payload = Payload::Unknown(Value::Object(object));
            return event;
        };
        if let Some((_, payload)) = self.typed_legacy {
            event.set_ids(legacy_ids(&payload));
            event.payload = Payload::Legacy(payload);
            return event;
        }
        let Some(data) = self.legacy_data else {
            event.parse_error = Some("data is missing or null".to_owned());
            return event;
        };
        let parsed = LegacyPayload::deserialize_as(
            kind,
            &mut serde_json::Deserializer::from_str(data.get()),
        );
        match parsed {
            Ok(Some(payload)) => {
                event.set_ids(legacy_ids(&payload));
                event.payload = Payload::Legacy(payload);
            }
            Ok(None) => unreachable_null(&mut event, "data"),
            Err(error) => {
                event.parse_error = Some(format!("data: {error}"));
                fill_ids_leniently(&mut event, data);
            }
        }
        event
    }
}

/// Null values are dropped while reading the envelope, so a raw payload is
/// never `null`; should that change, the event says so instead of panicking.
fn unreachable_null(event: &mut Event, key: &str) {
    event.parse_error = Some(format!("payload {key} is null"));
}

impl Event {
    fn set_ids(&mut self, ids: Ids) {
        self.file_id = ids.file_id;
        self.task_id = ids.task_id;
        self.status = ids.status;
    }
}

/// When the typed parse fails, the ids still matter for finding the event
/// later: read the usual id fields leniently from the payload.
fn fill_ids_leniently(event: &mut Event, raw: &RawValue) {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Ids {
        #[serde(alias = "fileId", deserialize_with = "lenient")]
        #[serde(rename = "FileId")]
        file_id: Option<String>,
        #[serde(alias = "vodTaskId", deserialize_with = "lenient")]
        #[serde(rename = "TaskId")]
        task_id: Option<String>,
        #[serde(alias = "status", deserialize_with = "lenient")]
        #[serde(rename = "Status")]
        status: Option<String>,
    }
    fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let raw: Option<&'de RawValue> = Option::deserialize(d)?;
        Ok(raw.and_then(|raw| de::scalar_string::<D::Error>(raw.get()).ok()))
    }
    if let Ok(ids) = serde_json::from_str::<Ids>(raw.get()) {
        event.file_id = ids.file_id;
        event.task_id = ids.task_id;
        event.status = ids.status;
    }
    // The files it names, from the raw JSON (an integer id beyond 64 bits
    // is lost there; this path is for payloads that do not fit anyway).
    if let Ok(value) = serde_json::from_str::<Value>(raw.get()) {
        files::collect(&value, &mut event.file_ids);
    }
}

struct Ids {
    file_id: Option<String>,
    task_id: Option<String>,
    status: Option<String>,
}

/// An owned copy of a text that is present and not empty.
pub(crate) fn nonempty(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_owned)
}

/// `SUCCESS`/`FAIL` from a 2017-style error code (0 = success).
fn status_from_code(code: Option<i64>) -> Option<String> {
    code.map(|code| if code == 0 { "SUCCESS" } else { "FAIL" }.to_owned())
}

/// `SUCCESS` when every code is 0, `FAIL` when any is not, `None` when none is known.
fn status_from_codes(codes: impl Iterator<Item = Option<i64>>) -> Option<String> {
    let mut seen = None;
    for code in codes.flatten() {
        if code != 0 {
            return status_from_code(Some(code));
        }
        seen = Some(0);
    }
    status_from_code(seen)
}

fn v3_ids(payload: &V3Payload) -> Ids {
    let common = payload.common();
    let mut ids = Ids {
        file_id: nonempty(common.file_id()),
        task_id: nonempty(common.task_id()),
        status: nonempty(common.status()),
    };
    match payload {
        V3Payload::NewFileUpload(task) => ids.task_id = nonempty(task.procedure_task_id.as_deref()),
        V3Payload::FileDeleted(task) => {
            let listed = task.file_id_set.iter().flatten().map(String::as_str);
            let detailed = task
                .file_delete_result_info
                .iter()
                .flatten()
                .filter_map(|item| item.file_id.as_deref());
            ids.file_id = nonempty(listed.chain(detailed).next());
        }
        V3Payload::EditMediaComplete(task) => {
            ids.file_id = nonempty(task.output.as_ref().and_then(|o| o.file_id.as_deref()));
        }
        V3Payload::ComposeMediaComplete(task) => {
            ids.file_id = nonempty(task.output.as_ref().and_then(|o| o.file_id.as_deref()));
        }
        V3Payload::SplitMediaComplete(task) => {
            let first = task.file_info_set.iter().flatten().next();
            ids.file_id = nonempty(
                first
                    .and_then(|s| s.input.as_ref())
                    .and_then(|i| i.file_id.as_deref()),
            );
        }
        V3Payload::ReviewAudioVideoComplete(task) => {
            ids.file_id = nonempty(task.input.as_ref().and_then(|i| i.file_id.as_deref()));
        }
        V3Payload::RemoveWatermark(task) => {
            ids.file_id = nonempty(task.input.as_ref().and_then(|i| i.file_id.as_deref()));
        }
        V3Payload::MediaCastStatusChanged(event) => {
            ids.task_id = nonempty(event.cast_id.as_deref())
        }
        V3Payload::TranscodeComplete(task) => ids.status = status_from_code(task.err_code),
        V3Payload::CreateImageSpriteComplete(task) => ids.status = status_from_code(task.err_code),
        V3Payload::ClipComplete(task) => {
            let output = task.file_info.as_deref();
            ids.file_id = nonempty(
                output
                    .and_then(|f| f.file_id.as_deref())
                    .or(task.src_file_id.as_deref()),
            );
            ids.status = status_from_code(output.and_then(|f| f.err_code));
        }
        V3Payload::ConcatComplete(task) => {
            ids.status = status_from_codes(task.file_info_set.iter().flatten().map(|f| f.err_code));
        }
        V3Payload::CreateSnapshotByTimeOffsetComplete(task) => {
            ids.status =
                status_from_codes(task.snapshot_info_set.iter().flatten().map(|s| s.err_code));
        }
        _ => {}
    }
    ids
}

fn legacy_ids(payload: &LegacyPayload) -> Ids {
    let (file_id, task_id, status) = match payload {
        LegacyPayload::NewFileUpload(d) => (
            nonempty(d.file_id.as_deref()),
            nonempty(d.procedure_task_id.as_deref().or(d.vod_task_id.as_deref())),
            None,
        ),
        LegacyPayload::PullComplete(d) => (
            nonempty(d.file_id.as_deref()),
            nonempty(d.vod_task_id.as_deref()),
            status_from_code(d.status),
        ),
        LegacyPayload::FileDeleted(d) => (
            nonempty(
                d.file_info
                    .iter()
                    .flatten()
                    .find_map(|f| f.file_id.as_deref()),
            ),
            None,
            status_from_code(d.status),
        ),
        LegacyPayload::ProcedureStateChanged(d) => (
            nonempty(d.file_id.as_deref()),
            nonempty(d.vod_task_id.as_deref()),
            nonempty(d.status.as_deref()),
        ),
        LegacyPayload::TranscodeComplete(d) => (
            nonempty(d.file_id.as_deref()),
            nonempty(d.vod_task_id.as_deref()),
            status_from_code(d.status),
        ),
        LegacyPayload::CreateSnapshotByTimeOffsetComplete(d) => (
            nonempty(d.file_id.as_deref()),
            nonempty(d.vod_task_id.as_deref()),
            status_from_codes(d.pic_info.iter().flatten().map(|p| p.status)),
        ),
        LegacyPayload::CreateImageSpriteComplete(d) => (
            nonempty(d.file_id.as_deref()),
            nonempty(d.vod_task_id.as_deref()),
            status_from_code(d.status),
        ),
        LegacyPayload::ClipComplete(d) => {
            let output = d.file_info.as_ref();
            (
                nonempty(
                    output
                        .and_then(|f| f.file_id.as_deref())
                        .or(d.src_file_id.as_deref()),
                ),
                nonempty(d.vod_task_id.as_deref()),
                status_from_code(output.and_then(|f| f.status)),
            )
        }
        LegacyPayload::ConcatComplete(d) => (
            None,
            nonempty(d.vod_task_id.as_deref()),
            status_from_codes(d.file_info.iter().flatten().map(|f| f.status)),
        ),
    };
    Ids {
        file_id,
        task_id,
        status,
    }
}

impl MediaProcessTaskResult {
    /// The output that matters, by the item's type: definition, URL, cover,
    /// snapshot URLs… (null members dropped). The log line and the derived
    /// task state both show this.
    pub fn output_summary(&self) -> Value {
        // The summary of a task whose input and output both name the
        // definition (the input's wins), with the output's `members`.
        macro_rules! summary {
            ($task:expr, |$out:ident| {$($key:literal: $value:expr),* $(,)?}) => {
                if let Some(task) = $task.as_deref() {
                    let $out = task.output.as_deref();
                    let definition = task.input.as_deref().and_then(|i| i.definition).map(Value::from);
                    return compact(json!({
                        "definition": definition.or($out.and_then(|o| o.definition).map(Value::from)),
                        $($key: $value),*
                    }));
                }
            };
        }
        summary!(self.transcode_task, |out| {
            "url": out.and_then(|o| o.url.as_deref()),
            "file_id": out.and_then(|o| o.file_id.as_deref()),
        });
        if let Some(t) = self.cover_by_snapshot_task.as_deref() {
            return compact(json!({
                "definition": t.input.as_deref().and_then(|i| i.definition),
                "cover_url": t.output.as_deref().and_then(|o| o.cover_url.as_deref()),
            }));
        }
        summary!(self.snapshot_by_time_offset_task, |out| {
            "urls": out
                .into_iter()
                .flat_map(|o| o.pic_info_set.iter().flatten())
                .filter_map(|p| p.url.as_deref())
                .collect::<Vec<&str>>(),
        });
        summary!(self.sample_snapshot_task, |out| {
            "urls": out.and_then(|o| o.image_url_set.clone()),
        });
        summary!(self.image_sprite_task, |out| {
            "urls": out.and_then(|o| o.image_url_set.clone()),
            "webvtt_url": out.and_then(|o| o.web_vtt_url.as_deref()),
        });
        summary!(self.animated_graphic_task, |out| {
            "url": out.and_then(|o| o.url.as_deref()),
        });
        summary!(self.adaptive_dynamic_streaming_task, |out| {
            "package": out.and_then(|o| o.package.as_deref()),
            "url": out.and_then(|o| o.url.as_deref()),
        });
        Value::Null
    }
}

/// Drops null members.
pub(crate) fn compact(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    value
}

/// Is this a VOD placeholder time such as `0000-00-00T00:00:00Z` (or empty)?
pub fn is_placeholder_time(time: &str) -> bool {
    time.is_empty() || time.starts_with("0000-00-00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_before_event_type_gives_the_same_event() {
        let usual = br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["1","2"]},"EventHandle":"h"}"#;
        let reversed = br#"{"EventHandle":"h","FileDeleteEvent":{"FileIdSet":["1","2"]},"EventType":"FileDeleted"}"#;
        let usual = Event::parse(usual).unwrap();
        assert_eq!(usual.parse_error, None);
        assert_eq!(usual, Event::parse(reversed).unwrap());
    }

    #[test]
    fn a_misfit_payload_takes_the_careful_pass_and_keeps_the_ids() {
        let body = br#"{"EventType":"PullComplete","PullCompleteEvent":{"TaskId":"t","FileId":9,"ErrCode":[1]}}"#;
        let event = Event::parse(body).unwrap();
        assert_eq!(event.payload, Payload::Invalid);
        assert!(event
            .parse_error
            .as_deref()
            .unwrap()
            .starts_with("PullCompleteEvent:"));
        assert_eq!(
            (event.task_id.as_deref(), event.file_id.as_deref()),
            (Some("t"), Some("9"))
        );
    }

    #[test]
    fn bodies_that_are_not_objects_are_classified() {
        assert_eq!(Event::parse(b""), Err(BodyError::Empty));
        assert_eq!(Event::parse(b" \r\n\t"), Err(BodyError::Empty));
        assert_eq!(Event::parse(b"[]"), Err(BodyError::NotAnObject("array")));
        assert_eq!(
            Event::parse(b" true"),
            Err(BodyError::NotAnObject("boolean"))
        );
        assert_eq!(Event::parse(b"-1"), Err(BodyError::NotAnObject("number")));
        assert!(matches!(
            Event::parse(b"{\"a\":}"),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(
            Event::parse(b"{}{}"),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(
            Event::parse(b"\xff"),
            Err(BodyError::InvalidJson(_))
        ));
    }

    #[test]
    fn keys_with_escapes_are_read() {
        let body = br#"{"Event\u0054ype":"FileDeleted","FileDeleteEvent":{"FileIdSet":["1"]}}"#;
        let event = Event::parse(body).unwrap();
        assert_eq!(event.kind, Some(EventKind::FileDeleted));
    }

    #[test]
    fn event_type_that_is_not_a_string_is_an_unknown_event() {
        let event = Event::parse(br#"{"EventType":{"x":1},"FileDeleteEvent":{"FileIdSet":["1"]}}"#)
            .unwrap();
        assert_eq!(event.kind, None);
        assert_eq!(
            event.parse_error.as_deref(),
            Some("EventType is not a string")
        );
        assert!(matches!(event.payload, Payload::Unknown(_)));
    }

    #[test]
    fn the_dedup_key_ignores_transport_fields_order_and_white_space() {
        let pushed = br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["1"]},"Sign":"abc","T":1}"#;
        let pulled = br#"{ "EventHandle": "h1", "FileDeleteEvent": { "FileIdSet": [ "1" ] }, "EventType": "FileDeleted" }"#;
        assert_eq!(dedup_key(pushed), dedup_key(pulled));
        let other = br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["2"]}}"#;
        assert_ne!(dedup_key(pushed), dedup_key(other));
    }

    #[test]
    fn status_of_2017_types_comes_from_their_error_codes() {
        assert_eq!(
            status_from_codes([Some(0), None, Some(0)].into_iter()).as_deref(),
            Some("SUCCESS")
        );
        assert_eq!(
            status_from_codes([Some(0), Some(70000)].into_iter()).as_deref(),
            Some("FAIL")
        );
        assert_eq!(status_from_codes([None].into_iter()), None);
    }
}
