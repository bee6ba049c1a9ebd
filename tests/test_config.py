"""One validated config model: unknown keys and bad values fail naming the key."""

import pytest

from pipeline.config import ConfigError, load_config


def test_defaults_validate():
    cfg = load_config()
    assert cfg.filter.method == "pf-optimal" and cfg.filter.resample_threshold == 0.5


def test_unknown_key_named():
    with pytest.raises(ConfigError, match="unknown key 'filter.particle'"):
        load_config(overrides=["filter.particle=3"])


def test_bad_value_named():
    with pytest.raises(ConfigError, match="filter.method"):
        load_config(overrides=["filter.method=pf"])
    with pytest.raises(ConfigError, match="filter.particles"):
        load_config(overrides=["filter.particles=0"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["filter.particles"])


def test_shorthands_and_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("guidance: sda\nmodel: kde\nfilter: {particles: 20}\n")
    cfg = load_config(p, ["guidance.gamma=0.5"])
    assert cfg.guidance.method == "sda" and cfg.guidance.gamma == 0.5 and cfg.model.kind == "kde"
    assert cfg.filter.particles == 20


def test_typo_in_yaml_section(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("filtre: {particles: 20}\n")
    with pytest.raises(ConfigError, match="unknown key 'filtre'"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_misspelt_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError, match=r"unknown key 'filter.particls'.*did you mean 'filter.particles'"):
        load_config(None, ["filter.particls=3"])


def test_fingerprint_ignores_what_does_not_change_the_filter_run():
    from pipeline.run import fingerprint
    base = fingerprint(load_config())
    assert fingerprint(load_config(overrides=["smoother.samples=7", "run.micro_batch=3"])) == base
    assert fingerprint(load_config(overrides=["filter.particles=7"])) != base
