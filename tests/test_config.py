"""Config: layers, typing, unknown keys with their key path, TOML round trip, check-config."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

import edge.config as config_module
from edge.config import SECTIONS, Config, load_config, parse_assignment, to_toml
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch, tmp_path):
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_env():
    config = load_config(env={})
    assert config == Config()
    assert config.camera.source == "auto"
    assert config.button.pin == "GPIO17"
    assert config.vision.threads == 0 and config.vision.max_faces == 6
    assert config.vision.model_path == REPO / "models" / "expression.json"


def test_unknown_key_in_file_names_key_path_and_suggestion(tmp_path):
    path = write(tmp_path, '[speech]\nvocie = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert "speech.vocie: unknown key" in message
    assert "did you mean speech.voice?" in message
    assert str(path) in message


def test_unknown_section_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"vison: unknown section; did you mean vision\?"):
        load_config(write(tmp_path, "[vison]\nthreads = 2\n"), env={})


def test_wrong_type_names_key_and_expected_type(tmp_path):
    with pytest.raises(ConfigError, match=r"camera\.width: expected an integer, got 'wide'"):
        load_config(write(tmp_path, '[camera]\nwidth = "wide"\n'), env={})
    with pytest.raises(ConfigError, match=r"vision\.threads: expected an integer, got True"):
        load_config(write(tmp_path, "[vision]\nthreads = true\n"), env={})


def test_bad_choice_lists_valid_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, '[vision]\nbackend = "tensorrt"\n'), env={})
    assert "vision.backend: 'tensorrt' is not one of 'tflite', 'onnx'" in str(err.value)


def test_range_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"speech\.rate: 3\.0 is above the maximum 2\.0"):
        load_config(write(tmp_path, "[speech]\nrate = 3.0\n"), env={})
    with pytest.raises(ConfigError, match=r"vision\.threads: -1 is below the minimum 0"):
        load_config(write(tmp_path, "[vision]\nthreads = -1\n"), env={})


def test_int_accepted_for_float_field(tmp_path):
    config = load_config(write(tmp_path, "[speech]\nrate = 2\n"), env={})
    assert config.speech.rate == 2.0 and isinstance(config.speech.rate, float)


def test_env_overrides_are_typed_by_field():
    config = load_config(
        env={
            "GLASSES_CAMERA__SOURCE": "2",
            "GLASSES_CAMERA__LOOP": "yes",
            "GLASSES_CAMERA__WIDTH": "320",
            "GLASSES_SPEECH__RATE": "1.5",
            "GLASSES_SPEECH__VERBOSITY": "verbose",
            "GLASSES_UNRELATED": "ignored: no section separator",
        }
    )
    assert config.camera.source == 2
    assert config.camera.loop is True
    assert config.camera.width == 320
    assert config.speech.rate == 1.5
    assert config.speech.verbosity == "verbose"
    assert load_config(env={"GLASSES_CAMERA__SOURCE": "/dev/video1"}).camera.source == "/dev/video1"
    assert load_config(env={"GLASSES_CAMERA__LOOP": "off"}).camera.loop is False


def test_env_errors_name_variable_and_key_path():
    with pytest.raises(ConfigError, match=r"GLASSES_VISION__THREADS: vision\.threads: expected an integer, got 'many'"):
        load_config(env={"GLASSES_VISION__THREADS": "many"})
    with pytest.raises(ConfigError, match=r"GLASSES_SPEECH__VOCIE: speech\.vocie: unknown key; did you mean speech\.voice\?"):
        load_config(env={"GLASSES_SPEECH__VOCIE": "x"})
    with pytest.raises(ConfigError, match=r"camera\.loop: expected true/false, got 'maybe'"):
        load_config(env={"GLASSES_CAMERA__LOOP": "maybe"})


def test_layers_file_then_env_then_flags(tmp_path):
    path = write(tmp_path, "[app]\ncontinuous_interval_s = 5.0\n[vision]\nthreads = 3\nmax_faces = 2\n")
    config = load_config(
        path,
        env={"GLASSES_VISION__THREADS": "4", "GLASSES_VISION__MAX_FACES": "3"},
        overrides=dict([parse_assignment("vision.max_faces=1")]),
    )
    assert config.app.continuous_interval_s == 5.0  # file
    assert config.vision.threads == 4  # env over file
    assert config.vision.max_faces == 1  # flag over env


def test_edge_hw_env_alias():
    assert load_config(env={"EDGE_HW": "fake"}).app.hw == "fake"
    assert load_config(env={"EDGE_HW": "fake"}).app.use_real_hw is False


def test_serial_light_source_needs_the_bridge_port(tmp_path):
    with pytest.raises(ConfigError, match=r'light\.source = "serial" needs bridge\.port'):
        load_config(write(tmp_path, '[light]\nsource = "serial"\n'), env={})
    config = load_config(write(tmp_path, '[light]\nsource = "serial"\n[bridge]\nport = "sim"\n'), env={})
    assert (config.light.source, config.bridge.port) == ("serial", "sim")


def test_thresholds_need_hysteresis(tmp_path):
    with pytest.raises(ConfigError, match=r"light\.day_lux \(5\.0\) must be greater than light\.night_lux"):
        load_config(write(tmp_path, "[light]\nday_lux = 5.0\n"), env={})


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[camera\n"), env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_parse_assignment_rejects_malformed():
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        parse_assignment("verbosity")


def test_to_toml_round_trips_a_changed_config(tmp_path):
    changed = load_config(
        env={},
        overrides={
            "camera.source": "/data/clip \"one\".mp4",
            "camera.loop": True,
            "speech.verbosity": "verbose",
            "light.night_lux": 3.5,
            "app.hw": "fake",
        },
    )
    again = load_config(write(tmp_path, to_toml(changed)), env={})
    assert again == changed
    assert again != Config()


def test_example_config_documents_every_key_with_defaults():
    path = REPO / "examples" / "config.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    expected = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
    assert {section: set(table) for section, table in data.items()} == expected
    assert load_config(path, env={}) == Config()
    text = path.read_text(encoding="utf-8")
    for cls in SECTIONS.values():
        for doc in config_module.field_docs(cls).values():
            assert doc.splitlines()[0] in text


def run_cli(monkeypatch, argv):
    import edge.__main__ as entry

    monkeypatch.setattr(entry, "COMMANDS", {"check-config": entry.COMMANDS["check-config"]})
    return entry.main(argv)


def test_check_config_prints_effective_toml(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GLASSES_SPEECH__VERBOSITY", "verbose")
    path = write(tmp_path, "[vision]\nthreads = 3\n")
    assert run_cli(monkeypatch, ["check-config", "--config", str(path), "--set", "camera.source=demo"]) == 0
    out = capsys.readouterr().out
    data = tomllib.loads(out)
    assert data["vision"]["threads"] == 3
    assert data["speech"]["verbosity"] == "verbose"
    assert data["camera"]["source"] == "demo"


def test_check_config_bad_key_exits_2_with_key_path(monkeypatch, capsys, tmp_path):
    path = write(tmp_path, '[speech]\nvocie = "x"\n')
    assert run_cli(monkeypatch, ["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "speech.vocie: unknown key; did you mean speech.voice?" in err


BAD_VALUES = [
    ("[speech]\nrate = nan\n", "speech.rate: nan is not a finite number"),
    ("[camera]\nfps = nan\n", "camera.fps: nan is not a finite number"),
    ("[button]\nhold_time = inf\n", "button.hold_time: inf is not a finite number"),
    ("[camera]\nwidth = 100000000000000000000\n", "camera.width: 100000000000000000000 is above the maximum 7680"),
    ("[vision]\nmax_faces = 1000000000\n", "vision.max_faces: 1000000000 is above the maximum 32"),
    ('[app]\nstate_dir = "/tmp/a\\u0000b"\n', "app.state_dir: '/tmp/a\\x00b' contains a NUL byte"),
    ('[speech]\nsink = "speaker"\n', "speech.sink: audio sink 'speaker' is not valid"),
    ('[offload]\nenabled = true\nurl = "https://"\ntoken = "t"\n', "offload.url 'https://' names no host"),
    ('[offload]\nenabled = true\nurl = "https://10.0.0.2:99999"\ntoken = "t"\n', "offload.url 'https://10.0.0.2:99999': Port out of range"),
    ('[offload]\nenabled = true\nurl = "https://10.0.0.2:8443"\ntoken_file = "/nonexistent/token"\n',
     "offload.token_file /nonexistent/token: cannot read (No such file or directory)"),
    ('[offload]\nenabled = true\nurl = "https://10.0.0.2:8443"\ntoken = "t"\nca_file = "/nonexistent/ca.pem"\n',
     "offload.ca_file /nonexistent/ca.pem: cannot load"),
    ("[camera]\nwidth = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("[camera]\nwidth = " + "[" * 150 + "1" + "]" * 150 + "\n", "camera.width: expected an integer, got [[[[["),
]


@pytest.mark.parametrize("text, message", BAD_VALUES, ids=[m.split(" ")[0].split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_VALUES)])
def test_check_config_refuses_what_run_would_in_one_line(monkeypatch, capsys, tmp_path, text, message):
    """Each of these used to pass check-config and then stop `run` (nan rate, a token file that is not
    there, a bad sink), make it misbehave (1e20-pixel frames, a billion faces, a URL with no host, NUL in
    a path) or print a 3,000-line RecursionError: now one line naming the key, exit 2."""
    assert run_cli(monkeypatch, ["check-config", "--config", str(write(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert len(err) < 300


def test_env_and_flag_numbers_must_be_finite_too():
    with pytest.raises(ConfigError, match=r"GLASSES_SPEECH__VOLUME: speech\.volume: nan is not a finite number"):
        load_config(env={"GLASSES_SPEECH__VOLUME": "nan"})
    with pytest.raises(ConfigError, match=r"--set: light\.day_lux: inf is not a finite number"):
        load_config(env={}, overrides={"light.day_lux": "inf"})


def test_offload_token_file_is_read_when_offload_is_enabled(tmp_path):
    token = tmp_path / "token"
    settings = {"offload.enabled": "true", "offload.url": "https://10.0.0.2:8443", "offload.token_file": str(token)}
    token.write_text("\n")
    with pytest.raises(ConfigError, match=rf"offload\.token_file {token}: is empty"):
        load_config(env={}, overrides=settings)
    token.write_text("secret-token\n")
    assert load_config(env={}, overrides=settings).offload.bearer == "secret-token"
    assert load_config(env={}, overrides={**settings, "offload.enabled": "false", "offload.token_file": "/nonexistent"}).offload.enabled is False
