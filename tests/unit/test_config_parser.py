"""engine.config.parser: NAME.conf read as data, never by a shell."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import build_config, parse_bytes, parse_text
from engine.errors import ConfigError

PATH = "/etc/vserver/web.conf"


def values(text: str) -> dict[str, str]:
    doc = parse_text(text, PATH)
    assert not doc.errors, [str(e) for e in doc.errors]
    return {k: e.value for k, e in doc.assignments().items()}


def errors(text: str) -> list[str]:
    return [str(e) for e in parse_text(text, PATH, "web").errors]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=b\n", "b"),
        ('A="b c"\n', "b c"),
        ("A='b $c `d`'\n", "b $c `d`"),
        ("export A=b\n", "b"),
        ("  export   A='x'\n", "x"),
        ("A=b # comment\n", "b"),
        ('A="b # not a comment"\n', "b # not a comment"),
        ("A=b#c\n", "b#c"),
        ("A=#b\n", "#b"),
        ("A=\n", ""),
        ('A=""\n', ""),
        ("A=b", "b"),  # no final newline
        ('A="x\\"y\\\\z\\$"\n', 'x"y\\z$'),
        ('A="keep \\n"\n', "keep \\n"),
        ("A=a\\ b\n", "a b"),
        ('A="one \\\ntwo"\n', "one two"),
        ("A=one\\\ntwo\n", "onetwo"),
        ('A="line1\nline2"\n', "line1\nline2"),
        ("A='it'\\''s'\n", "it's"),
        ("A=\"a\"b'c'\n", "abc"),
        ("A=x\t# tab comment\n", "x"),
        ("A=\u201dyes\u201d\n", "yes"),
        ("A=\u201cx y\u201d\n", "x y"),
        ("A=\u2018x\u2019\n", "x"),
        ("A=10.0.0.1/24\n", "10.0.0.1/24"),
    ],
)
def test_values_read_as_a_shell_would(text: str, expected: str) -> None:
    assert values(text)["A"] == expected


def test_comments_blank_lines_and_continuations_keep_line_numbers() -> None:
    text = '# head\n\nA=1\nB="x \\\n  y"\n\n  # indented comment\nC=3 # trailing\n'
    doc = parse_text(text, PATH)
    got = {e.key: e.line for e in doc.entries if e.key}
    assert got == {"A": 3, "B": 4, "C": 8}
    assert doc.text() == text  # every byte kept for the writer


def test_curly_quotes_are_accepted_with_one_warning_per_line() -> None:
    doc = parse_text("ONBOOT=\u201dyes\u201d\n", PATH)
    assert doc.assignments()["ONBOOT"].value == "yes"
    assert len(doc.warnings) == 1
    assert doc.warnings[0].startswith(f"{PATH}:1: ONBOOT: curly quote")


def test_quotes_inside_comments_open_nothing() -> None:
    assert values("# don't \"quote\" me\nA=1 # it's fine\n") == {"A": "1"}


def test_later_assignment_wins_and_is_warned_about() -> None:
    doc = parse_text("A=1\nB=2\nA=3\n", PATH)
    assert doc.assignments()["A"].value == "3"
    cfg, errs = build_config("web", doc)
    assert not errs
    assert any(":3: A: set again (line 1)" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('if [ "$PROFILE" = "" ] ; then PROFILE=prod ; fi\n', 1, "shell code (if)"),
        ("A=1\ncase $PROFILE in\n", 2, "shell code (case)"),
        ("prod)   IPROOT=1.2.3.4 ; S_HOSTNAME=app ;;\n", 1, "shell code (prod)"),
        (";;\n", 1, "shell code"),
        ("esac\n", 1, "shell code (esac)"),
        ("fi\n", 1, "shell code (fi)"),
        ("A=$B\n", 1, "A: '$' asks the shell to expand"),
        ('A="x $B"\n', 1, "A: '$' asks the shell"),
        ("A=$(hostname)\n", 1, "A: '$' asks the shell"),
        ("A=`hostname`\n", 1, "A: backticks run a command"),
        ('\nA="`id`"\n', 2, "A: backticks run a command"),
        ("A=1 ; B=2\n", 1, "A: '; B=2' is shell code"),
        ("A=1 | tee x\n", 1, "shell code"),
        ("A=a b\n", 1, "A: unquoted space before 'b'"),
        ("A=x&\n", 1, "A: '&' is shell syntax"),
        ("echo hello\n", 1, "'echo hello' is not a KEY=value line"),
        ("1A=x\n", 1, "'1A' is not a variable name"),
        ("A-B=x\n", 1, "'A-B' is not a variable name"),
        ('A="open\nB=2\n', 1, "quote is never closed"),
        ("A='open\n", 1, "quote is never closed"),
        ("A=x\0\n", 1, "NUL byte"),
    ],
)
def test_shell_code_is_refused_with_file_and_line(text: str, line: int, fragment: str) -> None:
    found = errors(text)
    assert found, "expected an error"
    assert found[0].startswith(f"{PATH}:{line}: ")
    assert fragment in found[0]


def test_error_inside_a_continued_line_names_the_physical_line() -> None:
    found = errors('A="x \\\ny" \\\n $B\n')
    assert found[0].startswith(f"{PATH}:2: ") or found[0].startswith(f"{PATH}:3: ")


def test_all_errors_are_collected() -> None:
    assert len(errors("if x\nA=$B\nfi\nC=ok\n")) == 3


def test_non_utf8_bytes_are_one_error() -> None:
    doc = parse_bytes(b"A=1\nB=\xff\xfe\n", PATH)
    assert len(doc.errors) == 1
    assert str(doc.errors[0]).startswith(f"{PATH}:2: ")
    assert "UTF-8" in str(doc.errors[0])


# -- property tests: the parser only ever raises ConfigError (or nothing) ----------------
def _parse_and_build(data: bytes) -> None:
    doc = parse_bytes(data, PATH, "web")
    for err in doc.errors:
        assert isinstance(err, ConfigError)
        assert err.line is None or err.line >= 1
        assert "\n" not in err.message
    build_config("web", doc)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    _parse_and_build(data)


_KEYS = st.sampled_from(
    ["IPROOT", "S_CAPS", "ULIMIT", "S_FLAGS", "V_MEMORY", "V_SHARE", "V_MOUNT", "S_CONTEXT",
     "V_BANDWIDTH_OUT", "V_CPU_QUOTA", "S_HOSTNAME", "IPROOTMASK", "V_SECCOMP", "ONBOOT",
     "V_PROC_HIDE", "V_STOP_TIMEOUT", "S_NICE", "X_UNKNOWN", "export IPROOT", "1BAD"]
)  # fmt: skip
_PIECES = st.sampled_from(
    ["10.0.0.1", "/24", "eth0:", "2001:db8::1", "/255.255.255.0", "-HS", "-u", "1000",
     "unlimited", "CAP_NET_RAW", "!", "~", "lock", "minit", "256M", "10mbit", "50%", " ",
     "\t", '"', "'", "\u201d", "\u2018", "\\", "\\\n", "#", "$", "`", ";", ";;", ")", "(",
     "if ", "case ", "esac", ":", "/srv:/x:rw", "nfs1:/e:/m:nfs:ro", "..", "+keyctl", "=",
     "\n", "\0", "é", "0", "-1", "49152", "yes", "/proc/kcore"]
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(_KEYS, st.lists(_PIECES, max_size=8)), max_size=6))
def test_near_valid_lines_never_crash(lines: list[tuple[str, list[str]]]) -> None:
    text = "".join(f"{key}={''.join(pieces)}\n" for key, pieces in lines)
    _parse_and_build(text.encode())
