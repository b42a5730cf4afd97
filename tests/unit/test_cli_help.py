"""`occupancy --help` explains every command, and each command's own help works."""

from click.testing import CliRunner

from occupancy.cli import main


def test_every_command_is_listed_with_a_whole_sentence():
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    for name, command in main.commands.items():
        line = next(ln for ln in result.output.splitlines() if ln.strip().startswith(name + " "))
        assert line.rstrip().endswith("."), line  # not cut short with "..."
        assert command.help, name


def test_every_command_has_its_own_help():
    runner = CliRunner()
    for name, command in main.commands.items():
        result = runner.invoke(main, [name, "--help"], terminal_width=80)
        assert result.exit_code == 0, (name, result.output)
        first_words = " ".join(command.help.split()[:4])
        assert first_words in " ".join(result.output.split()), name
    keys = runner.invoke(main, ["keys", "create", "--help"])
    assert "--role" in keys.output and "viewer" in keys.output


def test_estimate_prints_a_table_and_json():
    runner = CliRunner()
    table = runner.invoke(
        main, ["estimate", "--devices", "100000", "--interval", "5", "--retention-days", "30"]
    )
    assert table.exit_code == 0 and "20,000" in table.output and "Redis memory" in table.output
    as_json = runner.invoke(main, ["estimate", "--devices", "1000", "--interval", "1", "--json"])
    assert as_json.exit_code == 0 and '"pings_per_s": 1000.0' in as_json.output
    bad = runner.invoke(main, ["estimate", "--devices", "-5", "--interval", "1"])
    assert bad.exit_code == 2 and "positive" in bad.output
