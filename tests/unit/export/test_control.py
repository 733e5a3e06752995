from stream.export.control import Control, cancel_record, exports_record


def test_the_control_state_is_the_latest_record_of_each_exporter_and_cancellations():
    c = Control()
    for key, value in [exports_record("main", False, 1, "cli"), exports_record("seg.merged-ids", False, 2, "api"),
                       exports_record("main", True, 3, "cli"), exports_record("main", False, 4, "cli"),
                       cancel_record("bf-1", 5, "api")]:
        c.add(value)
    assert c.paused == {"main": 4, "seg.merged-ids": 2}
    assert (c.is_paused("main"), c.is_paused("main.merged-ids"), c.is_paused("seg"),
            c.is_paused("seg.merged-ids")) == (True, True, False, True)   # a destination off: both data sets
    assert c.cancelled == {"bf-1"}
    assert exports_record("main", True, 3, "cli")[0] == b"exports/main"
