"""`osteoscreen --help` and each command's `--help` print their text and exit 0 (a '%' in a help
string once made argparse raise a traceback instead)."""

import pytest

from OsteoScreenLib.cli import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("argv", [["--help"]] + [[command, "--help"] for command in COMMANDS])
def test_help_prints_and_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: ")
    if argv == ["--help"]:
        assert all(command in text for command in COMMANDS)
        assert "95 % Hausdorff" in text


def test_every_documented_command_is_there():
    assert {"info", "convert", "phantom", "segment", "classify", "screen", "evaluate-segmentation", "demo"} <= set(COMMANDS)
