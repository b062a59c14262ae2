"""What survives a restart of a real ``ltcai serve`` subprocess (FAKE engine plugin).

Job records and profiles come back after a clean stop; a job running when the daemon
was SIGKILLed comes back INTERRUPTED; the engine it had started dies with it (parent-
death signal) and whatever that engine left in its process group is reaped by the next
daemon; a corrupt state file is set aside and the daemon starts anyway.
"""

from __future__ import annotations

import json
import signal

from ltcai_fake_engine import PHASE_STATE


def test_jobs_and_profiles_survive_a_clean_restart(start_daemon):
    first = start_daemon()
    ok = first.report("fake-ok")
    failed = first.report("fake-fail-download")
    profiles_before = first.client.get("/profiles").json()["profiles"]
    assert first.stop(signal.SIGTERM) == 0
    assert (first.state_dir / "jobs" / f"{ok['job_id']}.json").is_file()

    second = start_daemon()
    jobs = {j["job_id"]: j for j in second.client.get("/jobs").json()["jobs"]}
    assert (jobs[ok["job_id"]]["status"], jobs[ok["job_id"]]["state"]) == ("ok", "ready")
    assert (jobs[failed["job_id"]]["status"], jobs[failed["job_id"]]["state"]) == ("failed", "failed")
    shown = second.client.get(f"/jobs/{failed['job_id']}").json()
    assert shown["report"]["error"] == failed["error"]
    assert shown["report"]["stage_logs"] == failed["stage_logs"]
    replay = list(second.events("GET", f"/jobs/{ok['job_id']}/events"))
    assert replay[-1]["report"]["state"] == "ready"
    assert [e["state"] for e in replay if e["type"] == "state"][-1] == "ready"
    assert second.client.get("/profiles").json()["profiles"] == profiles_before
    # Models are not: their engines stopped with the old daemon.
    assert second.client.get("/models").json()["models"] == []

    listing = second.cli("jobs")
    assert listing.returncode == 0
    assert ok["job_id"] in listing.stdout and failed["job_id"] in listing.stdout
    profiles = second.cli("profiles", "--json")
    assert "fake:fake-ok" in {p["key"] for p in json.loads(profiles.stdout)}


def test_a_job_running_at_sigkill_is_interrupted_and_its_engines_do_not_survive(start_daemon, pid_alive, wait_until):
    """SIGKILL mid-job (FAKE engine hangs in load): the server dies with the daemon
    (parent-death signal); a child it left in its process group is reaped at restart."""
    first = start_daemon()
    model = "fake-hang-load-helper"
    job_id = first.start_job(model)
    first.wait_for_state(job_id, PHASE_STATE["load"])
    server = first.engine_pid(model)
    helper = int(first.engine_line(server, "HELPER ").split()[1])
    first.kill()

    wait_until(lambda: not pid_alive(server))
    assert pid_alive(helper), "the helper is the leftover the next daemon must reap"
    assert first.socket_path.exists()  # stale: nobody removed it

    second = start_daemon()
    wait_until(lambda: not pid_alive(helper))
    job = second.client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "interrupted"
    assert job["status"] == "interrupted"
    assert job["report"]["error"]["code"] == "interrupted"
    assert job["report"]["error"]["state"] == "model_loading"
    assert job["report"]["ready_to_chat"] is False
    assert second.client.get("/status").json()["jobs_running"] == 0
    reaped = [e for e in second.log_events() if e.get("event") == "reaping engine left by a previous daemon"]
    assert [e["pgid"] for e in reaped] == [server]
    # The record now says interrupted on disk too, and a new prepare of it works.
    record = json.loads((second.state_dir / "jobs" / f"{job_id}.json").read_text())
    assert record["machine"]["state"] == "interrupted"
    assert second.report("fake-ok-after-kill")["state"] == "ready"


def test_corrupt_state_files_are_set_aside_and_the_daemon_starts(start_daemon, daemon_root):
    first = start_daemon()
    kept = first.report("fake-ok")
    assert first.stop() == 0
    state = daemon_root / "d" / "state"
    (state / "profiles.json").write_bytes(b"{\x00garbage")
    (state / "jobs" / "badjob.json").write_text("[[[not json")
    (state / "engines.json").write_text("}")

    second = start_daemon()
    assert second.client.get("/status").status_code == 200
    aside = sorted(p.name.split(".corrupt-")[0] for p in state.rglob("*.corrupt-*"))
    assert aside == ["badjob.json", "engines.json", "profiles.json"]
    assert not (state / "jobs" / "badjob.json").exists()
    assert second.client.get("/profiles").json()["profiles"] == []
    assert [j["job_id"] for j in second.client.get("/jobs").json()["jobs"]] == [kept["job_id"]]
    warnings = [e for e in second.log_events() if e.get("event") == "state file corrupt; set aside"]
    assert len(warnings) == 3 and all(e["level"] == "warning" for e in warnings)
    # And it works: a prepare writes fresh, valid state.
    assert second.report("fake-ok-again")["state"] == "ready"
    assert json.loads((state / "profiles.json").read_text())


def test_state_files_of_the_wrong_shape_do_not_stop_the_daemon(start_daemon, daemon_root):
    first = start_daemon()
    kept = first.report("fake-ok")
    assert first.stop() == 0
    state = daemon_root / "d" / "state"
    record = json.loads((state / "jobs" / f"{kept['job_id']}.json").read_text())
    (state / "profiles.json").write_text('["a list", "not an object"]')
    (state / "jobs" / "list.json").write_text("[1, 2, 3]")
    (state / "jobs" / "string.json").write_text('"just a string"')
    (state / "jobs" / "badresolution.json").write_text(
        json.dumps({**record, "machine": {**record["machine"], "job_id": "badresolution"}, "resolution": "nope"})
    )
    (state / "jobs" / "badmachine.json").write_text(json.dumps({"machine": {"version": 99}}))
    (state / "engines.json").write_text('{"not": "a list"}')

    second = start_daemon()
    assert second.client.get("/status").status_code == 200
    job_ids = {j["job_id"] for j in second.client.get("/jobs").json()["jobs"]}
    assert kept["job_id"] in job_ids
    assert "badmachine" not in job_ids and "list" not in job_ids
    assert second.report("fake-ok-again")["state"] == "ready"
