"""eval/cli.py: every argument that names a file or URL is declared so, and checked before any work."""

import argparse

import pytest

from eval import cli
from eval.options import Url
from shards.errors import UserError

# the string options that name no file or URL; any other must be declared type=Url
PLAIN_TEXT = {"split", "format", "run", "epochs"}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_the_parser_offers_every_command_and_each_has_its_module():
    assert set(_subcommands()) == {
        "evaluate",
        "score",
        "leaderboard",
        "watch",
        "tune",
        "lm",
        "average",
        "transcribe",
        "export",
    }
    assert set(cli.COMMANDS) == set(_subcommands())
    for name in cli.COMMANDS:
        assert callable(cli.command_module(name).add_arguments) and callable(cli.command_module(name).run)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_string_argument_is_a_url_or_named_plain_text(command):
    for action in _arguments(_subcommands()[command]):
        takes_text = action.nargs != 0 and action.type is None and action.choices is None
        assert not takes_text or action.dest in PLAIN_TEXT, (
            f"eval {command} {action.option_strings or action.dest}: a string argument neither type=Url "
            f"nor in PLAIN_TEXT"
        )


def _url_arguments() -> list[tuple[str, argparse.Action]]:
    return [
        (command, action)
        for command, parser in sorted(_subcommands().items())
        for action in _arguments(parser)
        if action.type is Url
    ]


def _argv(command: str, refused: argparse.Action) -> list[str]:
    """The command with each required argument given (the first of a required choice, or of its
    choices), and ``refused`` given a URL the check refuses."""
    parser = _subcommands()[command]
    argv = [command]
    for group in parser._mutually_exclusive_groups:
        if group.required:
            argv += [group._group_actions[0].option_strings[0], "1"]
    for action in _arguments(parser):
        value = "refused://x" if action.dest == refused.dest else "local/none"
        if action.choices and action.dest != refused.dest:
            value = next(iter(action.choices))
        if not action.option_strings:
            argv.append(value)
        elif action.required or action.dest == refused.dest:
            argv += [action.option_strings[0], value]
    return argv


@pytest.mark.parametrize(
    "command, action",
    _url_arguments(),
    ids=[f"{c} {a.option_strings[0] if a.option_strings else a.dest}" for c, a in _url_arguments()],
)
def test_each_url_argument_is_checked_before_any_work(command, action, monkeypatch, capsys):
    def check_access(url: str) -> None:
        if url.startswith("refused://"):
            raise UserError(f"{url}: access refused")

    def no_work(args):
        raise AssertionError("the command ran before its URLs were checked")

    monkeypatch.setattr(cli.s3, "check_access", check_access)
    monkeypatch.setattr(cli.command_module(command), "run", no_work)
    assert cli.main(_argv(command, action)) == 2
    assert capsys.readouterr().err.strip() == "error: refused://x: access refused"


def test_the_url_arguments_are_the_ones_a_user_expects():
    declared = {(c, a.dest) for c, a in _url_arguments()}
    for expected in [
        ("evaluate", "checkpoints"),
        ("watch", "checkpoints"),
        ("evaluate", "lm"),
        ("evaluate", "solution"),
        ("watch", "html"),
        ("transcribe", "inputs"),
        ("score", "submission"),
        ("lm", "out"),
    ]:
        assert expected in declared
