"""No stage destroys what another wrote, and reruns replace exactly what they supersede.

Classes of fault, each with inputs the test makes itself:

- ownership: an output holding another stage's tables (by its marker, or for outputs from
  before markers, by its tables) is refused before any work, for every pair of stages;
- overlap: an output that is an input, lies inside one or holds one is refused; an output
  inside a recursive input glob is never read back as input;
- an output that is a file is refused before any work;
- reruns: another ``table_shards`` leaves no rows of the earlier run; a run whose inputs match
  nothing, or in which every input failed, exits non-zero with the earlier output intact;
- locks: a second run on a locked output is refused naming the holder; a killed holder
  leaves no stale lock;
- output faults: a write that fails is an ``OutputError`` about the output (never a reject),
  with no temporary file left; classification of OS errors;
- reject messages carry nothing that changes between identical runs (heap addresses).
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys

import apache_beam as beam
import pytest

from microturn.pipelines import outputs
from microturn.pipelines.outputs import MARKER, OutputError, OutputInUse, OutputLock, find_output_fault
from microturn.pipelines.shard.run import main as shard_main
from microturn.pipelines.shard.run import run as shard_run
from microturn.pipelines.tables import WriteSortedTable, read_table, reject, scrub
from microturn.testing.files import tree
from microturn.testing.records import write_records
from stage_runs import SHARD_ARGS, error_lines, leftovers, make_records, run_stage


def shard(records, out, *extra):
    return shard_run(["--input", str(records), "--output", str(out), *SHARD_ARGS, *extra], print_summary=False)


def refused(main, argv) -> str:
    """Run a stage's ``main`` in process; it must exit non-zero with one error line."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    assert info.value.code not in (0, None)
    message = str(info.value.code)
    assert "\n" not in message and "error" in message, message
    return message


def fake_output(root, stage: str | None, tables=("conversations",)):
    os.makedirs(root, exist_ok=True)
    for t in tables:
        os.makedirs(os.path.join(root, t), exist_ok=True)
        with open(os.path.join(root, t, "part-00000-of-00001.parquet"), "wb") as f:
            f.write(b"not really parquet")
    if stage:
        with open(os.path.join(root, MARKER), "w") as f:
            json.dump({"stage": stage, "layout_version": 1}, f)
    return str(root)


# --- ownership -------------------------------------------------------------------------------

def test_shard_into_its_own_input_is_refused_and_nothing_changes(tmp_path):
    rec = make_records(tmp_path / "rec")
    before = tree(rec)
    msg = refused(shard_main, ["--input", rec, "--output", rec])
    assert "--output" in msg
    assert tree(rec) == before  # the records' tables (and no rejects/ of shard's) as they were


@pytest.mark.parametrize("stage,owner,tables", [
    ("shard", "ingest", ("sources", "conversations", "rejects")),
    ("shard", "synthesize", ("conversations", "rejects")),
    ("synthesize", "ingest", ("sources", "conversations")),
    ("synthesize", "shard", ("samples", "shards")),
    ("ingest", "synthesize", ("conversations",)),
    ("ingest", "shard", ("samples",)),
    # Outputs written before markers existed: the tables say whose they are.
    ("synthesize", None, ("sources", "conversations")),
    ("ingest", None, ("samples", "shards")),
    ("shard", None, ("sources",)),
])
def test_an_output_of_another_stage_is_refused(tmp_path, records, stage, owner, tables, speech_dir, scripts_file):
    from microturn.pipelines.ingest.run import main as ingest_main
    from microturn.pipelines.synthesize.run import main as synthesize_main

    out = fake_output(tmp_path / "other", owner, tables)
    before = tree(out)
    argv = {"ingest": (ingest_main, ["--input", speech_dir / "*.wav", "--output", out]),
            "synthesize": (synthesize_main, ["--scripts", scripts_file, "--output", out]),
            "shard": (shard_main, ["--input", records, "--output", out])}[stage]
    msg = refused(*argv)
    assert "holds the output of" in msg
    assert tree(out) == before


@pytest.mark.parametrize("marker", [b"\xff\x00 not json", b"[1, 2]", b'{"stage": 5}', b'{"stage": "shard2"}', b""])
def test_a_corrupt_or_foreign_marker_is_an_unknown_writer(tmp_path, marker):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_bytes(marker)
    with pytest.raises(ValueError, match="holds the output of an unknown writer; this ingest run"):
        outputs.check_output(str(out), "ingest")


def test_outputs_of_the_same_stage_and_empty_folders_are_accepted(tmp_path):
    outputs.check_output(str(tmp_path / "missing"), "shard")
    (tmp_path / "empty").mkdir()
    outputs.check_output(str(tmp_path / "empty"), "ingest")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("a folder of a user's own")
    outputs.check_output(str(tmp_path / "notes"), "synthesize")
    outputs.check_output(fake_output(tmp_path / "old_shard", None, ("samples", "shards", "rejects")), "shard")
    outputs.check_output(fake_output(tmp_path / "ingest", "ingest", ("sources",)), "ingest")
    with pytest.raises(ValueError, match="unknown writer"):
        outputs.check_output(fake_output(tmp_path / "odd", "", ("rejects",)), "shard")


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_an_output_that_is_inside_or_around_an_input_is_refused(tmp_path, where):
    rec = make_records(tmp_path / "data" / "rec")
    out = {"same": rec, "inside": os.path.join(rec, "shards"), "around": str(tmp_path / "data")}[where]
    before = tree(tmp_path / "data")
    refused(shard_main, ["--input", rec, "--output", out])
    assert tree(tmp_path / "data") == before


def test_an_input_reached_through_a_link_or_a_relative_path_is_still_the_input(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "rec")
    os.symlink(rec, tmp_path / "alias")
    before = tree(rec)
    refused(shard_main, ["--input", rec, "--output", tmp_path / "alias" / "shards"])
    monkeypatch.chdir(tmp_path)
    refused(shard_main, ["--input", "rec", "--output", rec])
    refused(shard_main, ["--input", "./alias/../rec", "--output", "rec/x"])
    assert tree(rec) == before


def test_glob_bases_around_the_output_are_refused_and_inside_are_excluded(tmp_path):
    data = str(tmp_path / "data")
    with pytest.raises(ValueError, match="contains the files of the input"):
        outputs.check_output(data, "ingest", globs=[f"{data}/*.wav"])
    with pytest.raises(ValueError, match="contains the files of the input"):
        outputs.check_output(str(tmp_path), "ingest", globs=[f"{data}/**"])
    with pytest.raises(ValueError, match="contains the files of the input"):
        outputs.check_output(data, "synthesize", globs=[f"{data}/a.jsonl"])
    outputs.check_output(f"{data}/out", "ingest", globs=[f"{data}/**"])  # allowed: matches are filtered
    assert outputs.excluded(f"{data}/out/media/c-1/mix.flac", f"{data}/out")
    assert not outputs.excluded(f"{data}/outside.wav", f"{data}/out")
    assert not outputs.excluded(f"{data}/out2/x.wav", f"{data}/out")


@pytest.mark.parametrize("stage", ["ingest", "synthesize", "shard"])
def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, stage, records, speech_dir, scripts_file):
    from microturn.pipelines.ingest.run import main as ingest_main
    from microturn.pipelines.synthesize.run import main as synthesize_main

    out = tmp_path / "a_file"
    out.write_bytes(b"precious")
    argv = {"ingest": (ingest_main, ["--input", speech_dir / "*.wav", "--output", out]),
            "synthesize": (synthesize_main, ["--scripts", scripts_file, "--output", out]),
            "shard": (shard_main, ["--input", records, "--output", out])}[stage]
    assert "is a file" in refused(*argv)
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


# --- reruns ----------------------------------------------------------------------------------

def test_a_rerun_with_other_table_shards_replaces_every_part(tmp_path, records):
    out = tmp_path / "out"
    for n in (3, 1):
        cfg = tmp_path / f"t{n}.toml"
        cfg.write_text(f"table_shards = {n}\n")
        shard(records, out, "--config", str(cfg))
    for table in ("samples", "shards", "rejects"):
        assert sorted(os.listdir(out / table)) == ["part-00000-of-00001.parquet"]
    clean = tmp_path / "clean"
    shard(records, clean)
    assert tree(out) == tree(clean)


def test_stale_parts_go_and_files_of_other_names_stay(tmp_path):
    out = str(tmp_path / "out")
    rows = [{"input": f"in{i}", "stage": "s", "error_type": "E", "message": "m"} for i in range(5)]
    for n in (4, 2):
        with beam.Pipeline() as p:
            _ = p | beam.Create(rows) | WriteSortedTable(out, "rejects", num_shards=n, pending=True)
        if n == 4:
            outputs.commit(out, "shard")
            (tmp_path / "out" / "rejects" / "notes.txt").write_text("not ours")
    # Before commit, readers see the earlier run only.
    assert sorted(r["input"] for r in read_table(out, "rejects").to_pylist()) == [f"in{i}" for i in range(5)]
    assert outputs.commit(out, "shard") == (2, 4)
    assert sorted(os.listdir(tmp_path / "out" / "rejects")) == [
        "notes.txt", "part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert read_table(out, "rejects").num_rows == 5


def test_a_rerun_in_which_every_record_fails_keeps_the_earlier_shards(tmp_path):
    rec = make_records(tmp_path / "rec")
    out = tmp_path / "out"
    shard(rec, out)
    before = tree(out)
    for cid in ("s-00000000000000e1", "s-00000000000000e2"):  # the media are "not mounted"
        for name in os.listdir(tmp_path / "rec" / "media" / cid):
            os.remove(tmp_path / "rec" / "media" / cid / name)
    msg = refused(shard_main, ["--input", rec, "--output", out, *SHARD_ARGS])
    assert "every input failed" in msg and "missing_media" in msg
    assert tree(out) == before
    assert leftovers(out) == []


def test_a_killed_runs_spool_goes_with_the_next_run_and_a_finished_run_leaves_none(tmp_path):
    rec = make_records(tmp_path / "rec")
    out = tmp_path / "out"
    shard(rec, out)
    before = tree(out)
    assert before and leftovers(out) == []
    spool = out / outputs.SPOOL / "ab"  # what a run killed between spooling and packing leaves
    spool.mkdir(parents=True)
    (spool / "s-00000000000000e1_A_00000.tar").write_bytes(bytes(512))
    shard(rec, out)
    assert tree(out) == before and not (out / outputs.SPOOL).exists()


def test_inputs_that_match_nothing_fail_and_keep_the_earlier_output(tmp_path, scripts_file):
    from microturn.pipelines.ingest.run import main as ingest_main
    from microturn.pipelines.synthesize.run import main as synthesize_main

    out = fake_output(tmp_path / "ingest_out", "ingest", ("sources", "conversations"))
    before = tree(out)
    assert "matches no file" in refused(ingest_main, ["--input", tmp_path / "nothing" / "*.wav", "--output", out])
    assert tree(out) == before
    syn = fake_output(tmp_path / "syn_out", "synthesize", ("conversations",))
    before = tree(syn)
    assert "matches no file" in refused(synthesize_main, ["--scripts", tmp_path / "none*.jsonl", "--output", syn])
    assert tree(syn) == before
    empty = tmp_path / "empty_records"
    for t in ("conversations",):
        (empty / t).mkdir(parents=True)
    assert "no conversation records" in refused(shard_main, ["--input", empty, "--output", tmp_path / "s"])


def test_records_with_no_rows_give_an_error_not_empty_tables(tmp_path, records):
    out = tmp_path / "out"
    shard(records, out)
    before = tree(out)
    empty = write_records(str(tmp_path / "empty"), [])
    msg = refused(shard_main, ["--input", empty, "--output", out])
    assert "no samples" in msg
    assert tree(out) == before


# --- locks -----------------------------------------------------------------------------------

HOLD = ("import sys, time\nfrom microturn.pipelines.outputs import OutputLock\n"
        "with OutputLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")


def test_a_locked_output_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path, records):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None  # stdout=PIPE
    try:
        assert holder.stdout.readline().strip() == "held"
        msg = refused(shard_main, ["--input", records, "--output", out])
        assert f"pid {holder.pid}" in msg
        with pytest.raises(OutputInUse):
            OutputLock(str(out)).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert os.path.exists(out / outputs.LOCK)  # the file of a killed holder stays, but not its lock
    shard(records, out)
    assert leftovers(out) == []


def test_the_lock_is_released_and_removed_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputLock(str(tmp_path)):
            raise RuntimeError("boom")
    assert not os.path.exists(tmp_path / outputs.LOCK)
    with OutputLock(str(tmp_path)):
        assert open(tmp_path / outputs.LOCK).read().strip() == str(os.getpid())


# --- output faults ---------------------------------------------------------------------------

def test_a_failed_write_is_an_output_error_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(OutputError, match="cannot write the output"):
        with outputs.atomic_file(str(tmp_path / "t" / "x.parquet")) as f:
            f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert os.listdir(tmp_path / "t") == []
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(OutputError):  # the table folder's place is taken by a file
        outputs.publish(b"x", str(tmp_path / "blocker" / "part-00000-of-00001.parquet"))


def test_output_faults_are_told_from_input_faults(tmp_path):
    out = str(tmp_path / "out")
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        assert find_output_fault(OSError(code, os.strerror(code), "/anywhere/x")) is not None
    denied_out = PermissionError(errno.EACCES, "Permission denied", f"{out}/media/c/mix.flac")
    denied_in = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "input.wav"))
    assert find_output_fault(denied_out, out) is not None
    assert find_output_fault(denied_in, out) is None  # an unreadable input is a reject
    assert find_output_fault(FileNotFoundError(errno.ENOENT, "gone", f"{out}/x"), out) is None
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{out}/t/p")
        except OSError as exc:
            raise RuntimeError("while running 'WriteSorted'") from exc
    except RuntimeError as wrapped:
        fault = find_output_fault(wrapped, out)
        assert fault is not None and fault.errno == errno.ENOSPC
    # As Beam's multi-process runners report it: the text of a remote traceback.
    remote = RuntimeError("Traceback ...\nmicroturn.pipelines.outputs.OutputError: cannot write the output "
                          "/o/t/p: No space left on device [while running 'WriteSortedRejects']\n")
    assert str(find_output_fault(remote)) == "cannot write the output /o/t/p: No space left on device"
    assert find_output_fault(ValueError("bad header")) is None


def test_reject_bases_re_raise_output_faults():
    from microturn.pipelines.ingest.dofns import Probe
    from microturn.pipelines.synthesize.dofns import ParseScript

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/o/media/x.flac")
    for step in (Probe.__new__(Probe), ParseScript.__new__(ParseScript)):
        with pytest.raises(OutputError):
            step._reject("in.wav", full)


def test_reject_messages_carry_no_heap_addresses_or_temporary_names():
    a = reject("x", "probe", ValueError(f"cannot read {io.BytesIO()!r}"))
    b = reject("x", "probe", ValueError(f"cannot read {io.BytesIO()!r}"))
    assert a == b and "0x" not in a["message"] and "BytesIO object" in a["message"]
    assert scrub("at /tmp/tmpk3j_x9a2/in.wav: <object id 0x7f12ab34cd56>") == "at /tmp/tmp.../in.wav: <object id 0x...>"
    assert scrub("sha 0a1b, 3 channels at 48000 Hz") == "sha 0a1b, 3 channels at 48000 Hz"
    # Messages quote what failed; its control and bidi characters come out as visible escapes.
    hostile = reject("x", "parse", ValueError("bad word '\x1b[2J\u202eabc\x00'\nline 2"))["message"]
    assert hostile == "bad word '\\x1b[2J\\u202eabc\\x00'\nline 2"


def test_the_stage_marker_is_the_same_bytes_on_every_run(tmp_path, records):
    a, b = tmp_path / "a", tmp_path / "b"
    shard(records, a)
    shard(records, b)
    assert (a / MARKER).read_bytes() == (b / MARKER).read_bytes()
    assert json.loads((a / MARKER).read_text()) == {"stage": "shard", "layout_version": outputs.LAYOUT_VERSION}


@pytest.mark.slow
def test_an_output_inside_a_recursive_input_glob_is_never_read_back(tmp_path, speech_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "call.wav").write_bytes((speech_dir / "call.wav").read_bytes())
    out = data / "out"
    for _ in range(2):  # the second run sees the first run's media/*.flac under data/**
        proc = run_stage("ingest", "--input", f"{data}/**", "--output", out)
        assert proc.returncode == 0, proc.stderr[-3000:]
    sources = read_table(str(out), "sources").to_pylist()
    assert [s["uri"] for s in sources] == [str(data / "call.wav")]
    assert read_table(str(out), "rejects").num_rows == 0


@pytest.mark.slow
def test_synthesize_never_reads_its_output_back_through_a_recursive_scripts_glob(tmp_path, scripts_file):
    data = tmp_path / "data"
    data.mkdir()
    (data / "two.jsonl").write_bytes(scripts_file.read_bytes())
    out = data / "out"
    tables = []
    for _ in range(2):  # the second run sees the first run's tables, media and marker under data/**
        proc = run_stage("synthesize", "--scripts", f"{data}/**", "--output", out, "--seed", "3")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert read_table(str(out), "rejects").num_rows == 0
        tables.append(read_table(str(out), "conversations").to_pylist())
    assert len(tables[0]) == 2 and tables[0] == tables[1]


@pytest.mark.slow
def test_ingest_and_synthesize_runs_in_which_every_input_fails_keep_the_earlier_output(tmp_path, speech_dir,
                                                                                      scripts_file):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "noise.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE but not audio")
    (junk / "bad.jsonl").write_text('{"id": "x", "turns": "not a list"}\n{not json\n')
    for stage, good, bad in (("ingest", ["--input", speech_dir / "*.wav"], ["--input", junk / "*.wav"]),
                             ("synthesize", ["--scripts", scripts_file], ["--scripts", junk / "*.jsonl"])):
        out = tmp_path / stage
        proc = run_stage(stage, *good, "--output", out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        before = tree(out)
        proc = run_stage(stage, *bad, "--output", out)
        assert proc.returncode not in (0, -9)
        assert error_lines(proc)[-1].startswith(f"microturn {stage}: error: every input failed"), proc.stderr[-3000:]
        assert tree(out) == before
        assert leftovers(out) == []
