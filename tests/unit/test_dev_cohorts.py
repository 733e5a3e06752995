"""`stream dev`'s cohorts demo: the lines it prints of the admin API's "sync now" answer and a cohort's history."""

from stream.devstack.dev import asked_syncs, completed_syncs, dev_config, sync_now_lines, wanted_syncs


def test_a_sync_now_answer_is_one_line_per_sync():
    answer = {"cohort": "buyers", "syncs": [
        {"destination": "local-cohorts", "routing_key": "", "cadence": "once", "state": "queued",
         "scheduled_ms": 1_700_000_040_000, "latest_completed_ms": None, "failures": 0},
        {"destination": "other", "routing_key": "", "cadence": "daily", "state": "complete",
         "scheduled_ms": None, "latest_completed_ms": 1_699_920_000_000, "failures": 0}]}
    assert sync_now_lines("buyers", answer) == ["sync now: buyers -> local-cohorts (once): queued",
                                                "sync now: buyers -> other (daily): complete"]


def test_only_the_completed_syncs_of_a_history_are_printed():
    done = {"destination": "local-cohorts", "routing_key": "", "stamp": "2026-12-06T02:21", "state": "complete",
            "members": 5, "entering": 5, "exiting": 0, "keys": {"entering": "a", "exiting": "b", "existing": "c"}}
    failed = {"destination": "local-cohorts", "routing_key": "", "stamp": "2026-12-06T02:20", "state": "failed",
              "reason": "events", "error": "NotPassed: ..."}
    assert completed_syncs({"history": [failed, done]}) == [done]
    assert completed_syncs({"history": [failed]}) == []


def test_the_demo_worker_runs_the_cohorts_stage_itself(tmp_path):
    main = dev_config("127.0.0.1:9092", "http://127.0.0.1:5000", tmp_path)
    assert main["worker"]["stages"] == ["ingest", "dedupe", "export", "import", "mirror", "profiles", "cohorts"]
    assert main["cohort_state"] == {"grace_s": 2}
    assert [(s["cohort"], s["cadence"]) for s in main["cohort_destinations"][0]["syncs"]] == [("buyers", "once"),
                                                                                            ("vips", "once")]


def test_the_demo_waits_for_the_syncs_its_sync_now_asked_for_not_the_empty_first_one():
    answer = {"cohort": "buyers", "syncs": [
        {"destination": "local-cohorts", "routing_key": "", "cadence": "once", "state": "queued",
         "scheduled_ms": 1_700_000_040_000, "latest_completed_ms": 1_699_999_980_000, "failures": 0},
        {"destination": "other", "routing_key": "", "cadence": "daily", "state": "complete",
         "scheduled_ms": None, "latest_completed_ms": 1_699_920_000_000, "failures": 0}]}
    asked = asked_syncs(answer)
    assert asked == [("local-cohorts", "", 1_700_000_040_000), ("other", "", None)]

    def sync(dest, ms, members):
        return {"destination": dest, "routing_key": "", "scheduled_ms": ms, "state": "complete", "members": members}
    first, daily = sync("local-cohorts", 1_699_999_980_000, 0), sync("other", 1_699_920_000_000, 4)
    assert wanted_syncs({"history": [daily, first]}, asked) is None
    later = sync("local-cohorts", 1_700_000_100_000, 7)      # stamped a minute later than asked
    assert wanted_syncs({"history": [daily, first, later]}, asked) == [later, daily]
    asked_one = sync("local-cohorts", 1_700_000_040_000, 6)
    assert wanted_syncs({"history": [daily, first, asked_one, later]}, asked) == [asked_one, daily]
