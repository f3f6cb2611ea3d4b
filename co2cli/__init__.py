"""co2cli: find when actions happen in untrimmed videos with CO2-Net.

Pipeline, one module per stage: video -> flow -> i3d -> features -> co2net -> localize -> writers.
"""

__version__ = "0.1.0"

from co2cli.errors import Co2Error

__all__ = ["Co2Error", "__version__"]
