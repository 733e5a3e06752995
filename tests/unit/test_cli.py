from click.testing import CliRunner

from stream.cli import main


def test_a_config_error_exits_nonzero_with_one_line_naming_the_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("kafka: {bootstrap_servers: 'b:9092', sesion_timeout_s: 3}\n")
    for command in ("worker", "check"):
        r = CliRunner().invoke(main, [command, "-c", str(f)])
        assert r.exit_code == 1
        assert r.output == f"Error: invalid configuration in {f}: kafka.sesion_timeout_s: unknown key\n"


def test_a_missing_config_file_is_named():
    r = CliRunner().invoke(main, ["check", "-c", "/nonexistent/stream.yaml"])
    assert r.exit_code == 1
    assert r.output == ("Error: cannot read configuration file /nonexistent/stream.yaml: "
                        "No such file or directory\n")


def test_config_reference_lists_every_key():
    r = CliRunner().invoke(main, ["config-reference"])
    assert r.exit_code == 0
    assert "| `destinations[].bucket` | `required` | S3 bucket name. |" in r.output


def test_an_unknown_stage_is_refused_with_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("projects: [{id: 1}]\n")
    r = CliRunner().invoke(main, ["worker", "-c", str(f), "--stages", "ingest,dedup"])
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: invalid configuration in {f}: worker.stages[1]: Input should be ")
