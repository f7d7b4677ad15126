"""The dataset card of a shard output: ``SHARDS/README.md``, so that Hugging Face ``datasets``
loads the shards with no code of ours.

The card's YAML front matter names one config per shard set (:mod:`microturn.pipelines.shard.plan`):
``audio`` (audio-only samples, the default) and ``video`` (samples with a clip), each with its
splits' tars (never the Parquet manifests beside them) and its features. Features are declared
rather than left to the loader, because the WebDataset builder of ``datasets`` types the columns
from the first five samples of one tar: a sample whose JSON differs from those (an event payload
with other keys, a word list that was empty in all five, a ``license`` that was null) then fails
to cast or silently loses keys. Declared, every JSON member has a fixed type and each event's
``payload`` (whose keys depend on the event type) is a ``Json`` value, so every sample loads
unchanged. The prose below the front matter says what a sample holds, how to load it, and
the figures of this output (samples and hours per config and split, licenses, origins).

The card is one of the run's outputs: written under its pending name by the pipeline, published
by the run's commit with the tars, and the same bytes for the same inputs (no paths, no times).
A ``README.md`` that the stage did not write is never replaced (``outputs.ROOT_FILES``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from microturn.pipelines.outputs import ROOT_FILES, pending_name, publish
from microturn.pipelines.shard.plan import MEMBER_SETS, members_of
from microturn.schemas.sample import (
    CHUNK_MS,
    DMEL_BINS,
    EVENT_TYPES,
    FRAMES_PER_CHUNK,
    N_MELS,
    PATCH_PX,
    VIDEO_FPS,
    Label,
)
from microturn.schemas.tables import SCHEMA_VERSION

CARD_NAME = "README.md"
CARD_MARK = ROOT_FILES["shard"][CARD_NAME]
CONFIGS = {"audio": "audio-only samples", "video": "samples with a video clip (`video.mp4`)"}

# --- features (the YAML form of datasets.Features) -------------------------------------------
# A type is a dtype name ("int64"), ("list", type) or ("struct", ((name, type), ...)).
_INT, _STR = "int64", "string"
META_FEATURES: tuple[tuple[str, Any], ...] = (
    ("schema_version", _INT), ("key", _STR), ("conversation_id", _STR), ("window", _INT),
    ("window_chunks", _INT), ("chunks", _INT), ("offset_ms", _INT), ("duration_ms", _INT), ("content_ms", _INT),
    ("model_speaker", _STR), ("user_speakers", ("list", _STR)), ("origin", _STR), ("license", _STR),
    ("split", _STR), ("channel_layout", _STR),
    # null in every audio-only sample; declared in both configs so that they concatenate.
    ("video", ("struct", tuple((k, _INT) for k in ("width", "height", "patches_h", "patches_w", "frames")))),
)
WORD_FEATURES: tuple[tuple[str, Any], ...] = (("text", _STR), ("start_ms", _INT), ("end_ms", _INT), ("chunk", _INT))
EVENT_FEATURES: tuple[tuple[str, Any], ...] = (
    ("type", _STR), ("speaker", _STR), ("role", _STR), ("t_ms", _INT), ("chunk", _INT),
    ("payload", "json"),  # keys depend on the event type: kept whole as a Json value
)


def features(members: str) -> tuple[tuple[str, Any], ...]:
    """The columns of a config (``"audio"`` or ``"video"``), in tar member order, then the
    ``__key__`` and ``__url__`` columns the WebDataset builder adds."""
    if members not in MEMBER_SETS:
        raise ValueError(f"shard set must be one of {MEMBER_SETS}, got {members!r}")
    words = ("list", ("struct", WORD_FEATURES))
    cols: list[tuple[str, Any]] = [
        ("json", ("struct", META_FEATURES)),
        ("user.dmel.npy", ("list", ("list", "uint8"))),
        ("model.dmel.npy", ("list", ("list", "uint8"))),
        ("model.logmel.npy", ("list", ("list", "float16"))),
        ("user.labels.npy", ("list", "uint16")),
        ("model.labels.npy", ("list", "uint16")),
        ("words.json", ("struct", (("user", words), ("model", words), ("background", words)))),
        ("events.json", ("list", ("struct", EVENT_FEATURES))),
    ]
    if members == "video":
        # Raw bytes: loading needs no video decoder (datasets' Video type wants torchcodec).
        cols.append(("video.mp4", "binary"))
    return (*cols, ("__key__", _STR), ("__url__", _STR))


def _type_yaml(t: Any) -> dict:
    if isinstance(t, str):
        return {"dtype": t}
    kind, inner = t
    if kind == "struct":
        return {"struct": _fields_yaml(inner)}
    if isinstance(inner, str):
        return {"list": inner}
    sub = _type_yaml(inner)
    return {"list": sub["struct"] if "struct" in sub else sub}


def _fields_yaml(fields) -> list[dict]:
    return [{"name": name, **_type_yaml(t)} for name, t in fields]


def features_yaml(members: str) -> list[dict]:
    """:func:`features` in the form of a dataset card's ``dataset_info.features``."""
    return _fields_yaml(features(members))


# --- a small YAML writer (block style; strings as JSON, which YAML reads the same) ------------

def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, (list, dict)) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return None


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    """Lines of ``value`` (dicts with identifier keys, lists, str, int, bool) as block YAML."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            text = _scalar(v)
            if text is not None:
                lines.append(f"{pad}{k}: {text}")
            else:
                lines += [f"{pad}{k}:", *to_yaml(v, indent + 2)]
        return lines
    if isinstance(value, list):
        for item in value:
            text = _scalar(item)
            if text is not None:
                lines.append(f"{pad}- {text}")
            else:
                sub = to_yaml(item, indent + 2)
                lines += [f"{pad}- {sub[0].lstrip()}", *sub[1:]]
        return lines
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


# --- figures of the output (a combiner over the shards and samples rows) ----------------------

class CardFigures(beam.CombineFn):
    """``("shard", shards row)`` and ``("sample", samples row)`` → the figures of the card:
    ``{"groups": {(set, split): [samples, ms, shards, bytes]}, "licenses": {license: [samples, ms]},
    "origins": {origin: [samples, ms]}}``. Small whatever the corpus (a few keys each)."""

    def create_accumulator(self) -> dict:
        return {"groups": {}, "licenses": {}, "origins": {}}

    def add_input(self, acc: dict, element: tuple[str, Mapping]) -> dict:
        kind, row = element
        if kind == "shard":
            g = acc["groups"].setdefault((members_of(row["path"]), row["split"]), [0, 0, 0, 0])
            g[0] += int(row["samples"])
            g[1] += int(row["duration_ms"])
            g[2] += 1
            g[3] += int(row["bytes"])
        else:
            for table, value in (("licenses", row["license"] or ""), ("origins", row["origin"] or "")):
                n = acc[table].setdefault(value, [0, 0])
                n[0] += 1
                n[1] += int(row["duration_ms"])
        return acc

    def merge_accumulators(self, accumulators) -> dict:
        out = self.create_accumulator()
        for acc in accumulators:
            for table, rows in acc.items():
                for key, values in rows.items():
                    have = out[table].setdefault(key, [0] * len(values))
                    out[table][key] = [a + b for a, b in zip(have, values, strict=True)]
        return out

    def extract_output(self, acc: dict) -> dict:
        return acc


# --- the card --------------------------------------------------------------------------------

_LABELS = {  # one line per bit of microturn.schemas.sample.Label
    "VOICED": "the stream's speech covers at least 100 ms of the chunk",
    "WORD_START": "a word of the stream starts in the chunk",
    "TURN_START": "a main turn (not a backchannel) of the stream starts in the chunk",
    "TURN_END": "a main turn of the stream ends in the chunk",
    "BACKCHANNEL": "a backchannel of the stream is under way in the chunk",
    "INTERRUPT": "the stream's speaker interrupts the other stream in the chunk",
    "OVERLAP": "both streams are VOICED in the chunk",
    "LEAK": "mixed source: the other stream's speech may be audible in this stream",
    "CUE_RESPONSE": "the stream answers a visual cue in the chunk",
    "BACKGROUND": "the stream brings up a background result in the chunk",
    "SIMULTANEOUS": "the stream speaks over the other on purpose (renders it) in the chunk",
}


def data_files(members: str, split: str) -> str:
    """The card's pattern for the tars of one shard set of one split (never the manifests)."""
    return f"{split}/{split}-[0-9]*.tar" if members == "audio" else f"{split}/{split}-{members}-[0-9]*.tar"


def front_matter(figures: Mapping) -> dict:
    """The card's YAML metadata: ``configs`` (data files per split) and ``dataset_info``
    (features and split sizes) for each shard set present, the audio-only one the default."""
    groups = figures["groups"]
    present = [m for m in MEMBER_SETS if any(g[0] == m for g in groups)]
    configs, infos = [], []
    for i, members in enumerate(present):
        splits = sorted(s for m, s in groups if m == members)
        configs.append({"config_name": members, **({"default": True} if i == 0 else {}),
                        "data_files": [{"split": s, "path": data_files(members, s)} for s in splits]})
        # num_bytes: the tars' bytes (datasets wants a figure; its Arrow copy is of that order).
        infos.append({"config_name": members, "features": features_yaml(members),
                      "splits": [{"name": s, "num_bytes": groups[(members, s)][3],
                                  "num_examples": groups[(members, s)][0]} for s in splits]})
    return {"pretty_name": "microturn micro-turn samples", "tags": ["audio", "speech", "full-duplex", "webdataset"],
            "configs": configs, "dataset_info": infos}


def _cell(text: str) -> str:
    """A Markdown table cell: no pipe, no line break, no control character."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text).replace("|", "\\|").strip()
    return f"`{clean}`" if clean else "(none)"


def _hours(ms: int) -> str:
    return f"{ms / 3.6e6:.3f}"


def render_card(figures: Mapping, *, window_chunks: int, patch_budget: int | None) -> str:
    """The whole ``README.md`` for ``figures`` (:class:`CardFigures`); the same figures give the
    same text."""
    groups = figures["groups"]
    meta = to_yaml(front_matter(figures))
    k_s = window_chunks * CHUNK_MS / 1000
    present = [m for m in MEMBER_SETS if any(g[0] == m for g in groups)]
    default = present[0]
    first_split = sorted(s for m, s in groups if m == default)[0]
    lines = ["---", *meta, "---", f"{CARD_MARK}: written by every `microturn shard` run into this folder "
             "and replaced by the next; do not edit -->", "",
             "# Micro-turn samples", "",
             "Training samples for full-duplex speech models, cut by `microturn shard` from conversation records: "
             f"windows of up to K = {window_chunks} chunks of {CHUNK_MS} ms ({k_s:g} s) of one conversation under one "
             "role assignment (one speaker is the `model` stream, everyone else the `user` stream; every speaker "
             f"with speech takes the `model` role once). Sample schema version {SCHEMA_VERSION}.", "",
             "## Configs and splits", "",
             "Each config is one set of WebDataset tars in the split folders; every tar of a config holds samples "
             "with the same members. The `.parquet` file beside each tar is its manifest (one row per sample), "
             "and `samples/`, `shards/`, `rejects/` are the run's tables: none of them is loaded as samples.", "",
             "| config | split | samples | shards | hours of sample time | tars |",
             "|---|---|---:|---:|---:|---|"]
    for members in present:
        for (m, split), (n, ms, shards, _) in sorted(groups.items()):
            if m == members:
                lines.append(f"| `{m}` | `{split}` | {n} | {shards} | {_hours(ms)} | "
                             f"`{data_files(m, split)}` |")
    lines += ["", "Hours of sample time count each window once per role assignment: a two-person "
              "conversation's hour is two hours of samples.", "",
              "## Loading", "",
              "With Hugging Face `datasets` (a release with the `Json` feature type; checked with 5.2.0), from "
              "this folder (`SHARDS` below):", "", "```python",
              "from datasets import load_dataset, load_dataset_builder", "",
              f'ds = load_dataset("SHARDS")                        # the `{default}` config, every split',
              *([f'video = load_dataset("SHARDS", "video")          # {CONFIGS["video"]}']
                if "video" in present and default != "video" else []),
              f'stream = load_dataset("SHARDS", "{default}", split="{first_split}", streaming=True)  # no local copy',
              "# The generic WebDataset loader on some tars: pass the card's features, or datasets types the",
              "# columns from the first five samples and later ones can fail to cast or lose payload keys.",
              f'features = load_dataset_builder("SHARDS", "{default}").info.features',
              f'ds = load_dataset("webdataset", data_files={{"{first_split}": '
              f'"SHARDS/{data_files(default, first_split)}"}}, features=features)',
              "```", "",
              "Arrays come as nested lists (`ds.with_format(\"numpy\")` gives arrays), JSON members as Python "
              "objects, each event's `payload` as the object it was written as. With `webdataset` and microturn, "
              "every tar of a split folder (both configs) at once:", "", "```python",
              "import glob", "",
              "import webdataset as wds",
              "from microturn.schemas.sample import decode_sample", "",
              f'for raw in wds.WebDataset(sorted(glob.glob("SHARDS/{first_split}/*.tar")), shardshuffle=100):',
              "    s = decode_sample(raw)  # arrays, words, events; video_KPFHWC uint8 [K, P, 2, 40, 40, 3] or None",
              "```", "",
              "## A sample", "",
              f"K is the sample's chunks (`json.chunks`, at most {window_chunks}), T = {FRAMES_PER_CHUNK} K dMel "
              f"frames (hop 50 ms), M = {N_MELS} mel channels. Times inside a sample are integer ms from the "
              "window's start (`json.offset_ms` in the conversation); a word's or event's `chunk` is the chunk "
              "holding its start.", "",
              "| member (column) | type | content |", "|---|---|---|",
              "| `json` | object | `schema_version`, `key`, `conversation_id`, `window`, `window_chunks`, `chunks`, "
              "`offset_ms`, `duration_ms`, `content_ms` (where speech content ends), `model_speaker`, `user_speakers`, "
              "`origin`, `license`, `split`, `channel_layout`, `video` (`width`, `height`, `patches_h`, `patches_w`, "
              "`frames`; null without a clip) |",
              f"| `user.dmel.npy`, `model.dmel.npy` | uint8 [T, M] | dMel: log-mel quantised to {DMEL_BINS} bins "
              "(0..15) |",
              "| `model.logmel.npy` | float16 [T, M] | the model stream's log-mel before quantisation "
              "(flow-head target) |",
              "| `user.labels.npy`, `model.labels.npy` | uint16 [K] | label bits per chunk (below) |",
              "| `words.json` | object | `user`, `model`, `background`: lists of `{text, start_ms, end_ms, chunk}`; "
              "`background` holds results delivered to the model speaker, each at its arrival |",
              "| `events.json` | list | `{type, speaker, role, t_ms, chunk, payload}`; types: "
              + ", ".join(f"`{t}`" for t in EVENT_TYPES) + " |"]
    if "video" in present:
        budget = f", P = `patches_h` x `patches_w` <= {patch_budget} patches" if patch_budget else ""
        lines.append(f"| `video.mp4` (`video` config) | bytes | H.264 clip at {VIDEO_FPS} fps, sides multiples of "
                     f"{PATCH_PX} px{budget}; decoded to uint8 [K, P, 2, {PATCH_PX}, {PATCH_PX}, 3] by "
                     "`decode_sample` |")
    lines += ["", "Label bits (`labels.npy`):", "", "| bit | value | set where |", "|---|---:|---|"]
    lines += [f"| `{b.name}` | {int(b.value)} | {_LABELS[str(b.name)]} |" for b in Label]
    lines += ["", "## Licenses and origins", "", "| license | samples | hours of sample time |", "|---|---:|---:|"]
    lines += [f"| {_cell(lic)} | {n} | {_hours(ms)} |" for lic, (n, ms) in sorted(figures["licenses"].items())]
    lines += ["", "| origin | samples | hours of sample time |", "|---|---:|---:|"]
    lines += [f"| {_cell(o)} | {n} | {_hours(ms)} |" for o, (n, ms) in sorted(figures["origins"].items())]
    lines += ["", "Each sample's own license is `json.license`; the `samples` table and the manifests have it too.", ""]
    return "\n".join(lines)


class WriteCard(beam.DoFn):
    """The combined figures → ``SHARDS/README.md`` under its pending name (published by the
    run's commit); nothing when the run made no samples (the run then publishes nothing)."""

    def __init__(self, output: str, *, window_chunks: int, patch_budget: int | None):
        self.output, self.window_chunks, self.patch_budget = output, window_chunks, patch_budget

    def process(self, figures):
        if not figures["groups"]:
            return
        text = render_card(figures, window_chunks=self.window_chunks, patch_budget=self.patch_budget)
        publish(text.encode("utf-8"), pending_name(FileSystems.join(self.output, CARD_NAME)))
        yield CARD_NAME


__all__ = ["CARD_MARK", "CARD_NAME", "CardFigures", "WriteCard", "data_files", "features", "features_yaml",
           "front_matter", "render_card", "to_yaml"]
