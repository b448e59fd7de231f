"""m-AlpacaEval builder (thin shell; the logic lives in ``xl_suite.builders``).

Use ``xl_suite.load_dataset("m-alpacaeval-de", source=FOLDER)`` or ``MAlpacaEval(config_name=..., source=...)``.
"""

from xl_suite.builders import _CITATION, _HOMEPAGE, _LICENSE_BENCHMARK, MAlpacaEval, XlSuiteConfig  # noqa: F401
