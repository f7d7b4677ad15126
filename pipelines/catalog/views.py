"""The SQL views of the audit catalog, each with the comment that documents it.

Every view reads the record tables that :mod:`microturn.pipelines.catalog.build` loads
(``sources``, ``conversations``, ``segments``, ``words``, ``events``, ``rejects``, ``samples``,
``shards``, each with an ``output`` column naming the directory a row came from) plus the
``catalog_meta`` and ``license_allowlist`` tables. The views are created in the order listed in
:data:`VIEWS`, so a view may use the ones before it; the catalog also stores the descriptions
in its ``catalog_views`` table so that auditors can read them with a query.

Conventions of every view: durations are in milliseconds, ``hours`` are DOUBLE, counts are
BIGINT, and percentiles are ``quantile_cont`` (linear interpolation between the closest ranks,
as ``numpy.percentile`` computes by default). A conversation id that appears in several outputs
counts once in every aggregate: the record from the first output given to ``catalog build``
wins, and ``duplicate_conversations`` lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class View:
    """One catalog view: its name, what it shows, and its SELECT."""

    name: str
    description: str
    sql: str

    def create_statement(self) -> str:
        """``CREATE VIEW`` with the description as a SQL comment above the SELECT."""
        comment = "\n".join(f"-- {line}" for line in self.description.splitlines())
        return f"{comment}\nCREATE VIEW {self.name} AS\n{self.sql.strip()}"


UNIQUE_CONVERSATIONS = View(
    name="unique_conversations",
    description=(
        "One row per conversation id, with the columns of `conversations`. When an id appears in\n"
        "several outputs, the record of the first output given to `catalog build` is kept."
    ),
    sql="""
SELECT c.*
FROM conversations AS c, catalog_meta AS m
QUALIFY row_number() OVER (
    PARTITION BY c.conversation_id
    ORDER BY list_position(m.inputs, c.output), c.output, c.source_uri, c.duration_ms
) = 1
""",
)

DUPLICATE_CONVERSATIONS = View(
    name="duplicate_conversations",
    description=(
        "Conversation ids found more than once in `conversations` (the same source ingested into\n"
        "two outputs, or an output given twice under different names): every copy stays in the\n"
        "table; `kept_output` is the one the aggregate views count."
    ),
    sql="""
SELECT c.conversation_id,
       count(*) AS copies,
       list(c.output ORDER BY c.output) AS outputs,
       list(DISTINCT c.origin ORDER BY c.origin) AS origins,
       any_value(u.output) AS kept_output
FROM conversations AS c
JOIN unique_conversations AS u USING (conversation_id)
GROUP BY c.conversation_id
HAVING count(*) > 1
ORDER BY c.conversation_id
""",
)

CONVERSATION_SPLITS = View(
    name="conversation_splits",
    description=(
        "The effective split of each conversation: the split of its samples when the shard stage\n"
        "wrote samples for it (it decides), else `conversations.split`. A conversation whose\n"
        "samples sit in several splits gets their names joined with '+' (e.g. 'test+train'), so\n"
        "it shows as its own split everywhere and `leakage` lists it."
    ),
    sql="""
WITH sample_splits AS (
    SELECT conversation_id, list_sort(list(DISTINCT split)) AS splits
    FROM samples
    GROUP BY conversation_id
)
SELECT c.conversation_id,
       c.split AS record_split,
       s.splits AS sample_splits,
       coalesce(array_to_string(s.splits, '+'), c.split) AS split,
       s.splits IS NOT NULL AS from_samples
FROM unique_conversations AS c
LEFT JOIN sample_splits AS s USING (conversation_id)
ORDER BY c.conversation_id
""",
)

HOURS_BY_SPLIT = View(
    name="hours_by_split",
    description=(
        "Hours of conversation per effective split (see `conversation_splits`), origin and\n"
        "license: split, origin, license, conversations, hours."
    ),
    sql="""
SELECT s.split, c.origin, c.license,
       count(*) AS conversations,
       sum(c.duration_ms)::DOUBLE / 3600000 AS hours
FROM unique_conversations AS c
JOIN conversation_splits AS s USING (conversation_id)
GROUP BY s.split, c.origin, c.license
ORDER BY s.split, c.origin, c.license NULLS LAST
""",
)

GAP_OVERLAP_VALUES = View(
    name="gap_overlap_values",
    description=(
        "Every gap and overlap at a change of speaker, one row per value, from `stats.gaps_ms`\n"
        "and `stats.overlaps_ms` of the conversations (for plots and custom histograms):\n"
        "origin, kind ('gap' | 'overlap'), ms, conversation_id."
    ),
    sql="""
SELECT origin, 'gap' AS kind, unnest(stats.gaps_ms) AS ms, conversation_id
FROM unique_conversations
UNION ALL
SELECT origin, 'overlap' AS kind, unnest(stats.overlaps_ms) AS ms, conversation_id
FROM unique_conversations
""",
)

TURN_TAKING_BY_ORIGIN = View(
    name="turn_taking_by_origin",
    description=(
        "Turn-taking statistics per origin (real, synthetic, remix), pooled over conversations:\n"
        "gaps and overlaps at a change of speaker (count, p10 / p50 / p90 in ms); overlap_ratio,\n"
        "the speech-weighted mean of `stats.overlap_ratio` (overlapped speech / speech);\n"
        "backchannels per minute of speech (speech = stats.speech_ratio x duration); turns per\n"
        "minute of conversation. A statistic with no values is NULL."
    ),
    sql="""
WITH per_origin AS (
    SELECT origin,
           count(*) AS conversations,
           sum(duration_ms)::DOUBLE / 3600000 AS hours,
           sum(duration_ms)::DOUBLE AS duration_ms,
           sum(stats.speech_ratio * duration_ms) AS speech_ms,
           sum(stats.overlap_ratio * stats.speech_ratio * duration_ms) AS overlap_ms,
           sum(stats.speech_ratio * duration_ms) FILTER (WHERE stats.overlap_ratio IS NOT NULL)
               AS speech_ms_with_overlap_ratio,
           sum(stats.turns)::BIGINT AS turns,
           sum(stats.backchannels)::BIGINT AS backchannels
    FROM unique_conversations
    GROUP BY origin
),
values_by_origin AS (
    SELECT origin,
           count(*) FILTER (WHERE kind = 'gap') AS gap_count,
           quantile_cont(ms, 0.1) FILTER (WHERE kind = 'gap') AS gap_p10_ms,
           quantile_cont(ms, 0.5) FILTER (WHERE kind = 'gap') AS gap_p50_ms,
           quantile_cont(ms, 0.9) FILTER (WHERE kind = 'gap') AS gap_p90_ms,
           count(*) FILTER (WHERE kind = 'overlap') AS overlap_count,
           quantile_cont(ms, 0.1) FILTER (WHERE kind = 'overlap') AS overlap_p10_ms,
           quantile_cont(ms, 0.5) FILTER (WHERE kind = 'overlap') AS overlap_p50_ms,
           quantile_cont(ms, 0.9) FILTER (WHERE kind = 'overlap') AS overlap_p90_ms
    FROM gap_overlap_values
    GROUP BY origin
)
SELECT p.origin, p.conversations, p.hours,
       coalesce(v.gap_count, 0) AS gap_count, v.gap_p10_ms, v.gap_p50_ms, v.gap_p90_ms,
       coalesce(v.overlap_count, 0) AS overlap_count, v.overlap_p10_ms, v.overlap_p50_ms, v.overlap_p90_ms,
       p.overlap_ms / nullif(p.speech_ms_with_overlap_ratio, 0) AS overlap_ratio,
       p.backchannels / nullif(p.speech_ms / 60000, 0) AS backchannels_per_min,
       p.turns / nullif(p.duration_ms / 60000, 0) AS turns_per_min
FROM per_origin AS p
LEFT JOIN values_by_origin AS v USING (origin)
ORDER BY p.origin
""",
)

SPEAKER_BALANCE = View(
    name="speaker_balance",
    description=(
        "Per conversation, how speech divides between speakers, from its `segments` (those of the\n"
        "kept record's output): origin, speakers (with any speech), speech_ms_by_speaker,\n"
        "speech_ms (sum over speakers), dominant_speaker and dominant_share (the dominant\n"
        "speaker's share of that speech; ties go to the first speaker name). Conversations with\n"
        "no segments have 0 speakers and NULL shares."
    ),
    sql="""
WITH per_speaker AS (
    SELECT s.conversation_id, s.speaker, sum(s.end_ms - s.start_ms)::BIGINT AS speech_ms
    FROM segments AS s
    JOIN unique_conversations AS c
      ON s.conversation_id = c.conversation_id AND s.output = c.output
    GROUP BY s.conversation_id, s.speaker
)
SELECT c.conversation_id, c.origin,
       count(p.speaker) AS speakers,
       map_from_entries(list({'k': p.speaker, 'v': p.speech_ms} ORDER BY p.speaker)
                        FILTER (WHERE p.speaker IS NOT NULL)) AS speech_ms_by_speaker,
       sum(p.speech_ms)::BIGINT AS speech_ms,
       list(p.speaker ORDER BY p.speech_ms DESC, p.speaker)[1] AS dominant_speaker,
       max(p.speech_ms)::DOUBLE / nullif(sum(p.speech_ms), 0) AS dominant_share
FROM unique_conversations AS c
LEFT JOIN per_speaker AS p USING (conversation_id)
GROUP BY c.conversation_id, c.origin
ORDER BY c.conversation_id
""",
)

SPEAKER_BALANCE_BY_ORIGIN = View(
    name="speaker_balance_by_origin",
    description=(
        "`speaker_balance` summarised per origin: conversations, mean speakers, and the dominant\n"
        "speaker's share of speech (mean, p50, p90, max) over conversations with speech. A\n"
        "two-person conversation is balanced at 0.5."
    ),
    sql="""
SELECT origin,
       count(*) AS conversations,
       avg(speakers) AS mean_speakers,
       avg(dominant_share) AS mean_dominant_share,
       quantile_cont(dominant_share, 0.5) AS p50_dominant_share,
       quantile_cont(dominant_share, 0.9) AS p90_dominant_share,
       max(dominant_share) AS max_dominant_share
FROM speaker_balance
GROUP BY origin
ORDER BY origin
""",
)

REJECTS_BY_STAGE = View(
    name="rejects_by_stage",
    description=(
        "Failures per stage and error type, most frequent first: stage, error_type, rejects, and\n"
        "one example (the smallest input name, with its message)."
    ),
    sql="""
SELECT stage, error_type, rejects, example.input AS example_input, example.message AS example_message
FROM (
    SELECT stage, error_type, count(*) AS rejects, min({'input': input, 'message': message}) AS example
    FROM rejects
    GROUP BY stage, error_type
)
ORDER BY rejects DESC, stage, error_type
""",
)

LEAKAGE = View(
    name="leakage",
    description=(
        "Split leakage; empty when clean. 'multi_split': a conversation with samples in two or\n"
        "more splits. 'remix_source': a remix (origin 'remix', provenance JSON with \"remix_of\")\n"
        "whose effective split differs from its source conversation's (splits lists the remix's\n"
        "split, then the source's). Remixes whose source is not in the catalog cannot be checked\n"
        "and are left out (`catalog build` warns about them). Columns: conversation_id, kind,\n"
        "splits, detail."
    ),
    sql="""
WITH per_split AS (
    SELECT conversation_id, split, count(*) AS n
    FROM samples
    GROUP BY conversation_id, split
),
multi AS (
    SELECT conversation_id, 'multi_split' AS kind,
           list(split ORDER BY split) AS splits,
           'samples in ' || string_agg(split || ' (' || n || ')', ', ' ORDER BY split) AS detail
    FROM per_split
    GROUP BY conversation_id
    HAVING count(*) >= 2
),
remixes AS (
    SELECT conversation_id,
           CASE WHEN json_valid(provenance) THEN provenance ->> '$.remix_of' END AS source_id
    FROM unique_conversations
    WHERE origin = 'remix'
),
remix_source AS (
    SELECT r.conversation_id, 'remix_source' AS kind,
           [rs.split, ss.split] AS splits,
           'remix in ' || rs.split || ', its source ' || r.source_id || ' in ' || ss.split AS detail
    FROM remixes AS r
    JOIN conversation_splits AS rs ON rs.conversation_id = r.conversation_id
    JOIN conversation_splits AS ss ON ss.conversation_id = r.source_id
    WHERE rs.split IS DISTINCT FROM ss.split
)
SELECT * FROM multi
UNION ALL
SELECT * FROM remix_source
ORDER BY conversation_id, kind
""",
)

LICENSE_CHECK = View(
    name="license_check",
    description=(
        "Conversations whose license does not allow training use: missing (NULL or empty),\n"
        "'unknown', or not in `license_allowlist` (compared case-insensitively, ignoring\n"
        "surrounding spaces): conversation_id, origin, license, hours, reason."
    ),
    sql="""
SELECT c.conversation_id, c.origin, c.license,
       c.duration_ms::DOUBLE / 3600000 AS hours,
       CASE
           WHEN c.license IS NULL OR trim(c.license) = '' THEN 'missing'
           WHEN lower(trim(c.license)) = 'unknown' THEN 'unknown'
           ELSE 'not in allow-list'
       END AS reason
FROM unique_conversations AS c
WHERE c.license IS NULL
   OR trim(c.license) = ''
   OR lower(trim(c.license)) = 'unknown'
   OR NOT EXISTS (
       SELECT 1 FROM license_allowlist AS a WHERE lower(trim(a.license)) = lower(trim(c.license))
   )
ORDER BY c.conversation_id
""",
)

TASK_TYPES = View(
    name="task_types",
    description=(
        "Hours and counts per task type and origin. A conversation's task types are the\n"
        "behaviours its events show: 'visual_cue' (answers to what is on screen), 'background_result'\n"
        "(results delegated to a background model and brought up later), 'simultaneous' (speech\n"
        "over the other speaker on purpose: interpreting, shadowing), 'timed_instruction'\n"
        "(time-aware requests); a conversation with none of them is 'conversation'. A conversation\n"
        "with several types counts under each, so hours do not add up across types. Columns:\n"
        "task_type, origin, conversations, with_video (conversations that carry video), hours, and\n"
        "items (visual answers, delegations, rendered segments or timed responses; for\n"
        "'conversation' the turn ends)."
    ),
    sql="""
WITH kept_events AS (
    SELECT e.conversation_id, e.type, e.payload
    FROM events AS e
    JOIN unique_conversations AS c
      ON e.conversation_id = c.conversation_id AND e.output = c.output
),
typed AS (
    SELECT conversation_id, type AS task_type,
           count(*) FILTER (WHERE type <> 'background_result'
                            OR json_extract_string(payload, '$.phase') = 'arrival') AS items
    FROM kept_events
    WHERE type IN ('visual_cue', 'background_result', 'simultaneous', 'timed_instruction')
    GROUP BY conversation_id, type
),
plain AS (
    SELECT c.conversation_id, 'conversation' AS task_type,
           (SELECT count(*) FROM kept_events AS k
            WHERE k.conversation_id = c.conversation_id AND k.type = 'turn_end') AS items
    FROM unique_conversations AS c
    WHERE c.conversation_id NOT IN (SELECT conversation_id FROM typed)
)
SELECT t.task_type, c.origin,
       count(*) AS conversations,
       count(*) FILTER (WHERE c.has_video) AS with_video,
       sum(c.duration_ms)::DOUBLE / 3600000 AS hours,
       sum(t.items)::BIGINT AS items
FROM (SELECT * FROM typed UNION ALL SELECT * FROM plain) AS t
JOIN unique_conversations AS c USING (conversation_id)
GROUP BY t.task_type, c.origin
ORDER BY t.task_type, c.origin
""",
)

DUPLICATE_CONTENT = View(
    name="duplicate_content",
    description=(
        "The same content under several records; empty when there is none. 'conversation_id': one\n"
        "id loaded from several outputs (aggregates count it once; see `duplicate_conversations`).\n"
        "'source_sha256': one source file's bytes (`sources.sha256`) behind several conversation\n"
        "ids, whose hours are then counted more than once. 'media': several kept conversations\n"
        "pointing at one media folder (output/media_dir). Columns: kind, key (the id, sha256 or\n"
        "folder), copies, conversation_ids, outputs."
    ),
    sql="""
WITH by_id AS (
    SELECT 'conversation_id' AS kind, conversation_id AS key, copies,
           [conversation_id] AS conversation_ids, outputs
    FROM duplicate_conversations
),
by_sha AS (
    SELECT 'source_sha256' AS kind, sha256 AS key, count(DISTINCT conversation_id) AS copies,
           list(DISTINCT conversation_id ORDER BY conversation_id) AS conversation_ids,
           list(DISTINCT output ORDER BY output) AS outputs
    FROM sources
    GROUP BY sha256
    HAVING count(DISTINCT conversation_id) > 1
),
by_media AS (
    SELECT 'media' AS kind, output || '/' || media_dir AS key, count(*) AS copies,
           list(conversation_id ORDER BY conversation_id) AS conversation_ids,
           [output] AS outputs
    FROM unique_conversations
    GROUP BY output, media_dir
    HAVING count(*) > 1
)
SELECT * FROM by_id
UNION ALL
SELECT * FROM by_sha
UNION ALL
SELECT * FROM by_media
ORDER BY kind, key
""",
)

WORD_QUALITY_BY_ORIGIN = View(
    name="word_quality_by_origin",
    description=(
        "Word timings per origin, over the words of the kept conversation records: words, scored\n"
        "(with an aligner score), interpolated (score NULL: the aligner gave no time and the word's\n"
        "times were interpolated between its neighbours), interpolated_share, and the aligner\n"
        "score's mean, p10, p50 and p90 over the scored words (scores are in [0, 1])."
    ),
    sql="""
WITH kept_words AS (
    SELECT c.origin, w.score::DOUBLE AS score
    FROM words AS w
    JOIN unique_conversations AS c
      ON w.conversation_id = c.conversation_id AND w.output = c.output
)
SELECT origin,
       count(*) AS words,
       count(score) AS scored,
       count(*) - count(score) AS interpolated,
       (count(*) - count(score))::DOUBLE / count(*) AS interpolated_share,
       avg(score) AS mean_score,
       quantile_cont(score, 0.1) AS p10_score,
       quantile_cont(score, 0.5) AS p50_score,
       quantile_cont(score, 0.9) AS p90_score
FROM kept_words
GROUP BY origin
ORDER BY origin
""",
)

BACKEND_USAGE = View(
    name="backend_usage",
    description=(
        "Which tool did each job, from the `backends` map of the conversations: role (the map's key:\n"
        "vad, diarizer, transcriber, tts, timing, video, ...), backend (its value), origin,\n"
        "conversations and hours. A conversation counts once under each of its roles."
    ),
    sql="""
WITH roles AS (
    SELECT origin, duration_ms,
           unnest(map_keys(backends)) AS role,
           unnest(map_values(backends)) AS backend
    FROM unique_conversations
)
SELECT role, backend, origin,
       count(*) AS conversations,
       sum(duration_ms)::DOUBLE / 3600000 AS hours
FROM roles
GROUP BY role, backend, origin
ORDER BY role, backend, origin
""",
)

# In creation order: a view may only use the views before it.
VIEWS: tuple[View, ...] = (
    UNIQUE_CONVERSATIONS,
    DUPLICATE_CONVERSATIONS,
    CONVERSATION_SPLITS,
    HOURS_BY_SPLIT,
    GAP_OVERLAP_VALUES,
    TURN_TAKING_BY_ORIGIN,
    SPEAKER_BALANCE,
    SPEAKER_BALANCE_BY_ORIGIN,
    REJECTS_BY_STAGE,
    LEAKAGE,
    LICENSE_CHECK,
    TASK_TYPES,
    DUPLICATE_CONTENT,
    WORD_QUALITY_BY_ORIGIN,
    BACKEND_USAGE,
)
VIEW_NAMES = tuple(v.name for v in VIEWS)
