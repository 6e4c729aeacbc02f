"""tfevents_decode.py — an independent reader of TensorBoard event files (no TensorFlow, no TensorBoard):
the record framing checked with crcmod's CRC-32C, each Event parsed by protobuf from the minimal
tests/reference/tfevents.proto (compiled with protoc into a temporary directory).

    python3 tfevents_decode.py check RUN LOG.jsonl [--uninterrupted RUN2]

checks every event file of RUN/tb/{train,valid} (every CRC, the first event is file_version
"brain.Event:2" and the second a SessionLog START, a text summary "recipe" in each train file), merges
each side's files in name order as TensorBoard's plugin_event_accumulator does (the run's first START
is its start; a later START at step s drops the older files' points at steps >= s) and compares every (step, tag) with LOG.jsonl: the train
side holds every scalar of each line, the valid side valid_NAME as NAME, and both hold nothing else.
With --uninterrupted, the merged series equal RUN2's (timing tags excluded). With --partial (a run whose
TensorBoard files met a full disk), a side may stop early: it holds log.jsonl's points up to its last
step, every one of them, and nothing after."""
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile

import crcmod.predefined

HERE = os.path.dirname(os.path.abspath(__file__))
CRC32C = crcmod.predefined.mkCrcFun("crc-32c")
TIMING = {"audio_s_per_s", "comm_time_s", "elapsed_s", "max_rss_mb"}


def load_pb2():
    out = tempfile.mkdtemp(prefix="tfevents_pb.")
    subprocess.run(["protoc", f"--python_out={out}", f"-I{HERE}", os.path.join(HERE, "tfevents.proto")], check=True)
    sys.path.insert(0, out)
    import tfevents_pb2
    return tfevents_pb2


pb = load_pb2()


def masked(data):
    c = CRC32C(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
    """Every Event of one file; every record's two CRCs must hold and the file must end on a record."""
    data = open(path, "rb").read()
    pos, events = 0, []
    while pos < len(data):
        assert pos + 12 <= len(data), f"{path}: truncated record header at byte {pos}"
        head = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", head)
        (hcrc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert hcrc == masked(head), f"{path}: bad length CRC at byte {pos}"
        body = data[pos + 12:pos + 12 + n]
        assert len(body) == n and pos + 16 + n <= len(data), f"{path}: truncated record at byte {pos}"
        (bcrc,) = struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])
        assert bcrc == masked(body), f"{path}: bad event CRC at byte {pos}"
        ev = pb.Event()
        ev.ParseFromString(body)
        assert ev.SerializeToString() == body, f"{path}: record at byte {pos} is not canonical protobuf"
        events.append(ev)
        pos += 16 + n
    return events


def merged_side(run, side):
    """{tag: {step: value}} over the side's files in name order, with TensorBoard's purge on a START."""
    files = sorted(glob.glob(os.path.join(run, "tb", side, "events.out.tfevents.*")))
    assert files, f"no event files in {run}/tb/{side}"
    series, starts = {}, []
    for path in files:
        events = read_events(path)
        first = events[0]
        assert first.WhichOneof("what") == "file_version" and first.file_version == "brain.Event:2", (path, first)
        assert events[1].WhichOneof("what") == "session_log", (path, events[1])
        texts = []
        for ev in events[1:]:
            what = ev.WhichOneof("what")
            if what == "session_log":
                assert ev.session_log.status == pb.SessionLog.START, (path, ev)
                starts.append(ev.step)
                if len(starts) == 1:
                    continue  # the run's first START: its start, not a restart
                for s in series.values():
                    for step in [k for k in s if k >= ev.step]:
                        del s[step]
            elif what == "summary":
                for v in ev.summary.value:
                    if v.WhichOneof("value") == "tensor":
                        assert v.metadata.plugin_data.plugin_name == "text", (path, v)
                        assert v.tensor.dtype == 7 and len(v.tensor.tensor_shape.dim) == 0, (path, v)  # a scalar string
                        texts.append((v.tag, v.tensor.string_val[0].decode()))
                    else:
                        series.setdefault(v.tag, {})[ev.step] = v.simple_value
            else:
                raise AssertionError(f"{path}: unexpected event {ev}")
        if side == "train":
            assert len(texts) == 1 and texts[0][0] == "recipe" and "[optim]" in texts[0][1], (path, texts)
    return series, starts, len(files)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected(log):
    """The series log.jsonl implies: {side: {tag: {step: float32 value}}}; only numbers are scalars."""
    want = {"train": {}, "valid": {}}
    for line in open(log):
        row = json.loads(line)
        step = row.pop("step")
        for k, v in row.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue  # null, and strings such as the first line's "version"
            side, tag = ("valid", k[6:]) if k.startswith("valid_") else ("train", k)
            want[side].setdefault(tag, {})[step] = f32(float(v))
    return want


def check(run, log, uninterrupted=None, partial=False):
    want = expected(log)
    for side in ("train", "valid"):
        got, starts, nfiles = merged_side(run, side)
        if partial:
            last = max((step for s in got.values() for step in s), default=0)
            want[side] = {t: kept for t, s in want[side].items()
                          if (kept := {step: v for step, v in s.items() if step <= last})}
        assert got == want[side], (side, sorted(got), sorted(want[side]),
                                   [(t, s, got.get(t, {}).get(s), v) for t in want[side]
                                    for s, v in want[side][t].items() if got.get(t, {}).get(s) != v][:5])
        assert len(starts) == nfiles, (side, starts, nfiles)  # one START per file
        if uninterrupted:
            ref, _, _ = merged_side(uninterrupted, side)
            drop = lambda s: {t: v for t, v in s.items() if t not in TIMING}
            assert drop(got) == drop(ref), (side, "the resumed series differ from the uninterrupted run's")
        n = sum(len(v) for v in got.values())
        upto = f" (up to step {max((k for v in got.values() for k in v), default=0)})" if partial else ""
        print(f"{run}/tb/{side}: {nfiles} file(s) starting at steps {starts}, {len(got)} tags, {n} points equal "
              f"log.jsonl's{upto}")


if __name__ == "__main__":
    args = sys.argv[1:]
    assert args[0] == "check", __doc__
    ref = None
    partial = "--partial" in args
    if partial:
        args.remove("--partial")
    if "--uninterrupted" in args:
        i = args.index("--uninterrupted")
        ref = args[i + 1]
        del args[i:i + 2]
    check(args[1], args[2], ref, partial)
