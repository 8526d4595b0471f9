"""Fixtures for the mock-universe tests: one Simulator per suite variant, built once per session."""

from __future__ import annotations

import dataclasses

import pytest

from astrofm.sims.generate import Simulator
from astrofm.sims.suite import MissingConfig, SuiteConfig, load_suite


@pytest.fixture(scope="session")
def simulator() -> Simulator:
    """The reference suite."""
    return Simulator(load_suite("observed"), seed=7)


@pytest.fixture(scope="session")
def truth(simulator: Simulator) -> dict:
    """Noiseless truth of 48 reference objects."""
    return simulator.truth(0, 48)


@pytest.fixture(scope="session")
def quiet_simulator() -> Simulator:
    """The reference universe with 1/1000 of the noise, strong lines and every modality present."""
    suite = load_suite("observed")
    suite = dataclasses.replace(
        suite, name="quiet",
        observing=dataclasses.replace(suite.observing, noise_scale=1e-3),
        lines=dataclasses.replace(suite.lines, emission_line_scale=3.0),
        missing_fraction=MissingConfig(spectrum=0.0, photometry=0.0, image=0.0))
    return Simulator(suite, seed=11)


def suite_with(**sections) -> SuiteConfig:
    """The reference suite with some sections replaced."""
    return dataclasses.replace(load_suite("observed"), **sections)
