#!/usr/bin/env python3
"""Generate src/events/model.rs from the field tables in docs/vod-protocol.md.

The tables (Appendices A-C) were extracted mechanically from the official Go
SDK (`tencentcloud/vod/v20180717/models.go`). Writing ~200 serde structs by
hand invites typos in field names, so the Rust model is generated from them
and committed. Re-run after updating the tables:

    python3 contrib/gen-v3-model.py > src/events/model.rs && cargo fmt

Typing policy (issue #2):
- roots in FULL and everything they reach: every field typed;
- AI review / analysis / recognition items: their sub-task results collapse
  into the generic `AiTaskResult` (Type/Status/ErrCode/Message typed, the
  input and output kept as raw JSON);
- the other roots in SHALLOW: scalar fields typed, nested structs raw JSON.
"""
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "vod-protocol.md"

FULL = [
    "FileUploadTask", "ProcedureTask", "FileDeleteTask", "PullUploadTask",
    "EditMediaTask", "SplitMediaTask", "ComposeMediaTask", "WechatPublishTask",
    "WechatMiniProgramPublishTask", "RestoreMediaTask", "ReviewAudioVideoTask",
    "RemoveWatermarkTask", "TranscodeTask2017", "ConcatTask2017",
    "ClipTask2017", "CreateImageSpriteTask2017", "SnapshotByTimeOffsetTask2017",
]
SHALLOW = [
    "RebuildMediaTask", "ExtractTraceWatermarkTask",
    "ExtractCopyRightWatermarkTask", "DescribeFileAttributesTask",
    "QualityInspectTask", "QualityEnhanceTask", "PersistenceCompleteTask",
    "ComplexAdaptiveDynamicStreamingTask", "ProcessMediaByMPS",
    "AigcImageTask", "AigcVideoTask", "DescribeAigcFaceInfoAsyncTask",
    "MediaCastEvent", "ExtractBlindWatermarkTask", "SceneAigcImageTask",
    "ProcessImageAsyncTask", "CreateAigcAdvancedCustomElementTask",
    "CreateAigcCustomVoiceTask", "ReduceMediaBitrateTask",
]
# The per-Type results of a task flow's MediaProcessResultSet: they share
# Status/ErrCode/ErrCodeExt/Message, exposed through TaskCommon.
MEDIA_RESULTS = [
    "MediaProcessTaskTranscodeResult", "MediaProcessTaskAnimatedGraphicResult",
    "MediaProcessTaskSnapshotByTimeOffsetResult", "MediaProcessTaskSampleSnapshotResult",
    "MediaProcessTaskImageSpriteResult", "MediaProcessTaskCoverBySnapshotResult",
    "MediaProcessTaskAdaptiveDynamicStreamingResult",
]
AI_WRAPPERS = {"AiContentReviewResult", "AiAnalysisResult", "AiRecognitionResult"}
SCALARS = {"string", "int64", "uint64", "float64", "bool"}


def parse_doc(text):
    structs = {}
    lines = text.splitlines()
    current = None
    for line in lines:
        m = re.match(r"^#### `(\w+)`\s+\(models\.go:(\d+)\)", line)
        if m:
            current = m.group(1)
            structs[current] = []
            continue
        if current:
            m = re.match(r"^\| `(\w+)` \| `([^`]+)` \|", line)
            if m:
                go = m.group(2).replace("*", "")
                structs[current].append((m.group(1), go))
                continue
            if line.startswith("## "):
                current = None
        m = re.match(r"^- `(\w+)` \(L(\d+)\): (.*)$", line)
        if m:
            fields = []
            for part in m.group(3).split(", "):
                name, _, go = part.partition(":")
                fields.append((name.strip(), go.strip()))
            structs[m.group(1)] = fields
    return structs


def elem(go):
    return go[2:] if go.startswith("[]") else go


def snake(name):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = s.lower()
    return "r#" + s if s in ("type", "match", "ref", "self", "box", "mod") else s


def closure(structs, roots):
    seen, todo = [], list(roots)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        if name in AI_WRAPPERS:
            continue
        for _, go in structs[name]:
            e = elem(go)
            if e not in SCALARS and e in structs and e not in seen:
                todo.append(e)
    return seen


def rust_type(go, mode, owner):
    is_vec = go.startswith("[]")
    e = elem(go)
    if e in SCALARS:
        base = {"string": "String", "int64": "i64", "uint64": "u64",
                "float64": "f64", "bool": "bool"}[e]
        helper = {"string": "string", "int64": "i64", "uint64": "u64",
                  "float64": "f64", "bool": "bool"}[e]
        if is_vec:
            return f"Option<Vec<{base}>>", f"de::{helper}_list"
        return f"Option<{base}>", f"de::{helper}"
    if mode == "shallow":
        return "Option<Value>", None
    if owner in AI_WRAPPERS:
        return "Option<Box<AiTaskResult>>", None
    if is_vec:
        return f"Option<Vec<{e}>>", "de::list"
    return f"Option<Box<{e}>>", None


AI_TASK_RESULT = """/// One AI review, analysis or recognition sub-task result: status and error
/// typed, input and output kept as raw JSON (their shapes vary by `Type`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct AiTaskResult {
    #[serde(rename = "Status", deserialize_with = "de::string", skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "ErrCodeExt", deserialize_with = "de::string", skip_serializing_if = "Option::is_none")]
    pub err_code_ext: Option<String>,
    #[serde(rename = "ErrCode", deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub err_code: Option<i64>,
    #[serde(rename = "Message", deserialize_with = "de::string", skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "Progress", deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub progress: Option<i64>,
    #[serde(rename = "Input", skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(rename = "Output", skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(rename = "BeginProcessTime", deserialize_with = "de::string", skip_serializing_if = "Option::is_none")]
    pub begin_process_time: Option<String>,
    #[serde(rename = "FinishTime", deserialize_with = "de::string", skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
}
"""

COMMON = [
    ("task_id", "TaskId", "string", "Option<&str>", "self.{f}.as_deref()"),
    ("file_id", "FileId", "string", "Option<&str>", "self.{f}.as_deref()"),
    ("status", "Status", "string", "Option<&str>", "self.{f}.as_deref()"),
    ("err_code", "ErrCode", "int64", "Option<i64>", "self.{f}"),
    ("err_code_ext", "ErrCodeExt", "string", "Option<&str>", "self.{f}.as_deref()"),
    ("message", "Message", "string", "Option<&str>", "self.{f}.as_deref()"),
]


def emit_common(w, name, fields):
    w(f"impl TaskCommon for {name} {{")
    for method, field, go, ret, expr in COMMON:
        if fields.get(field) == go:
            w(f"    fn {method}(&self) -> {ret} {{")
            w("        " + expr.format(f=snake(field)))
            w("    }")
    w("}")
    w("")


def main():
    structs = parse_doc(DOC.read_text())
    full = closure(structs, FULL)
    out = []
    w = out.append
    w("//! The v3 payload model, generated by `contrib/gen-v3-model.py` from the")
    w("//! Go SDK field tables in `docs/vod-protocol.md`. Do not edit by hand.")
    w("//!")
    w("//! Every field is optional (`null` and absent are the same), unknown keys")
    w("//! are ignored, strings accept JSON numbers (large numeric ids stay exact),")
    w("//! integers accept integral floats and numeric strings.")
    w("")
    w("#![allow(missing_docs)]")
    w("")
    w("use serde::{Deserialize, Serialize};")
    w("use serde_json::Value;")
    w("")
    w("use crate::events::{de, TaskCommon};")
    w("")
    emitted = set()

    def emit(name, mode):
        if name in emitted:
            return
        emitted.add(name)
        w(f"/// `{name}` of the VOD 2018-07-17 API.")
        w("#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]")
        w("#[serde(default)]")
        w(f"pub struct {name} {{")
        for field, go in structs[name]:
            ty, helper = rust_type(go, mode, name)
            attrs = [f'rename = "{field}"']
            if helper:
                attrs.append(f'deserialize_with = "{helper}"')
            attrs.append('skip_serializing_if = "Option::is_none"')
            w(f"    #[serde({', '.join(attrs)})]")
            w(f"    pub {snake(field)}: {ty},")
        w("}")
        w("")

    for name in full:
        emit(name, "full")
    for name in SHALLOW:
        emit(name, "shallow")
    w(AI_TASK_RESULT)
    for name in FULL + SHALLOW + MEDIA_RESULTS:
        emit_common(w, name, dict(structs[name]))
    tasks = [snake(f) for f, _ in structs["MediaProcessTaskResult"] if f != "Type"]
    w("impl MediaProcessTaskResult {")
    w("    /// The sub-task result that is set (the one `Type` names).")
    w("    pub fn task(&self) -> Option<&dyn TaskCommon> {")
    w("        " + "\n            .or_else(|| ".join(
        [f"self.{tasks[0]}.as_deref().map(|t| t as &dyn TaskCommon)"]
        + [f"self.{t}.as_deref().map(|t| t as &dyn TaskCommon))" for t in tasks[1:]]))
    w("    }")
    w("}")
    w("")
    for name in sorted(AI_WRAPPERS):
        tasks = [snake(f) for f, _ in structs[name] if f != "Type"]
        w(f"impl {name} {{")
        w("    /// The sub-task result that is set (the one `Type` names).")
        w("    pub fn task(&self) -> Option<&AiTaskResult> {")
        w("        " + "\n            .or(".join(
            [f"self.{tasks[0]}.as_deref()"] + [f"self.{t}.as_deref())" for t in tasks[1:]]))
        w("    }")
        w("}")
        w("")
    sys.stdout.write("\n".join(out))
    print(f"generated {len(emitted)} structs", file=sys.stderr)


if __name__ == "__main__":
    main()
