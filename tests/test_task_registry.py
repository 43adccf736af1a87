"""A new task is one module: tests/fixtures/tasks/hum_task.py, named in UNIMOE_AUDIO_TASKS, runs end to
end through a real daemon (tiny model) over ZeroMQ, OSC and the Python client, with no other file
knowing it; the registry itself answers for the built-in tasks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from unimoe_audio.client import tasks

from _daemon_harness import DaemonProc, wait_final

TASKS_DIR = Path(__file__).resolve().parent / "fixtures" / "tasks"


def test_the_builtin_tasks_come_from_the_registry():
    assert [t.name for t in tasks.all_tasks()][:3] == ["speech", "music", "video_score"]
    assert tasks.get("score") is tasks.get("video_score") and tasks.get("score").kind == "score"
    assert tasks.get("speech").input_files == ("reference_audio",) and "video" in tasks.input_fields()
    assert tasks.get("video_score").osc_keys()["in"] == "in_seconds"
    from unimoe_audio.client import protocol as P

    assert set(type(P.parse_task({"task": "music", "caption": "x"})).model_fields) >= {"caption", "length", "sampling"}
    with pytest.raises(ValueError, match="registered twice"):
        tasks.register(tasks.TaskDef(name="music", spec=tasks.get("speech").spec))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    d = DaemonProc(home, keep_alive=0)
    d.env["UNIMOE_AUDIO_TASKS"] = "hum_task"
    d.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TASKS_DIR), d.env.get("PYTHONPATH", "")]))
    d.start()
    yield d
    d.close()


def test_a_task_in_one_module_runs_through_the_daemon(daemon, tmp_path):
    ch = daemon.channel(timeout=60)
    sub = ch.subscribe(["job."])
    out = daemon.home / "hums"
    # ZeroMQ: the request names the new task and its own field; the limits are its module's
    job = ch.request("submit", {"spec": {"task": "hum", "word": "moon", "brightness": 0.9,
                                         "length": {"seconds": 0.5}, "sampling": {"seed": 3}},
                                "output": {"folder": str(out), "name": "moon", "sample_rate": 24000}})
    done, _ = wait_final(sub, job["job_id"])
    assert done.msg_type == "done", done.content
    assert done.content["task"] == "hum" and done.content["seed"] == 3
    wav = Path(done.content["path"])
    assert wav == out / "moon.wav"
    audio, rate = sf.read(wav)
    assert rate == 24000 and audio.shape[0] == 12000  # 0.5 s, sample exact
    assert abs(audio).max() > 0
    side = json.loads(Path(done.content["sidecar"]).read_text())
    assert side["task"] == "hum" and side["request"]["spec"]["word"] == "moon"
    info = ch.call("job", {"job_id": job["job_id"]})
    assert info.job.task == "hum" and info.job.result.path == str(wav)
    sub.close()

    # refused at submit, naming the field: the task's own limit, its own probe, the shared limits
    for spec, field in [({"word": "moon", "brightness": 2}, "spec.brightness"),
                        ({"word": "silence"}, "spec.word"),
                        ({"word": "moon", "sampling": {"top_k": 0}}, "spec.sampling.top_k"),
                        ({"word": "moon", "colour": "red"}, "spec.colour")]:
        reply = ch.request_raw("submit", {"spec": {"task": "hum", **spec}})
        assert reply.msg_type == "error" and reply.content["field"] == field, (spec, reply.content)
    bad = ch.request_raw("submit", {"spec": {"task": "nope"}})
    assert bad.content["field"] == "spec.task" and "hum" in bad.content["wanted"]


def test_the_new_task_over_osc_and_the_python_client(daemon):
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(300)
    b = OscMessageBuilder("/unimoe/hum")
    for a in ("sun", "seconds", 0.25, "brightness", 0.2, "name", "osc-hum", "tag", "t1"):
        b.add_arg(a)
    s.sendto(b.build().dgram, ("127.0.0.1", daemon.info.osc_port))
    while True:
        m = OscMessage(s.recvfrom(65536)[0])
        assert m.address not in ("/unimoe/error", "/unimoe/failed"), m.params
        if m.address == "/unimoe/done":
            break
    s.close()
    assert Path(m.params[1]).name == "osc-hum.wav"
    assert sf.info(m.params[1]).frames == round(0.25 * 48000)

    # the Python client: flat fields from the task's module, the result's task from the done event
    code = (
        "import json\n"
        "from unimoe_audio.client.client import Client\n"
        "with Client(auto_start=False) as c:\n"
        "    r = c.submit('hum', word='star', seconds=0.3, name='client-hum').wait()\n"
        "    print(json.dumps({'task': r.task, 'path': r.path, 'seconds': r.seconds}))\n"
    )
    env = {**daemon.env, "UNIMOE_AUDIO_TASKS": "hum_task"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["task"] == "hum" and Path(res["path"]).name == "client-hum.wav" and abs(res["seconds"] - 0.3) < 1e-6
