"""Panel polish after a daemon goes away and comes back (issue #22): the tiny-model banner leaves with the
daemon, a red "Not sent" is cleared once a daemon is connected again, a finished take's stage stays
"done" when the queue is listed again, and the ETA shows before the daemon has timed its first steps.
Real daemons on the tiny model, Qt offscreen through pytest-qt."""
from __future__ import annotations

import time

from _daemon_harness import DaemonProc
from _gui_harness import connected_panel, generate_music, wait_done, wait_until

from unimoe_audio.client import protocol as P
from unimoe_audio.client.jobs import JobUpdate
from unimoe_audio.gui.backend import update_values
from unimoe_audio.gui.jobs_model import COL_ETA, COL_STAGE, JobRow, JobsModel


def test_banner_error_and_stage_across_a_daemon_restart(qtbot, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    first = DaemonProc(home).start()
    try:
        panel = connected_panel(qtbot, first.settings)
        wait_until(lambda: panel.tiny_warning.isVisible(), 60, "the tiny-model banner", panel)
        job = wait_done(panel, generate_music(panel, "before the restart", seconds=1.0, seed=3)).job_id
        row = lambda: panel.jobs._rows[panel.jobs.row_of(job)]  # noqa: E731
        stage = lambda: panel.jobs.data(panel.jobs.index(panel.jobs.row_of(job), COL_STAGE))  # noqa: E731
        assert stage() == "done"
        with first.channel(timeout=60) as ch:  # what the daemon keeps as the stage is its last step
            last_step = ch.request("job", {"job_id": job})["job"]["stage"]
        assert last_step and last_step != "done"
        first.terminate()
        wait_until(lambda: not panel.online, 60, "the panel to notice the daemon left", panel)
        assert not panel.tiny_warning.isVisible()  # no daemon: nothing is serving, tiny or not
        panel.generate()
        assert panel.error_label.isVisible() and "Not sent" in panel.error_label.text()

        second = DaemonProc(home).start()  # the same queue: the finished take is listed again
        try:
            wait_until(lambda: panel.online, 60, "the panel to reconnect", panel)
            wait_until(lambda: panel.status is not None and panel.status.pid == second.proc.pid, 60, "a status",
                       panel)
            assert not panel.error_label.isVisible() and panel.error_label.text() == ""
            assert panel.tiny_warning.isVisible()  # the new daemon serves the tiny model again
            assert row().state == "done" and stage() == "done"
            panel.close()
        finally:
            second.close()
    finally:
        first.close()


def test_eta_shows_before_the_daemon_gives_one(qtbot):
    model = JobsModel()
    model.add(JobRow(job_id="j1", task="music"))
    eta = lambda: model.data(model.index(0, COL_ETA))  # noqa: E731
    assert eta() == ""
    # started, then the first steps: the daemon sends no eta yet (fraction under its threshold)
    model.apply("j1", **update_values(JobUpdate(kind="started", job_id="j1", state="running")))
    time.sleep(0.05)
    ev = P.ProgressEvent(job_id="j1", fraction=0.05, stage="decode", eta_s=None)
    model.apply("j1", **update_values(JobUpdate(kind="progress", job_id="j1", fraction=0.05, stage="decode",
                                                state="running", event=ev)))
    assert eta().endswith("s") and eta() != "", eta()  # from the row's own pace
    # a daemon estimate wins, and a later event without one does not erase it
    ev = P.ProgressEvent(job_id="j1", fraction=0.06, stage="decode", eta_s=125.0)
    model.apply("j1", **update_values(JobUpdate(kind="progress", job_id="j1", fraction=0.06, state="running", event=ev)))
    assert eta() == "2:05"
    ev = P.ProgressEvent(job_id="j1", fraction=0.07, stage="decode", eta_s=None)
    model.apply("j1", **update_values(JobUpdate(kind="progress", job_id="j1", fraction=0.07, state="running", event=ev)))
    assert eta() == "2:05"
    # a finished take shows none, and its stage stays "done" whatever a late update names
    model.apply("j1", state="done", fraction=1.0, stage="done")
    model.apply("j1", state="done", stage="finish")
    assert eta() == "" and model.data(model.index(0, COL_STAGE)) == "done"
