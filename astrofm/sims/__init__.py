"""The mock universe: galaxies with known truth, observed as spectra, photometry and images.

`generate_mock(MockConfig(...))` writes a sharded dataset from a suite of physics knobs
(`configs/mock/*.yaml`, see `astrofm.sims.suite`). Importing this package loads no galsim, speclite
or astropy; they are imported when objects are generated.
"""

from astrofm.sims.generate import MockConfig, generate_mock
from astrofm.sims.suite import SuiteConfig, SuiteError, list_suites, load_suite

__all__ = ["MockConfig", "SuiteConfig", "SuiteError", "generate_mock", "list_suites", "load_suite"]
